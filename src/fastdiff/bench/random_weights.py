"""Random weights on the real architectures, which time like the real ones (their images are noise): parameters
built on the meta device, filled once by tiling one seeded random pool. With a `folder`, each module's weights are
written there once and memory-mapped, as `from_pretrained` maps a checkpoint: page cache the kernel can drop, so an
engine's compiled copy fits beside them as it does for a user."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from ..configs.tokenizer import byte_level_tokenizer
from ..errors import FastDiffError
from ..memory import available_memory, check_fits
from .architectures import TINY_VAE, Architecture, architecture

__all__ = [
    "NotEnoughMemory",
    "pipeline_from",
    "random_components",
    "random_pipeline",
    "random_tiny_vae",
    "weights_name",
]


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory, no init) and buffers real (position ids)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            meta = nn.Parameter(param.to("meta"), requires_grad=False)
            module._parameters[name] = meta

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def _materialize(modules: list[nn.Module], *, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Give every meta parameter real storage, filled by tiling one seeded N(0, 0.02²) pool (a copy, not a draw)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    pool = (torch.randn(1 << 20, generator=generator) * 0.02).to(device=device, dtype=dtype)
    offset = 0
    for module in modules:
        for sub in module.modules():
            for name, param in list(sub._parameters.items()):
                if param is None:
                    continue
                data = torch.empty(param.shape, device=device, dtype=dtype)
                _fill(data.view(-1), pool, offset)
                offset = (offset + 7919) % pool.numel()  # a new phase per tensor, so no two weights are equal
                sub._parameters[name] = nn.Parameter(data, requires_grad=False)
        module.to(device)  # buffers (CLIP position ids) were built real, on the CPU


def _fill(flat: torch.Tensor, pool: torch.Tensor, offset: int) -> None:
    """Copy `pool` from `offset` on over `flat`, then `pool` again as many times as it takes (copies, no draws)."""
    head = min(flat.numel(), pool.numel() - offset)
    flat[:head].copy_(pool[offset : offset + head])
    for chunk in torch.split(flat[head:], pool.numel()):
        chunk.copy_(pool[: chunk.numel()])


def weights_name(arch: Architecture, *, dtype: torch.dtype, seed: int = 0) -> str:
    """The name of `arch`'s random weights, which its configs, the dtype and the seed alone decide."""
    facts = json.dumps([arch.unet, arch.vae, arch.text_encoders, str(dtype), seed], sort_keys=True)
    return f"{arch.repo_id.replace('/', '--')}-{hashlib.sha256(facts.encode()).hexdigest()[:16]}"


def _memory_mapped(module: nn.Module, path: Path, *, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """`module`'s weights from `path` (memory-mapped on the CPU), written there first if it is missing."""
    from safetensors.torch import load_file, save_file

    if not path.is_file():
        _check_memory([module], device=device, dtype=dtype, repo_id=path.stem)
        _materialize([module], device=device, dtype=dtype, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        save_file({name: t.contiguous() for name, t in module.state_dict().items()}, str(partial))
        os.replace(partial, path)  # a killed writer leaves a .part file, never a truncated weights file
    module.load_state_dict(load_file(str(path), device=str(device)), strict=True, assign=True)
    module.requires_grad_(False).to(device)  # buffers left out of the state dict were built on the CPU


class NotEnoughMemory(FastDiffError):
    """The weights of an architecture do not fit in the memory left on the device."""


def _check_memory(modules: list[nn.Module], *, device: torch.device, dtype: torch.dtype, repo_id: str) -> None:
    """Refuse to materialize what cannot fit, rather than being killed by the OOM killer halfway."""
    need = sum(p.numel() for m in modules for p in m.parameters()) * torch.empty((), dtype=dtype).element_size()
    free = available_memory(device)
    refused = check_fits(what=repo_id, needed=need, available=free, device=device, dtype=dtype, offload=False)
    if refused is not None:
        raise NotEnoughMemory(str(refused))


def random_components(
    arch: Architecture, *, device: torch.device, dtype: torch.dtype, seed: int = 0, folder: Path | None = None
) -> dict[str, Any]:
    """The pipeline's modules with random weights (and code-made tokenizers), ready for `pipeline_from`; with
    `folder`, memory-mapped from files written there on first use (module docstring)."""
    with _parameters_on_meta():
        unet = UNet2DConditionModel.from_config(arch.unet)  # type: ignore[no-untyped-call]
        vae = AutoencoderKL.from_config(arch.vae)  # type: ignore[no-untyped-call]
        encoders: list[nn.Module] = [CLIPTextModel(CLIPTextConfig(**arch.text_encoders[0]))]
        if len(arch.text_encoders) > 1:
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**arch.text_encoders[1])))
    modules: list[nn.Module] = [unet, vae, *encoders]
    if folder is None:  # all of them in memory at once: refused before the first is filled
        _check_memory(modules, device=device, dtype=dtype, repo_id=arch.repo_id)
    for i, module in enumerate(modules):  # a seed per module: memory-mapped weights equal the in-memory ones
        if folder is None:
            _materialize([module], device=device, dtype=dtype, seed=seed + i)
        else:  # one module's weights in memory at a time while they are written
            path = Path(folder) / f"{weights_name(arch, dtype=dtype, seed=seed)}-{i}.safetensors"
            _memory_mapped(module, path, device=device, dtype=dtype, seed=seed + i)
    parts: dict[str, Any] = {"unet": unet.eval(), "vae": vae.eval()}
    for i, (encoder, pad) in enumerate(zip(encoders, arch.pad_tokens, strict=True)):
        suffix = "" if i == 0 else f"_{i + 1}"
        parts[f"text_encoder{suffix}"] = encoder.eval()
        parts[f"tokenizer{suffix}"] = byte_level_tokenizer(pad_token=pad)
    return parts


def random_tiny_vae(
    *, device: torch.device, dtype: torch.dtype, seed: int = 1, config: dict[str, Any] = TINY_VAE
) -> Any:
    """TAESD/TAESDXL's architecture (`AutoencoderTiny`) with random weights: what `optimize="max"` decodes with."""
    from diffusers import AutoencoderTiny

    with _parameters_on_meta():
        vae = AutoencoderTiny.from_config(config)  # type: ignore[no-untyped-call]
    _materialize([vae], device=device, dtype=dtype, seed=seed)
    return vae.eval()


def pipeline_from(arch: Architecture, components: dict[str, Any]) -> Any:
    """A diffusers pipeline of `arch` over existing modules, with the repo's own scheduler."""
    import diffusers

    scheduler_cls = getattr(diffusers, arch.scheduler["_class_name"])
    scheduler = scheduler_cls.from_config(arch.scheduler)
    # The repo's default size lives in the UNet config; shared SDXL modules take the size of the repo in use.
    components["unet"].register_to_config(sample_size=arch.unet["sample_size"])
    if arch.pipeline == "StableDiffusionXLPipeline":
        return StableDiffusionXLPipeline(**components, scheduler=scheduler, add_watermarker=False)  # type: ignore[no-untyped-call]
    return StableDiffusionPipeline(  # type: ignore[no-untyped-call]
        **components, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def random_pipeline(repo_id: str, *, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """The real architecture of `repo_id` with random weights on `device` (its images are noise)."""
    arch = architecture(repo_id)
    return pipeline_from(arch, random_components(arch, device=device, dtype=dtype, seed=seed))
