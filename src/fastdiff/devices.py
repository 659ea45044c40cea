"""Device and dtype resolution: "auto" means cuda, else mps, else cpu; float16 on accelerators, float32 on CPU."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .errors import FastDiffError

__all__ = ["DTYPES", "resolve_device", "resolve_dtype", "synchronizer"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:1", "mps" or a torch.device into an available torch.device."""
    if isinstance(device, torch.device):
        resolved = device
    elif not isinstance(device, str):
        raise FastDiffError(f"device must be a str or torch.device, not {type(device).__name__}; e.g. device='cpu'")
    elif device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
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


def synchronizer(device: torch.device) -> Callable[[], float]:
    """A clock that first waits for queued device work, so that stage timings are real (not launch times)."""

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter()

    return clock
