"""Load-time speedups, applied: `apply_optimizations` does exactly what a `Recipe` says (what the levels and
`Optimizations` decide per device: `recipe`), on whatever device the pipeline is.

The optimized modules are fastdiff's own copies that share the weight tensors with the pipeline they came from:
a dtype or memory-format change gives the copies new tensors, so the caller's pipeline is left as it was.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

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


def _target_dtypes(pipe: Any, recipe: Recipe, vae: Any) -> dict[str, torch.dtype]:
    """The dtype each module computes in under `recipe`: its dtype (or the loaded one), and bfloat16 for an fp16
    VAE when `bf16_vae` (it has fp32's range: no overflow, no fp32 upcast; diffusers #4325)."""
    dtype = recipe.dtype
    names = [n for n in ("unet", "transformer", "text_encoder", "text_encoder_2") if getattr(pipe, n, None) is not None]
    targets = {name: dtype or getattr(pipe, name).dtype for name in names}
    targets["vae"] = dtype or (vae.dtype if vae is pipe.vae else targets[names[0]])  # a tiny VAE runs as the denoiser
    if recipe.bf16_vae and targets["vae"] == torch.float16:
        targets["vae"] = torch.bfloat16
    return targets


def apply_optimizations(
    pipe: Any, recipe: Recipe, *, tiny_vae: Any = None, weights_keys: dict[str, str | None] | None = None
) -> Any:
    """A new pipeline over optimized copies of `pipe`'s modules, doing what `recipe` says; `tiny_vae`
    (fastdiff's own `AutoencoderTiny` copy) replaces the VAE and is moved to the pipeline's device.
    `weights_keys`: the modules' weights named for the OpenVINO engine's disk cache (absent: hashed)."""
    from diffusers import AutoencoderTiny, AutoPipelineForText2Image

    if not isinstance(recipe, Recipe):
        raise FastDiffError("apply_optimizations takes a Recipe: pass optimizations.recipe_for(device)")
    targets = _target_dtypes(pipe, recipe, pipe.vae if tiny_vae is None else tiny_vae)
    openvino = recipe.engine == "openvino"
    work = (recipe.channels_last, recipe.fuse_qkv, recipe.compile, tiny_vae is not None, openvino)
    if not any(work) and all(getattr(pipe, name).dtype == dtype for name, dtype in targets.items()):
        return pipe  # "none": the very pipeline, for bit-parity
    own: dict[str, Any] = {name: own_copy(getattr(pipe, name)) for name in targets if name != "vae" or tiny_vae is None}
    if tiny_vae is not None:
        own["vae"] = tiny_vae
    for name, module in own.items():
        nhwc = recipe.channels_last and name in ("unet", "vae")
        convert_own_copy(module, dtype=targets[name], channels_last=nhwc, device=pipe._execution_device)
    denoiser = next(iter(targets))  # "unet", or FLUX's "transformer"
    if recipe.fuse_qkv:
        own[denoiser].fuse_qkv_projections()
        if not isinstance(own["vae"], AutoencoderTiny):  # the tiny VAE has no attention
            own["vae"].fuse_qkv_projections()
    if openvino:
        from .openvino_engine import use_openvino

        use_openvino(
            own,
            weights_keys=weights_keys or {},
            precision=recipe.openvino_precision,
            subpixel=True,
            unet_weights=recipe.openvino_weights,
        )
    if recipe.compile:
        kwargs: dict[str, Any] = {"backend": recipe.compile_backend, "fullgraph": False}
        if recipe.compile_mode:
            kwargs["mode"] = recipe.compile_mode
        own[denoiser] = torch.compile(own[denoiser], **kwargs)
        own["vae"].decoder = torch.compile(own["vae"].decoder, **kwargs)
    return AutoPipelineForText2Image.from_pipe(pipe, **own)
