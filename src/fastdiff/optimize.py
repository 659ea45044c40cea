"""Load-time speedups, applied: `apply_optimizations` does exactly what a `Recipe` says, on whatever device the
pipeline is, to fastdiff's own module copies, which share the weight tensors with the caller's pipeline and leave
it as it was.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from diffusers.models.upsampling import Upsample2D
from torch import nn
from torch.nn import functional as F

from .devices import cpu_bf16_pays, cpu_has_native_bf16
from .errors import FastDiffError
from .recipe import LEVELS, Optimizations, Recipe, decide_recipe

__all__ = [
    "LEVELS",
    "Optimizations",
    "Recipe",
    "apply_optimizations",
    "cpu_bf16_pays",
    "cpu_has_native_bf16",
    "decide_recipe",
]


def own_copy(module: nn.Module) -> nn.Module:
    """A new, uncompiled module tree whose Parameters are new objects over the same weight tensors: changing its
    structure, classes or dtypes (`Module.to` replaces a Parameter's `.data`) leaves `module` alone. (Hooks come
    along: transformers' text encoders collect their hidden states with them.)"""
    shared: dict[int, Any] = {
        id(p): nn.Parameter(p.detach(), requires_grad=p.requires_grad) for p in module.parameters()
    }
    shared |= {id(b): b for b in module.buffers()}  # `Module.to` replaces a buffer in the copy's own dict
    copied = copy.deepcopy(getattr(module, "_orig_mod", module), memo=shared)  # torch.compile's wrapper dropped
    for parent in copied.modules():  # and those inside (a compiled VAE decoder)
        for name, child in list(parent.named_children()):
            if hasattr(child, "_orig_mod"):
                setattr(parent, name, child._orig_mod)
    return copied


# Per output phase (row parity a, column parity b) the 2x2 taps are sums of the 3x3 ones: `_PHASE_ROWS[a]` maps 3 to 2.
_PHASE_ROWS = (((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)), ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)))  # fmt: skip


