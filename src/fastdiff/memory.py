"""Memory: a pipeline whose weights cannot fit the device is refused before diffusers reads them, with the fixes,
rather than OOM-killed halfway. The estimate comes from the safetensors headers (shapes and dtypes; no weights read).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable
from pathlib import Path

import psutil
import torch
from safetensors import SafetensorError, safe_open

from .errors import FastDiffError

__all__ = ["FREE_FRACTION", "available_memory", "check_fits", "pipeline_files", "weights_bytes"]

# The weights may take at most this share of the free memory; the rest is left for activations, latents and the
# runtime. Generous on purpose: this refuses what surely cannot fit, it does not predict the peak.
FREE_FRACTION = 0.9
GIB = 2**30


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device` (CUDA free memory, the OS's available RAM); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available) if device.type == "cpu" else None


def pipeline_files(folder: Path, *, variant: str | None, skip: Iterable[str] = ()) -> list[Path]:
    """The safetensors files diffusers reads from the diffusers folder `folder`: those of the modules its
    model_index.json names (but `skip`), each module's `variant` files where it has them."""
    files: list[Path] = []
    for name, value in json.loads((folder / "model_index.json").read_text()).items():
        if name.startswith("_") or not isinstance(value, list) or name in skip:
            continue
        found = sorted((folder / name).glob("*.safetensors"))
        chosen = [f for f in found if variant and f".{variant}" in f.name]
        # "model.safetensors", "model-00001-of-00002.safetensors": no variant between the stem and the suffix
        files += chosen or [f for f in found if f.name.count(".") == 1]
    return files


def weights_bytes(files: Iterable[Path], *, dtype: torch.dtype) -> int:
    """Bytes the floating tensors of the safetensors `files` take once loaded in `dtype`, from the headers alone
    (the other tensors are a few index buffers); an unreadable file counts nothing."""
    size = torch.empty((), dtype=dtype).element_size()
    total = 0
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as tensors:
                for key in tensors.keys():  # noqa: SIM118 (safe_open is not iterable)
                    tensor = tensors.get_slice(key)
                    if tensor.get_dtype().startswith(("F", "BF")):  # F16, BF16, F32, F64, F8_*
                        total += math.prod(tensor.get_shape()) * size
        except (SafetensorError, OSError):
            continue  # not estimated: the loader that reads it says what is wrong with it
    return total


def check_fits(
    *,
    what: str,
    needed: int,
    available: int | None,
    device: torch.device,
    dtype: torch.dtype,
    offload: bool = True,
    refused: Collection[torch.dtype] = (),
) -> FastDiffError | None:
    """The error refusing `what`, whose weights take `needed` bytes in `dtype`, when they exceed FREE_FRACTION of
    the `available` bytes of `device`; None when they fit or the free memory is unknown. `offload=False`: where
    model offload is not an option (the bench), it is not offered; `refused`: dtypes the model cannot run in."""
    if available is None or needed <= FREE_FRACTION * available:
        return None
    fixes = []
    halves = (torch.bfloat16,) if device.type == "cpu" else (torch.float16, torch.bfloat16)
    names = [f"'{str(half).removeprefix('torch.')}'" for half in halves if half not in refused]
    if dtype.itemsize == 4 and names:
        fixes.append(f"dtype={' or '.join(names)} (half: {needed / 2 / GIB:.1f} GiB)")
    if device.type == "cuda" and offload:
        fixes.append(
            "model offload (load the diffusers pipeline, call pipe.enable_model_cpu_offload() and pass it to "
            "FewStepGenerator.from_pipeline with optimize='none')"
        )
    fixes.append("another device with more free memory")
    return FastDiffError(
        f"{what}: its weights need about {needed / GIB:.1f} GiB in {str(dtype).removeprefix('torch.')} and "
        f"{device} has {available / GIB:.1f} GiB free (the weights may take {FREE_FRACTION:.0%}, the rest is for "
        f"activations); use {', or '.join(fixes)}"
    )
