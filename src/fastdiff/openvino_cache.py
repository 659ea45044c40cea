"""OpenVINO models converted once per (weights, input shapes), kept on disk, compiled per precision.

`compiled_model` returns the model this process holds already for the key and precision, else compiles the IR
the disk cache holds (`$FASTDIFF_CACHE/openvino/<key>/model.xml`, default `~/.cache/fastdiff/openvino`), else
converts with `openvino.convert_model` at the example's static shapes, saves the IR and compiles it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import queue
import shutil
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from importlib.metadata import version as package_version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._quiet import silenced
from .openvino_int8 import compress_weights, quantize_fully

__all__ = ["WEIGHT_FORMATS", "compiled_model", "conversions", "openvino_usable"]

# Besides f32: NNCF's int8 weights, or int8 weights and activations (`openvino_int8`).
WEIGHT_FORMATS = ("int8", "int8-full")
# Part of every key: changed when the conversion makes another model, so IRs saved before are converted again.
_REVISION = "3"
_counts: Counter[str] = Counter(conversions=0, cache_loads=0)
_lock = threading.Lock()
_live: weakref.WeakValueDictionary[str, Shared] = weakref.WeakValueDictionary()


class Shared:
    """A compiled model shared by every wrapper of the same weights, shapes and precision, with a pool of infer
    requests (`infer` is thread-safe)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def infer(self, inputs: list[Any]) -> list[torch.Tensor]:
        """The model's outputs for `inputs` (numpy arrays, read in place), as torch tensors of their own."""
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.model.create_infer_request()
        try:
            outputs = request.infer(inputs, share_inputs=True, share_outputs=False)
            return [torch.from_numpy(outputs[i]) for i in range(len(outputs))]
        finally:
            self._idle.put(request)


def openvino_usable() -> bool:
    """True when OpenVINO is installed (a dependency of fastdiff, absent only where its wheel does not install)."""
    return find_spec("openvino") is not None


def conversions() -> dict[str, int]:
    """How many models this process converted, and how many it compiled from the disk cache."""
    with _lock:
        return dict(_counts)


@functools.cache
def _core() -> Any:
    import openvino as ov

    return ov.Core()


def _compile(model: Any, precision: str) -> Any:
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": precision}
    return _core().compile_model(model, "CPU", config)


def _key(weights_key: str, module: nn.Module, example: Mapping[str, torch.Tensor], weights: str | None) -> str:
    """The IR's name on disk: the weights' name, the module classes (a swapped class traces another graph), the
    input shapes and dtypes, the weight format and the software versions."""
    import openvino as ov

    packages = ("diffusers", "transformers", *(("nncf",) if weights else ()))
    classes = ",".join(sorted({type(m).__qualname__ for m in module.modules()}))
    inputs = ";".join(f"{n}:{tuple(t.shape)}:{t.dtype}" for n, t in example.items())
    versions = [ov.__version__, torch.__version__, *(package_version(p) for p in packages)]
    parts = [weights_key, classes, inputs, f"weights={weights}", _REVISION, *versions]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def compiled_model(
    module: nn.Module,
    weights_key: str,
    call: Callable[..., tuple[torch.Tensor, ...]],
    example: Mapping[str, torch.Tensor],
    *,
    precision: str | None,
    weights: str | None = None,
) -> tuple[Shared, bool]:
    """`call` (tensors in, a tuple out, computed with `module`'s weights) compiled for `example`'s names and shapes in
    `precision` (None: OpenVINO's default) and weight format `weights`, with whether it was converted now."""
    key = _key(weights_key, module, example, weights)
    precision = precision or _core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    live = f"{key}:{precision}:{torch.get_num_threads()}"
    with _lock:
        held = _live.get(live)
    if held is not None:
        return held, False
    root = os.environ.get("FASTDIFF_CACHE")
    xml = (Path(root) if root else Path.home() / ".cache" / "fastdiff") / "openvino" / key / "model.xml"
    model = None
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        with contextlib.suppress(RuntimeError):  # a truncated or foreign IR: convert again and overwrite it
            model = _compile(str(xml), precision)  # the weights memory-mapped from the IR
    if converted := model is None:
        with silenced("tracing"):  # tracing's notes on diffusers' code (and NNCF's calibration runs)
            _convert(module, call, example, weights, xml.parent)
        # Compiled from the saved IR, as every later cache hit is: saving transforms the graph (constant folding),
        # and an in-memory model compiled as converted can differ from it in the last bit of a pixel.
        model = _compile(str(xml), precision)
    shared = Shared(model)
    with _lock:
        _counts["conversions" if converted else "cache_loads"] += 1
        _live[live] = shared
    return shared, converted


def _convert(
    module: nn.Module,
    call: Callable[..., tuple[torch.Tensor, ...]],
    example: Mapping[str, torch.Tensor],
    weights: str | None,
    folder: Path,
) -> None:
    """Save the IR of `call` at the example's static shapes, in `weights`' format, to `folder`."""
    import openvino as ov

    traced = nn.Module()  # `call` as a module holding `module`: its weights are shared with the IR, not copied
    traced.inner, traced.forward = module, call
    with torch.no_grad():
        model = ov.convert_model(traced, example_input=tuple(example.values()), share_weights=True)
    for port, name in zip(model.inputs, example, strict=True):
        port.get_tensor().set_names({name})
    # The converter leaves batch and spatial sizes dynamic; the CPU plugin plans memory and picks kernels once for
    # static ones (the SDXL UNet at 256²: 1.40 against 1.52 s per call). The trace is valid at its shapes only.
    model.reshape({name: ov.PartialShape(list(t.shape)) for name, t in example.items()})
    if weights == "int8":
        model = compress_weights(model)
    elif weights == "int8-full":
        model = quantize_fully(model, example)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.part")  # written as serialized: no in-memory copy
    partial.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, partial / "model.xml", compress_to_fp16=False)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