def _subpixel_upsample(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(interpolate(x, scale_factor=2))` for a 3x3 `conv` with padding 1, as a sub-pixel convolution (Shi et
    al. 2016): one 2x2 conv of the small input with 4x the output channels, 16 taps per input pixel instead of 36."""
    rows = torch.tensor(_PHASE_ROWS, dtype=conv.weight.dtype)
    taps = [torch.einsum("rk,oikl,sl->oirs", rows[a], conv.weight, rows[b]) for a in (0, 1) for b in (0, 1)]
    bias = None if conv.bias is None else conv.bias.repeat(4)
    height, width = x.shape[-2:]
    out = torch.unflatten(F.conv2d(x, torch.cat(taps), bias, padding=1), 1, (4, -1))  # (B, 4, C, H+1, W+1)
    phases = [out[:, 2 * a + b, :, a : a + height, b : b + width] for a in (0, 1) for b in (0, 1)]
    return F.pixel_shuffle(torch.stack(phases, dim=2).flatten(1, 2), 2)  # (B, C·4, H, W), C-major → (B, C, 2H, 2W)


class SubpixelUpsample2D(Upsample2D):
    """diffusers' `Upsample2D` whose trace, as OpenVINO converts it, is `_subpixel_upsample` (the taps folded into
    constants: SDXL's VAE decoder at 256² decoded 1.07x faster); eager calls run diffusers' own forward."""

    def forward(self, hidden_states: torch.Tensor, output_size: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        if output_size is not None or not torch.jit.is_tracing():  # type: ignore[attr-defined,no-untyped-call]
            return super().forward(hidden_states, output_size, *args, **kwargs)
        return _subpixel_upsample(hidden_states, self.conv)  # type: ignore[arg-type]


def _use_subpixel_upsampling(decoder: nn.Module) -> None:
    """Every `Upsample2D` of `decoder` (fastdiff's own copy) that is exactly nearest 2x then a 3x3 conv becomes a
    `SubpixelUpsample2D`."""
    for sub in decoder.modules():
        conv = getattr(sub, "conv", None)  # diffusers makes it with stride 1, no dilation, no groups
        exact = (
            type(sub) is Upsample2D
            and sub.norm is None
            and sub.interpolate
            and isinstance(conv, nn.Conv2d)  # not the ConvTranspose2d of `use_conv_transpose`
            and conv.kernel_size == (3, 3)
            and conv.padding == (1, 1)
        )
        if exact:
            sub.__class__ = SubpixelUpsample2D


def apply_optimizations(
    pipe: Any, recipe: Recipe, *, tiny_vae: Any = None, weights_keys: dict[str, str | None] | None = None
) -> Any:
    """A new pipeline over optimized copies of `pipe`'s modules, doing what `recipe` says; `tiny_vae`
    (fastdiff's own `AutoencoderTiny` copy) replaces the VAE and is moved to the pipeline's device.
    `weights_keys`: the modules' weights named for the OpenVINO engine's disk cache (absent: hashed)."""
    from .families import rebuild

    if not isinstance(recipe, Recipe):
        raise FastDiffError("apply_optimizations takes a Recipe: pass optimizations.recipe_for(device)")
    # The dtype each module computes in: the recipe's (or the loaded one; a tiny VAE runs as the denoiser), and
    # bfloat16 for an fp16 VAE when `bf16_vae` (it has fp32's range: no overflow, no fp32 upcast; diffusers #4325).
    dtype, names = recipe.dtype, ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
    targets = {name: dtype or getattr(pipe, name).dtype for name in names if getattr(pipe, name, None) is not None}
    denoiser = next(iter(targets))  # "unet", or FLUX's "transformer"
    targets["vae"] = dtype or (pipe.vae.dtype if tiny_vae is None else targets[denoiser])
    if recipe.bf16_vae and targets["vae"] == torch.float16:
        targets["vae"] = torch.bfloat16
    openvino = recipe.engine == "openvino"
    work = (recipe.channels_last, recipe.fuse_qkv, recipe.compile, tiny_vae is not None, openvino)
    if not any(work) and all(getattr(pipe, name).dtype == target for name, target in targets.items()):
        return pipe  # "none": the very pipeline, for bit-parity
    own: dict[str, Any] = {name: own_copy(getattr(pipe, name)) for name in targets if name != "vae" or tiny_vae is None}
    if tiny_vae is not None:
        own["vae"] = tiny_vae
    for name, module in own.items():
        # 2-D convolutions only: a video VAE's 5-D kernels (Qwen-Image's) have no channels_last layout
        two_d = name in ("unet", "vae") and all(p.dim() < 5 for p in module.parameters())
        nhwc = torch.channels_last if recipe.channels_last and two_d else None
        module.to(pipe._execution_device, targets[name], memory_format=nhwc)
    if recipe.fuse_qkv:  # where diffusers offers it: not Z-Image's transformer, the tiny VAE or Qwen-Image's VAE
        for module in (own[denoiser], own["vae"]):
            if hasattr(module, "fuse_qkv_projections"):
                module.fuse_qkv_projections()
    if openvino:
        from .openvino_engine import use_openvino

        _use_subpixel_upsampling(own["vae"].decoder)
        use_openvino(
            own, weights_keys=weights_keys, precision=recipe.openvino_precision, unet_weights=recipe.openvino_weights
        )
    if recipe.compile:
        options: dict[str, Any] = {"backend": recipe.compile_backend, "mode": recipe.compile_mode}
        if denoiser != "unet" and getattr(own[denoiser], "_repeated_blocks", None):
            # Regional compilation (diffusers' compile_repeated_blocks): one graph per block class, reused by every
            # block, so a cold start or a new size compiles a block, not the whole transformer (FLUX, Z-Image, ...).
            # The UNet keeps its whole-model graph with CUDA graphs, as measured (docs/performance.md).
            own[denoiser].compile_repeated_blocks(fullgraph=True, **options)
        else:
            own[denoiser] = torch.compile(own[denoiser], **options)
        own["vae"].decoder = torch.compile(own["vae"].decoder, **options)
    return rebuild(type(pipe), pipe, **own)
