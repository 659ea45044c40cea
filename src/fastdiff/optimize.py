"""Load-time speedups: `optimize="none" | "default" | "max"` or an `Optimizations` for fine control.

"none" is bit-parity with diffusers. "default" takes every speedup whose image stays within a tested tolerance
of "none": the prompt-embedding cache everywhere; on the CPU the oneDNN kernels of `cpu_kernels` (NHWC convs
with packed weights, oneDNN Linear, cross-attention keys/values reused for a repeated prompt); on CUDA
channels_last, fused QKV, a bf16 VAE instead of the fp32 upcast and torch.compile with CUDA graphs. "max" also
swaps the VAE decoder for the tiny autoencoder (TAESD/TAESDXL), which trades fine detail for most of the decode
time. Measured gains and costs: docs/performance.md.

The optimized modules are fastdiff's own copies that share the weight tensors with the pipeline they came from:
a dtype or memory-format change makes new tensors in the copies, so the caller's pipeline is left as it was.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .cpu_kernels import use_cpu_kernels
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


Auto = Literal["auto"]


@dataclass(frozen=True)
class Optimizations:
    """What `from_preset`/`from_pipeline` do to a pipeline at load time; `Optimizations.preset(level)` builds one.

    "auto" means: where it was measured to pay, which `resolved(device)` turns into True or False.
    `compute_dtype`: "auto" runs in bfloat16 on CPUs with native bf16 when no dtype was asked for; or a dtype.
    `cpu_kernels`: on the CPU, oneDNN Linear, NHWC convs with packed weights, reused cross-attention K/V.
    `channels_last`, `fuse_qkv`: NHWC weights and one QKV projection ("auto": on CUDA; on the CPU
    `cpu_kernels` runs convs NHWC already, and diffusers' fused QKV measured slower there and keeps a copy).
    `bf16_vae`: decode SDXL in bfloat16 on CUDA instead of diffusers' fp32 upcast of the fp16 VAE.
    `compile`: torch.compile the UNet and the VAE decoder ("auto": on CUDA, where `compile_mode` None means
    "reduce-overhead", i.e. CUDA graphs); the first call at each new shape compiles, so call
    `gen.warmup(height=, width=, batch=)` first.
    `tiny_vae`: None, "auto" (the family's TAESD from the hub), a hub id, a local folder or an `AutoencoderTiny`.
    """

    compute_dtype: Auto | torch.dtype | None = None
    cpu_kernels: bool = False
    channels_last: bool | Auto = False
    fuse_qkv: bool | Auto = False
    bf16_vae: bool = False
    compile: bool | Auto = False
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
            base = cls(
                cpu_kernels=True,
                channels_last="auto",
                fuse_qkv="auto",
                bf16_vae=True,
                compile="auto",  # CPU: inductor took 65 s to compile the SDXL decoder on 2 cores and gained 7 %
                tiny_vae="auto" if level == "max" else None,
            )
        try:
            return dataclasses.replace(base, **overrides)
        except TypeError as err:
            raise FastDiffError(f"{err}; see the fields of fastdiff.Optimizations") from None

    def resolved(self, device: torch.device) -> Optimizations:
        """These optimizations with every "auto" switch decided for `device`."""
        cuda = device.type == "cuda"
        compile = cuda if self.compile == "auto" else bool(self.compile)
        mode = self.compile_mode if self.compile_mode or not (compile and cuda) else "reduce-overhead"
        return dataclasses.replace(
            self,
            cpu_kernels=self.cpu_kernels and device.type == "cpu",
            channels_last=cuda if self.channels_last == "auto" else bool(self.channels_last),
            fuse_qkv=cuda if self.fuse_qkv == "auto" else bool(self.fuse_qkv),
            compile=compile,
            compile_mode=mode,
        )


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
        return _own_copy(instance)  # over the same weights; moved and cast in apply_optimizations, never the caller's
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


@contextmanager
def _new_parameters() -> Iterator[None]:
    """Make `module.to(...)` put new Parameter objects in the module instead of swapping `.data` of shared ones."""
    before = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        yield
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(before)


def _own_copy(module: nn.Module) -> nn.Module:
    """A new module tree over the same weight tensors: changing its structure or classes leaves `module` alone.
    (Hooks come along: transformers' text encoders collect their hidden states with forward hooks.)"""
    shared: dict[int, Any] = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo=shared)


def apply_optimizations(
    pipe: Any, opts: Optimizations, *, family: str, dtype: torch.dtype, cache_dir: str | Path | None = None
) -> Any:
    """A new pipeline over optimized copies of `pipe`'s modules (`opts` resolved for the pipeline's device)."""
    from diffusers import AutoencoderTiny, AutoPipelineForText2Image

    device = torch.device(pipe.device)
    names = [n for n in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None]
    cuda_fp16_vae = opts.bf16_vae and device.type == "cuda" and pipe.vae.dtype == torch.float16
    work = (opts.cpu_kernels, opts.channels_last, opts.fuse_qkv, opts.compile, opts.tiny_vae is not None)
    if not any(work) and not cuda_fp16_vae and all(getattr(pipe, n).dtype == dtype for n in names):
        return pipe  # "none": the very pipeline, for bit-parity
    own: dict[str, Any] = {}
    if opts.tiny_vae is not None:
        own["vae"] = _tiny_vae(opts.tiny_vae, family, dtype, cache_dir)
    own |= {name: _own_copy(getattr(pipe, name)) for name in names if name not in own}
    with _new_parameters():
        own["vae"].to(device)
        for module in own.values():
            if module.dtype != dtype:
                module.to(dtype=dtype)
        if cuda_fp16_vae and own["vae"].dtype == torch.float16:
            own["vae"].to(dtype=torch.bfloat16)  # bf16 has fp32's range: no overflow, no fp32 upcast (diffusers #4325)
        if opts.channels_last:
            own["unet"].to(memory_format=torch.channels_last)
            own["vae"].to(memory_format=torch.channels_last)
    if opts.fuse_qkv:
        own["unet"].fuse_qkv_projections()
        if not isinstance(own["vae"], AutoencoderTiny):  # the tiny VAE has no attention
            own["vae"].fuse_qkv_projections()
    if opts.cpu_kernels:
        for module in own.values():
            use_cpu_kernels(module)
    if opts.compile:
        kwargs: dict[str, Any] = {"backend": opts.compile_backend, "fullgraph": False}
        if opts.compile_mode:
            kwargs["mode"] = opts.compile_mode
        own["unet"] = torch.compile(own["unet"], **kwargs)
        own["vae"].decoder = torch.compile(own["vae"].decoder, **kwargs)
    return AutoPipelineForText2Image.from_pipe(pipe, **own)
