"""Where the time and the FLOPs go: `ModuleProbe` hooks each stage's modules (call counts, synchronized call
times, first-call inputs); FLOPs are counted once per module on those inputs with torch's `FlopCounterMode` and
multiplied by its calls (every call of a module in one generation has the same shapes)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from .._quiet import silenced
from ..denoising import STAGES
from ..openvino_engine import torch_forwards
from .timing import Clock

__all__ = [
    "DEVICE_PEAK_TFLOPS",
    "FlopCache",
    "ModuleProbe",
    "count_flops",
    "cpu_matmul_tflops",
    "denoiser",
    "device_peak_tflops",
    "stage_modules",
]

# Dense fp16/bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s (no sparsity). Looked up by substring of
# torch.cuda.get_device_name(), first match wins: more specific names come first.
DEVICE_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),  # same compute as H100 SXM, more and faster memory
    ("A100", 312.0),
    ("A10G", 125.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
)

FlopCache = dict[tuple[str, int, Any], int]  # (module class, parameter count, input shapes) -> FLOPs


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of the matmuls, convolutions and attention that `fn()` runs, counted on the
    eager modules: a compiled module under FlopCounterMode would compile again (and warn about global hooks)."""
    set_stance: Any = getattr(torch.compiler, "set_stance", None)
    eager = set_stance("force_eager") if set_stance is not None else contextlib.nullcontext()
    counter = FlopCounterMode(display=False)
    with silenced("global-hooks"), eager, torch.no_grad(), torch_forwards(), counter:
        fn()
    return int(counter.get_total_flops())


def device_peak_tflops(device_name: str, dtype: torch.dtype) -> float | None:
    """The dense half-precision peak of a known GPU; None on CPUs, unknown GPUs and float32 (TF32 or not)."""
    if dtype not in (torch.float16, torch.bfloat16):
        return None
    return next((peak for key, peak in DEVICE_PEAK_TFLOPS if key.lower() in device_name.lower()), None)


def cpu_matmul_tflops(dtype: torch.dtype, *, size: int = 2048) -> float:
    """What this CPU multiplies at, TFLOP/s (the median `size`² matmul on torch's threads, by torch.utils.benchmark):
    a CPU has no datasheet peak, so a row's TFLOP/s is compared with this measured one."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    timer = Timer("torch.mm(a, b)", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return 2 * size**3 / timer.blocked_autorange(min_run_time=1.0).median / 1e12


def stage_modules(pipe: Any) -> dict[str, list[nn.Module]]:
    """The modules that do each stage's work in a diffusers text-to-image pipeline (UNet or transformer)."""
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    encoders = [m for name in names if (m := getattr(pipe, name, None)) is not None]
    vae = pipe.vae
    decode = [m for m in (getattr(vae, "post_quant_conv", None), vae.decoder) if m is not None]
    return {"encode": encoders, "denoise": [denoiser(pipe)], "decode": decode}


def denoiser(pipe: Any) -> nn.Module:
    """The pipeline's denoising network: its UNet or its transformer."""
    found: nn.Module = getattr(pipe, "unet", None) or pipe.transformer
    return found


@dataclass
class _Record:
    stage: str
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each forward call this run
    first_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None = None
    started: float = 0.0


class ModuleProbe:
    """Forward hooks on each stage's modules: call counts, synchronized call times and first-call inputs. A context
    manager around the runs (the hooks go on exit); `start_run()` before each run."""

    def __init__(self, stages: Mapping[str, Sequence[nn.Module]], clock: Clock) -> None:
        self.clock = clock
        self._modules = [(module, _Record(stage)) for stage, modules in stages.items() for module in modules]
        self._handles: list[RemovableHandle] = []
        self._recording = True  # from the start: warm-up calls give the first-call inputs

    def __enter__(self) -> ModuleProbe:
        for module, record in self._modules:
            before, after = functools.partial(self._before, record), functools.partial(self._after, record)
            self._handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            self._handles.append(module.register_forward_hook(after, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _before(self, record: _Record, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._recording:
            record.first_inputs = record.first_inputs or (args, kwargs)
            record.started = self.clock()

    def _after(self, record: _Record, *unused: Any) -> None:
        if self._recording:
            record.spans.append((record.started, self.clock()))

    def start_run(self) -> None:
        """Forget the calls of the previous run (first-call inputs are kept)."""
        for _, record in self._modules:
            record.spans.clear()
        self._recording = True

    def end_run(self) -> None:
        """Stop recording until the next `start_run()`: rows run interleaved share modules, and another row's
        calls must not count as this row's."""
        self._recording = False

    def _spans(self, stage: str) -> list[tuple[float, float]]:
        return [span for _, record in self._modules if record.stage == stage for span in record.spans]

    def calls(self, stage: str) -> int:
        """Forward calls of the stage's modules in this run (the UNet's calls for "denoise")."""
        return max((len(r.spans) for _, r in self._modules if r.stage == stage), default=0)

    def durations(self, stage: str) -> list[float]:
        """Synchronized duration of every forward call of the stage's modules in this run."""
        return [end - start for start, end in self._spans(stage)]

    def split(self, start: float, end: float) -> dict[str, float]:
        """Stage times of a run from module boundaries: encode ends after the last text encoder call, decode
        starts at the first VAE call, denoise is everything between (so the three add up to `end - start`)."""
        encoded = max((span[1] for span in self._spans("encode")), default=start)
        decoding = min((span[0] for span in self._spans("decode")), default=end)
        return {"encode": encoded - start, "denoise": decoding - encoded, "decode": end - decoding}

    def flops_by_stage(self, cache: FlopCache | None = None) -> dict[str, int]:
        """FLOPs of one run per stage: each module's first call counted on its real inputs, times its calls; after
        the probe's context (the re-run is not recorded). `cache` counts shared modules and shapes once."""
        cache = {} if cache is None else cache
        totals = dict.fromkeys(STAGES, 0)
        for module, record in self._modules:
            if record.first_inputs is None or not record.spans:
                continue
            args, kwargs = record.first_inputs
            key = (type(module).__qualname__, sum(p.numel() for p in module.parameters()), _signature((args, kwargs)))
            if key not in cache:
                cache[key] = count_flops(functools.partial(module, *args, **kwargs))
            totals[record.stage] += cache[key] * len(record.spans)
        return totals


def _signature(value: Any) -> Any:
    """A hashable description of call inputs: shapes and dtypes for tensors, values for plain data."""
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype), value.device.type)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _signature(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_signature(v) for v in value)
    return repr(value)
