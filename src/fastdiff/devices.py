"""Devices: "auto" means cuda, else mps, else cpu; float16 on accelerators, float32 on CPU; synchronized clocks;
whether this CPU computes bf16 faster than fp32."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from .errors import FastDiffError

__all__ = [
    "DTYPES",
    "bf16_pays_on",
    "cpu_bf16_pays",
    "cpu_count",
    "cpu_has_native_bf16",
    "make_clock",
    "offloaded",
    "resolve_device",
    "resolve_dtype",
    "synchronize",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def cpu_count() -> int:
    """The cores this process may run on (its affinity, which a container or `taskset` narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (avx512_bf16 or AMX), as OpenVINO's device capabilities say;
    False without OpenVINO. `cpu_bf16_pays` says whether it is also faster than fp32."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def bf16_pays_on(vendor: str, flags: set[str]) -> bool:
    """True when a CPU with `vendor` (cpuinfo's vendor_id) and `flags` computes bf16 faster than fp32: AMX
    (amx_bf16), or AMD's avx512_bf16 (Zen 4 on: a 4096² matmul at 655 GFLOP/s in bf16, 325 in f32). Intel's
    avx512_bf16 without AMX does not outrun its two fp32 FMA ports (the SDXL UNet: 1.55x as long in bf16)."""
    return "amx_bf16" in flags or ("avx512_bf16" in flags and vendor == "AuthenticAMD")


@functools.cache
def cpu_bf16_pays() -> bool:
    """`bf16_pays_on` this CPU, as torch reads its features (`torch.cpu.get_capabilities`; an AMD core by `sse4a`,
    an extension only AMD makes); with a torch too old to tell, native bf16."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # absent from older torch
    if capabilities is None:
        return cpu_has_native_bf16()
    flags = {name for name, value in capabilities().items() if value is True}
    vendor = "AuthenticAMD" if "sse4a" in flags else "GenuineIntel"
    return bf16_pays_on(vendor, flags) and cpu_has_native_bf16()


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:1", "mps" or a torch.device into an available torch.device."""
    if not isinstance(device, (str, torch.device)):
        raise FastDiffError(f"device must be a str or torch.device, not {type(device).__name__}; e.g. device='cpu'")
    if device == "auto":
        cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise FastDiffError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FastDiffError(f"device {device!r} asked for CUDA, which this torch cannot see; use device='auto'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise FastDiffError(f"device {device!r} asked for MPS, which is not available here; use device='auto'")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise FastDiffError(f"device type {resolved.type!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None → float16 on cuda/mps, float32 on cpu; names like "bf16" are accepted."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.float16
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise FastDiffError(f"dtype {dtype} is not supported; use float32, float16 or bfloat16")
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise FastDiffError(f"unknown dtype {dtype!r}; use 'float32', 'float16' or 'bfloat16'")


def synchronize(device: torch.device) -> None:
    """Wait until every kernel queued on `device` has finished (a no-op on the CPU, which runs eagerly)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def make_clock(
    device: torch.device,
    *,
    sync: Callable[[torch.device], None] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> Callable[[], float]:
    """A clock in seconds that first waits for queued device work (`sync`, default `synchronize`)."""

    def clock() -> float:
        (sync or synchronize)(device)  # looked up per read, so tests can count calls by patching the module
        return timer()

    return clock


def offloaded(pipe: Any) -> bool:
    """True when accelerate hooks move the pipeline's modules per call (`enable_model_cpu_offload` and kin)."""
    return any(hasattr(m, "_hf_hook") for m in pipe.components.values() if isinstance(m, torch.nn.Module))
