"""Load-time speedups: `optimize="none" | "default" | "max"` or an `Optimizations` for fine control.

A recipe is data, decided once: `Optimizations.resolved(device)` turns every "auto" switch into a yes or no for
that device, and `apply_optimizations` then does exactly what the resolved recipe says, on whatever device the
pipeline is (so the CUDA recipe can run, and be tested, on CPU tensors). "none" is bit-parity with diffusers.
"default" takes every speedup whose image stays within a tested tolerance of "none": the prompt-embedding cache
everywhere; on the CPU the OpenVINO engine (a dependency of fastdiff; bf16 where the CPU computes it faster than
fp32, f32 elsewhere), plain torch where OpenVINO cannot be imported; on CUDA channels_last, fused QKV,
a bf16 VAE instead of the fp32 upcast and torch.compile with CUDA graphs. "max" also swaps the VAE for the tiny
autoencoder (TAESD/TAESDXL). Measured gains and costs: docs/performance.md (every run:
docs/notes/performance-history.md).

The optimized modules are fastdiff's own copies that share the weight tensors with the pipeline they came from:
a dtype or memory-format change gives the copies new tensors, so the caller's pipeline is left as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .devices import cpu_bf16_pays, cpu_has_native_bf16
from .errors import FastDiffError, did_you_mean
from .openvino_cache import check_weight_format, nncf_usable, openvino_usable

__all__ = [
    "LEVELS",
    "Optimizations",
    "apply_optimizations",
    "cpu_bf16_pays",
    "cpu_has_native_bf16",
    "resolve_optimizations",
]

Level = Literal["none", "default", "max"]
LEVELS: tuple[Level, ...] = ("none", "default", "max")
Auto = Literal["auto"]
Engine = Literal["torch", "openvino", "auto"]
PRECISIONS = (None, "auto", "f32", "bf16")


@dataclass(frozen=True)
class Optimizations:
    """What `from_preset`/`from_pipeline` do to a pipeline at load time; `Optimizations.preset(level)` builds one.

    "auto" means: where it was measured to pay, which `resolved(device)` decides (`resolved_for` then names the
    device type; a resolved recipe is applied as it says on any device).
    `compute_dtype`: a dtype, None (keep the loaded one) or "auto" (bfloat16 on CPUs where it beats fp32,
    `cpu_bf16_pays`).
    `channels_last`, `fuse_qkv`: NHWC weights and one QKV projection ("auto": on CUDA; on the CPU the OpenVINO
    engine picks its own layouts, and diffusers' fused QKV measured slower there and keeps a copy).
    `bf16_vae`: an fp16 VAE becomes bfloat16, which has fp32's range, instead of diffusers' fp32 upcast ("auto":
    on CUDA).
    `compile`: torch.compile the UNet and the VAE decoder ("auto": on CUDA), `compile_mode` None there means
    "reduce-overhead" (CUDA graphs); each new shape compiles on its first call, so call `gen.warmup(...)` first.
    `tiny_vae`: None, "auto" (the family's TAESD, cache first), a hub id, a local folder or an `AutoencoderTiny`.
    `engine`: "torch", or "openvino" (CPU only: the UNet, text encoders and VAE decoder compiled by OpenVINO at
    static shapes, cached on disk; `openvino_engine`), "auto": OpenVINO on the CPU when it can be imported, else
    torch (the environment variable `FASTDIFF_CPU_ENGINE=torch` makes "auto" torch). `openvino_precision`: "auto"
    (bf16 where this CPU computes it faster than fp32, `cpu_bf16_pays`, else f32), "f32", "bf16", or None for
    OpenVINO's own default (bf16 wherever the CPU has avx512_bf16, even where slower: the bench's peer row).
    `openvino_weights`: None (the UNet's weights as they are), "int8": compressed by NNCF, weights only, or
    "int8-full": weights and activations quantized by NNCF, the UNet computing in int8 (calibrated on its
    first call's inputs); `pip install 'fastdiff[int8]'`, opt-ins with their own tolerances and speeds
    (docs/performance.md, `openvino_int8`); they need the OpenVINO engine.
    """

    compute_dtype: Auto | torch.dtype | None = None
    channels_last: bool | Auto = False
    fuse_qkv: bool | Auto = False
    bf16_vae: bool | Auto = False
    compile: bool | Auto = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    tiny_vae: Any = None
    embedding_cache_size: int = 32
    engine: Engine = "torch"
    openvino_precision: str | None = "auto"
    openvino_weights: str | None = None
    resolved_for: str | None = None

    @classmethod
    def preset(cls, level: str, **overrides: Any) -> Optimizations:
        """The optimizations of `level` ("none", "default", "max") with some fields overridden."""
        if level not in LEVELS:
            raise FastDiffError(f"unknown optimize level {level!r}" + did_you_mean(level, LEVELS))
        base = cls()
        if level != "none":
            base = cls(
                channels_last="auto",
                fuse_qkv="auto",
                bf16_vae="auto",
                compile="auto",  # CPU: inductor took 65 s to compile the SDXL decoder on 2 cores and gained 7 %
                tiny_vae="auto" if level == "max" else None,
                # CPU: OpenVINO where installed (2.0-2.3x plain diffusers, docs/notes/performance-history.md)
                engine="auto",
            )
        try:
            return dataclasses.replace(base, **overrides)
        except TypeError as err:
            raise FastDiffError(f"{err}; see the fields of fastdiff.Optimizations") from None

    @property
    def is_resolved(self) -> bool:
        """True once `resolved(device)` has decided every device-dependent switch."""
        return self.resolved_for is not None

    def resolved(self, device: torch.device) -> Optimizations:
        """These optimizations with every "auto" switch decided for `device` (a resolved recipe is returned as is)."""
        if self.is_resolved:
            return self
        cuda, cpu = device.type == "cuda", device.type == "cpu"

        def auto(value: bool | Auto, where: bool) -> bool:
            return where if value == "auto" else bool(value)

        compile = auto(self.compile, cuda)
        engine = self.engine
        if engine == "auto":  # FASTDIFF_CPU_ENGINE=torch keeps the torch engine process-wide (no conversions)
            wanted = os.environ.get("FASTDIFF_CPU_ENGINE", "auto")
            if wanted not in ("auto", "torch"):
                raise FastDiffError(f"FASTDIFF_CPU_ENGINE must be 'auto' or 'torch', not {wanted!r}")
            engine = "openvino" if cpu and wanted == "auto" and openvino_usable() else "torch"
        elif engine == "openvino" and not (cpu and openvino_usable()):
            where = "pip install openvino" if cpu else f"it runs on the CPU, not {device.type}"
            raise FastDiffError(f"engine='openvino' needs OpenVINO: {where}")
        if self.openvino_weights is not None:
            _check_openvino_weights(self.openvino_weights, engine)
        if self.openvino_precision not in PRECISIONS:
            raise FastDiffError(f"openvino_precision must be one of {PRECISIONS}, not {self.openvino_precision!r}")
        bf16 = cpu and cpu_bf16_pays()
        precision = self.openvino_precision
        if precision == "auto":
            precision = "bf16" if bf16 else "f32"
        dtype = self.compute_dtype
        if dtype == "auto":
            dtype = torch.bfloat16 if bf16 else None
        return dataclasses.replace(
            self,
            compute_dtype=dtype,
            channels_last=auto(self.channels_last, cuda),
            fuse_qkv=auto(self.fuse_qkv, cuda),
            bf16_vae=auto(self.bf16_vae, cuda),
            compile=compile,
            engine=engine,
            openvino_precision=precision,
            compile_mode=self.compile_mode or ("reduce-overhead" if compile and cuda else None),
            resolved_for=device.type,
        )

    @property
    def changes_modules(self) -> bool:
        """True when applying this (resolved) recipe may replace, cast, swap or compile modules."""
        switches = (self.channels_last, self.fuse_qkv, self.bf16_vae, self.compile)
        changed = self.tiny_vae is not None or self.compute_dtype is not None or self.engine == "openvino"
        return any(s is True for s in switches) or changed

    @property
    def cuda_graphs(self) -> bool:
        """True when compiled with CUDA graphs, which record on the second call at a shape (two warm-up runs)."""
        return bool(self.compile) and self.compile_mode is not None and "reduce-overhead" in self.compile_mode


def _check_openvino_weights(weights: str, engine: str) -> None:
    check_weight_format(weights)
    if engine != "openvino":
        raise FastDiffError(
            f"openvino_weights={weights!r} compresses the OpenVINO engine's UNet, and this recipe runs {engine}: "
            "use it on the CPU with OpenVINO installed (pip install openvino), without FASTDIFF_CPU_ENGINE=torch"
        )
    if not nncf_usable():
        raise FastDiffError(f"openvino_weights={weights!r} needs NNCF: pip install 'fastdiff[int8]'")


def resolve_optimizations(optimize: str | Optimizations) -> Optimizations:
    """`optimize=` as given to `from_preset`: a level name or an `Optimizations`."""
    if isinstance(optimize, Optimizations):
        return optimize
    if isinstance(optimize, str):
        return Optimizations.preset(optimize)
    raise FastDiffError(f"optimize must be 'none', 'default', 'max' or an Optimizations, not {optimize!r}")


def _cast(t: torch.Tensor, dtype: torch.dtype | None, channels_last: bool, device: torch.device | None) -> torch.Tensor:
    """`t` on `device`, in `dtype` (floating tensors only) and NHWC (4-D only), as `Module.to` makes it — or `t`."""
    out = t.detach()
    if device is not None and t.device != device:
        out = out.to(device)
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        out = out.to(dtype)
    if channels_last and t.dim() == 4:
        out = out.contiguous(memory_format=torch.channels_last)
    return t if out.device == t.device and out.dtype == t.dtype and out.data_ptr() == t.data_ptr() else out


def convert_own_copy(
    module: nn.Module,
    *,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    device: torch.device | None = None,
) -> None:
    """`module.to(device, dtype, memory_format)` for fastdiff's own module copy: changed tensors become new
    Parameters and buffers of the copy only, so the weights it shares with the caller are never written. (Not
    torch's process-wide `overwrite_module_params_on_conversion` flag, which other threads would see flipped.)"""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and (new := _cast(param, dtype, channels_last, device)) is not param:
                sub._parameters[name] = nn.Parameter(new, requires_grad=param.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and (new := _cast(buffer, dtype, channels_last, device)) is not buffer:
                sub._buffers[name] = new


def _strip_compiled(module: Any) -> Any:
    """`module` without torch.compile wrappers (`_orig_mod`), at the top and inside (a compiled VAE decoder).
    It changes `module` in place: only for fastdiff's own fresh copies."""
    module = getattr(module, "_orig_mod", module)
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if hasattr(child, "_orig_mod"):
                setattr(parent, name, child._orig_mod)
    return module


def own_copy(module: nn.Module) -> nn.Module:
    """A new, uncompiled module tree over the same weight tensors: changing its structure or classes leaves
    `module` alone. (Hooks come along: transformers' text encoders collect their hidden states with them.)"""
    shared: dict[int, Any] = {id(t): t for t in (*module.parameters(), *module.buffers())}
    copied: nn.Module = _strip_compiled(copy.deepcopy(module, memo=shared))
    return copied


def _target_dtypes(pipe: Any, opts: Optimizations, vae: Any) -> dict[str, torch.dtype]:
    """The dtype each module computes in under `opts`: the compute dtype (or the loaded one), and bfloat16 for an
    fp16 VAE when `bf16_vae` (it has fp32's range: no overflow, no fp32 upcast; diffusers #4325)."""
    dtype = opts.compute_dtype if isinstance(opts.compute_dtype, torch.dtype) else None
    names = [n for n in ("unet", "text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None]
    targets = {name: dtype or getattr(pipe, name).dtype for name in names}
    targets["vae"] = dtype or (vae.dtype if vae is pipe.vae else pipe.unet.dtype)  # a tiny VAE runs as the UNet
    if opts.bf16_vae and targets["vae"] == torch.float16:
        targets["vae"] = torch.bfloat16
    return targets


def apply_optimizations(
    pipe: Any, opts: Optimizations, *, tiny_vae: Any = None, weights_keys: dict[str, str | None] | None = None
) -> Any:
    """A new pipeline over optimized copies of `pipe`'s modules, doing what the resolved `opts` say; `tiny_vae`
    (fastdiff's own `AutoencoderTiny` copy) replaces the VAE and is moved to the pipeline's device.
    `weights_keys`: the modules' weights named for the OpenVINO engine's disk cache (absent: hashed)."""
    from diffusers import AutoencoderTiny, AutoPipelineForText2Image

    if not opts.is_resolved:
        raise FastDiffError("apply_optimizations needs a resolved recipe: pass opts.resolved(device)")
    targets = _target_dtypes(pipe, opts, pipe.vae if tiny_vae is None else tiny_vae)
    openvino = opts.engine == "openvino"
    work = (opts.channels_last, opts.fuse_qkv, opts.compile, tiny_vae is not None, openvino)
    if not any(work) and all(getattr(pipe, name).dtype == dtype for name, dtype in targets.items()):
        return pipe  # "none": the very pipeline, for bit-parity
    own: dict[str, Any] = {name: own_copy(getattr(pipe, name)) for name in targets if name != "vae" or tiny_vae is None}
    if tiny_vae is not None:
        own["vae"] = tiny_vae
    for name, module in own.items():
        nhwc = bool(opts.channels_last) and name in ("unet", "vae")
        convert_own_copy(module, dtype=targets[name], channels_last=nhwc, device=pipe._execution_device)
    if opts.fuse_qkv:
        own["unet"].fuse_qkv_projections()
        if not isinstance(own["vae"], AutoencoderTiny):  # the tiny VAE has no attention
            own["vae"].fuse_qkv_projections()
    if openvino:
        from .openvino_engine import use_openvino

        use_openvino(
            own,
            weights_keys=weights_keys or {},
            precision=opts.openvino_precision,
            subpixel=True,
            unet_weights=opts.openvino_weights,
        )
    if opts.compile:
        kwargs: dict[str, Any] = {"backend": opts.compile_backend, "fullgraph": False}
        if opts.compile_mode:
            kwargs["mode"] = opts.compile_mode
        own["unet"] = torch.compile(own["unet"], **kwargs)
        own["vae"].decoder = torch.compile(own["vae"].decoder, **kwargs)
    return AutoPipelineForText2Image.from_pipe(pipe, **own)
