"""Load-time speedups: `optimize="none" | "default" | "max"` or an `Optimizations` for fine control.

"none" is bit-parity with diffusers. "default" takes every speedup whose image stays within a tested tolerance
of "none" (channels_last, fused QKV, a bf16 VAE on GPUs instead of the fp32 upcast, torch.compile on CUDA, the
prompt-embedding cache). bf16 compute on the CPU is opt-in (`compute_dtype="auto"`): on the avx512_bf16 CPU
this was measured on (no AMX), eager bf16 SDXL was slower than fp32 and used more memory. "max" also swaps the
VAE decoder for the tiny autoencoder (TAESD/TAESDXL), which trades fine detail for most of the
decode time. docs/performance.md has the measured gain and cost of each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .errors import FastDiffError, did_you_mean

__all__ = ["LEVELS", "Optimizations", "cpu_has_native_bf16", "resolve_optimizations"]

Level = Literal["none", "default", "max"]
LEVELS: tuple[Level, ...] = ("none", "default", "max")
TINY_VAE_REPOS = {"sd1": "madebyollin/taesd", "sd2": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}


def cpu_has_native_bf16() -> bool:
    """True when oneDNN can run bf16 matmuls/convs natively (avx512_bf16 or AMX): then bf16 beats fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Optimizations:
    """What `from_preset`/`from_pipeline` do to a pipeline at load time; `Optimizations.preset(level)` builds one.

    `compute_dtype`: "auto" runs in bfloat16 on CPUs with native bf16 when no dtype was asked for; or a dtype.
    `bf16_vae`: decode SDXL in bfloat16 on CUDA instead of diffusers' fp32 upcast of the fp16 VAE.
    `compile`: torch.compile the UNet and the VAE decoder (`compile_mode="reduce-overhead"` adds CUDA graphs);
    the first call at each new shape compiles, so call `gen.warmup(height=, width=, batch=)` first.
    `tiny_vae`: None, "auto" (the family's TAESD from the hub), a hub id, a local folder or an `AutoencoderTiny`.
    """

    compute_dtype: Literal["auto"] | torch.dtype | None = None
    channels_last: bool = False
    fuse_qkv: bool = False
    bf16_vae: bool = False
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    tiny_vae: Any = None
    embedding_cache_size: int = 32

    @classmethod
    def preset(cls, level: str, **overrides: Any) -> Optimizations:
        """The optimizations of `level` ("none", "default", "max") with some fields overridden."""
        if level not in LEVELS:
            raise FastDiffError(f"unknown optimize level {level!r}" + did_you_mean(level, LEVELS))
        base = cls()
        if level != "none":
            cuda = torch.cuda.is_available()
            base = cls(
                channels_last=True,
                fuse_qkv=True,
                bf16_vae=True,
                compile=cuda,  # on CPU inductor's compile takes minutes on few cores and gains little (measured)
                compile_mode="reduce-overhead" if cuda else None,
                tiny_vae="auto" if level == "max" else None,
            )
        try:
            return dataclasses.replace(base, **overrides)
        except TypeError as err:
            raise FastDiffError(f"{err}; see the fields of fastdiff.Optimizations") from None


def resolve_optimizations(optimize: str | Optimizations) -> Optimizations:
    """`optimize=` as given to `from_preset`: a level name or an `Optimizations`."""
    if isinstance(optimize, Optimizations):
        return optimize
    if isinstance(optimize, str):
        return Optimizations.preset(optimize)
    raise FastDiffError(f"optimize must be 'none', 'default', 'max' or an Optimizations, not {optimize!r}")


def compute_dtype(opts: Optimizations, device: torch.device, loaded: torch.dtype, *, asked: bool) -> torch.dtype:
    """The dtype the pipeline should compute in once optimized."""
    if isinstance(opts.compute_dtype, torch.dtype):
        return opts.compute_dtype
    if opts.compute_dtype == "auto" and not asked and device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return loaded


def _tiny_vae(spec: Any, family: str, dtype: torch.dtype, cache_dir: str | Path | None) -> Any:
    from diffusers import AutoencoderTiny as _AutoencoderTiny

    AutoencoderTiny: Any = _AutoencoderTiny
    if isinstance(spec, _AutoencoderTiny):
        instance: Any = spec
        return instance.to(dtype)
    location = TINY_VAE_REPOS[family] if spec == "auto" else spec
    if not isinstance(location, (str, Path)):
        raise FastDiffError(f"tiny_vae must be 'auto', a hub id, a folder or an AutoencoderTiny, not {spec!r}")
    try:
        return AutoencoderTiny.from_pretrained(str(location), dtype=dtype, cache_dir=cache_dir)
    except OSError as err:
        raise FastDiffError(
            f"tiny VAE {str(location)!r} could not be loaded ({str(err).splitlines()[0][:120]}); pass a local "
            "folder or an AutoencoderTiny instance as Optimizations.preset('max', tiny_vae=...)"
        ) from None


def apply_optimizations(
    pipe: Any, opts: Optimizations, *, family: str, dtype: torch.dtype, cache_dir: str | Path | None = None
) -> Any:
    """Return `pipe` optimized in place (modules cast/fused/compiled); a tiny VAE gives a new pipeline object."""
    if opts.tiny_vae is not None:
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pipe(pipe, vae=_tiny_vae(opts.tiny_vae, family, dtype, cache_dir))
    if pipe.unet.dtype != dtype:
        pipe.to(dtype=dtype)
    device = torch.device(pipe.device)
    if opts.bf16_vae and device.type == "cuda" and pipe.vae.dtype == torch.float16:
        pipe.vae.to(dtype=torch.bfloat16)  # bf16 has fp32's range: no overflow, no fp32 upcast (diffusers #4325)
    if opts.fuse_qkv:
        from diffusers import AutoencoderKL

        pipe.fuse_qkv_projections(vae=isinstance(pipe.vae, AutoencoderKL))  # the tiny VAE has no attention
    if opts.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if opts.compile:
        kwargs: dict[str, Any] = {"backend": opts.compile_backend, "fullgraph": False}
        if opts.compile_mode:
            kwargs["mode"] = opts.compile_mode
        pipe.unet = torch.compile(pipe.unet, **kwargs)
        pipe.vae.decoder = torch.compile(pipe.vae.decoder, **kwargs)
    return pipe
