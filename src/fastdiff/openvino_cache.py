"""OpenVINO models converted once per (weights, input shapes), kept on disk, compiled per precision.

`compiled_model(module, call, example, ...)` is the one entry. It returns the compiled model this process holds
already for the same key and precision (two pipelines over the same weights share one), else compiles the IR the
disk cache holds for the key, else traces `call` (fastdiff's module copy: its torch weights are shared with the
converted model, not copied) with OpenVINO's PyTorch frontend at the example's static shapes, saves the IR and
compiles it. The key hashes the weights' name (`weights.WeightsIdentity.module_key`: the files they were loaded
from and the changes since, or a hash of the weights where that is unknown), the module classes, the input shapes
and dtypes, the weight format and the versions of OpenVINO, torch, diffusers and transformers (and NNCF for int8).
The cache is `$FASTDIFF_CACHE/openvino` (default `~/.cache/fastdiff/openvino`), one folder per key holding
`model.xml` and `model.bin` (f32 weights, or int8 ones with `weights="int8"` or `"int8-full"`, `openvino_int8`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import weakref
from collections.abc import Callable, Sequence
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._quiet import silenced
from .errors import FastDiffError
from .openvino_int8 import REVISIONS, compress_weights, nncf_usable, quantize_fully

__all__ = [
    "WEIGHT_FORMATS",
    "cache_dir",
    "check_weight_format",
    "compiled_model",
    "conversions",
    "nncf_usable",
    "openvino_usable",
]

_state = threading.local()
_counts = {"conversions": 0, "cache_loads": 0}
_lock = threading.Lock()
_live: weakref.WeakValueDictionary[str, Shared] = weakref.WeakValueDictionary()
_IR_FORMAT = "static-shapes"  # part of the key: IRs saved before inputs were made static convert again
# Weight formats an IR can be saved in besides f32 (`openvino_int8`): "int8", NNCF's per-output-channel int8
# weights with a zero point (optimum-intel's `--weight-format int8`), decompressed inside OpenVINO's kernels;
# "int8-full", weights and activations of the convolutions and linear layers in int8, calibrated.
WEIGHT_FORMATS = ("int8", "int8-full")


def check_weight_format(weights: str | None) -> None:
    """Raise unless `weights` is None (the weights as they are) or one of `WEIGHT_FORMATS`."""
    if weights is not None and weights not in WEIGHT_FORMATS:
        raise FastDiffError(f"openvino_weights must be None or one of {WEIGHT_FORMATS}, not {weights!r}")


class Shared:
    """A compiled model held by every wrapper that runs it: two pipelines over the same weights at the same shape
    and precision (the bench's fastdiff and openvino rows) hold one copy of the compiled weights.

    `infer` is safe to call from many threads: each call takes an idle infer request of its own (a compiled
    model's own `__call__` shares one request, which two threads would overwrite) and returns copies."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._idle: list[Any] = []
        self._requests = threading.Lock()

    def infer(self, inputs: list[Any]) -> list[torch.Tensor]:
        """The model's outputs for `inputs` (numpy arrays, read in place), as torch tensors of their own."""
        with self._requests:
            request = self._idle.pop() if self._idle else None
        if request is None:
            request = self.model.create_infer_request()
        try:
            outputs = request.infer(inputs, share_inputs=True, share_outputs=False)
            return [torch.from_numpy(outputs[i]) for i in range(len(outputs))]
        finally:
            with self._requests:
                self._idle.append(request)


def openvino_usable() -> bool:
    """True when `import openvino` works (a dependency of fastdiff; absent only where its wheel does not install)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def conversions() -> dict[str, int]:
    """How many models this process converted+compiled, and how many it loaded from the disk cache."""
    with _lock:
        return dict(_counts)


def cache_dir() -> Path:
    """Where compiled models are kept: `$FASTDIFF_CACHE/openvino`, else `~/.cache/fastdiff/openvino`."""
    root = os.environ.get("FASTDIFF_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "fastdiff") / "openvino"


def _core() -> Any:
    core = getattr(_state, "core", None)
    if core is None:
        import openvino as ov

        core = _state.core = ov.Core()
    return core


def _config(precision: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def effective_precision(precision: str | None) -> str:
    """The precision the CPU plugin computes in ("bf16", "f32", "f16"): `precision`, else its default (bf16 on
    CPUs with avx512_bf16 or AMX, even where f32 is faster)."""
    if precision is None:
        value = _core().get_property("CPU", "INFERENCE_PRECISION_HINT")  # an openvino.Type
        precision = str(value.get_type_name() if hasattr(value, "get_type_name") else value)
    names = {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}
    return names.get(precision.lower(), precision.lower())


def _key(
    weights_key: str, module: nn.Module, example: Sequence[torch.Tensor], names: Sequence[str], weights: str | None
) -> str:
    """The converted model's name on disk: the weights' name, the module classes (a swapped class traces another
    graph), the input shapes and dtypes, the weight format and the software versions (the IR holds the f32 graph,
    or int8 weights: the precision is chosen when it is compiled)."""
    import openvino as ov

    packages = ("diffusers", "transformers", *(("nncf",) if weights else ()))
    versions = [ov.__version__, torch.__version__, *(package_version(p) for p in packages)]
    classes = ",".join(sorted({type(m).__qualname__ for m in module.modules()}))
    inputs = ";".join(f"{n}:{tuple(t.shape)}:{t.dtype}" for n, t in zip(names, example, strict=True))
    # Absent for f32: the keys of f32 IRs stay as they were.
    compression = [f"weights={weights}", f"revision={REVISIONS[weights]}"] if weights else []
    parts = [weights_key, classes, inputs, _IR_FORMAT, *versions, *compression]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def compiled_model(
    module: nn.Module,
    weights_key: str,
    call: Callable[..., tuple[torch.Tensor, ...]],
    example: Sequence[torch.Tensor],
    names: Sequence[str],
    *,
    precision: str | None,
    use_cache: bool = True,
    weights: str | None = None,
    calibration: Sequence[Sequence[torch.Tensor]] = (),
) -> tuple[Shared, bool]:
    """`call(*example)` (tensors in, a tuple of tensors out, computed by `module`'s weights, named `weights_key`)
    as a compiled OpenVINO model for the example's shapes: the one this process holds already, else the disk
    cache's, else converted now (and cached). `weights="int8"` compresses the weights with NNCF first,
    `"int8-full"` quantizes weights and activations with ranges measured on the example and the `calibration`
    inputs (`WEIGHT_FORMATS`; the IR cached under the key was calibrated on the inputs of the call that converted
    it). Returned with whether it was converted now (False: held already, or read from the disk cache)."""
    check_weight_format(weights)
    key = _key(weights_key, module, example, names, weights)
    live = f"{key}:{effective_precision(precision)}:{torch.get_num_threads()}"
    with _lock:
        held = _live.get(live)
    if held is not None:
        return held, False
    model = _load(key, use_cache, precision)
    converted = model is None
    if model is None:
        samples = [example, *calibration]
        with silenced("tracing"):  # tracing's notes on diffusers' code (and NNCF's calibration runs)
            model = _convert_and_compile(key, module, call, samples, names, precision, use_cache, weights)
    shared = Shared(model)
    with _lock:
        _live[live] = shared
    return shared, converted


def _load(key: str, use_cache: bool, precision: str | None) -> Any:
    """The model converted under `key`, compiled from its IR (memory-mapped); None when there is none."""
    xml = cache_dir() / key / "model.xml"
    if not (use_cache and xml.is_file() and xml.with_suffix(".bin").is_file()):
        return None
    try:
        model = _core().compile_model(str(xml), "CPU", _config(precision))
    except RuntimeError:  # a truncated or foreign IR: convert again and overwrite it
        return None
    with _lock:
        _counts["cache_loads"] += 1
    return model


def _convert_and_compile(
    key: str,
    module: nn.Module,
    call: Callable[..., tuple[torch.Tensor, ...]],
    samples: Sequence[Sequence[torch.Tensor]],
    names: Sequence[str],
    precision: str | None,
    use_cache: bool,
    weights: str | None,
) -> Any:
    import openvino as ov

    example = samples[0]
    converted = _convert(_Traced(module, call), example)
    for port, name in zip(converted.inputs, names, strict=True):
        port.get_tensor().set_names({name})
    # The frontend leaves the batch and spatial dimensions dynamic; the CPU plugin plans memory and picks kernels
    # once for static ones (the SDXL UNet at 256²: 1.40 against 1.52 s per call, interleaved), as optimum-intel's
    # `reshape` does. The trace is only valid at its own shapes anyway (Python ints baked in).
    converted.reshape({name: ov.PartialShape(list(t.shape)) for name, t in zip(names, example, strict=True)})
    if weights == "int8":
        converted = compress_weights(converted)
    elif weights == "int8-full":
        converted = quantize_fully(converted, [[t.numpy() for t in sample] for sample in samples])
    if use_cache:  # the IR, written as it is serialized: no in-memory copy (an exported blob would be one)
        partial = cache_dir() / f"{key}.{os.getpid()}.part"
        partial.mkdir(parents=True, exist_ok=True)
        ov.save_model(converted, partial / "model.xml", compress_to_fp16=False)
        shutil.rmtree(cache_dir() / key, ignore_errors=True)
        os.replace(partial, cache_dir() / key)
    compiled = _core().compile_model(converted, "CPU", _config(precision))
    del converted  # the compiled model keeps what it needs of it
    with _lock:
        _counts["conversions"] += 1
    return compiled


def _convert(traced: nn.Module, example: Sequence[torch.Tensor]) -> Any:
    """OpenVINO's public converter, tracing `traced` at the example (its weights shared, not copied)."""
    import openvino as ov

    with torch.no_grad():
        return ov.convert_model(traced, example_input=tuple(example), share_weights=True)


class _Traced(nn.Module):
    """`call` as a module holding `module`, so tracing sees its weights as parameters (shared, not copied)."""

    def __init__(self, module: nn.Module, call: Callable[..., tuple[torch.Tensor, ...]]) -> None:
        super().__init__()
        self.inner = module
        self._call = call

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._call(*tensors)
