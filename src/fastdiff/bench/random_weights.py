"""Random weights on the real architectures, which time like the real ones (their images are noise): parameters
built on the meta device, filled once by tiling one seeded random pool. With a `folder`, each module's weights are
written there once and memory-mapped, as `from_pretrained` maps a checkpoint: page cache the kernel can drop, so an
engine's compiled copy fits beside them as it does for a user."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from torch import nn

from ..configs.tokenizer import byte_level_tokenizer, word_level_tokenizer
from ..errors import FastDiffError
from ..memory import available_memory, check_fits
from .architectures import TINY_VAE, Architecture, architecture

__all__ = [
    "NotEnoughMemory",
    "meta_modules",
    "parameter_shapes",
    "pipeline_from",
    "random_components",
    "random_pipeline",
    "random_tiny_vae",
    "weights_name",
]


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory, no init) and buffers real (position ids); a
    parameter tied to one already on meta (T5's token embedding) stays that one."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
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
    filled: dict[int, nn.Parameter] = {}  # one tensor for a parameter two modules share (T5's token embedding)
    for module in modules:
        for sub in module.modules():
            for name, param in list(sub._parameters.items()):
                if param is None:
                    continue
                if id(param) not in filled:
                    data = torch.empty(param.shape, device=device, dtype=dtype)
                    _fill(data.view(-1), pool, offset)
                    offset = (offset + 7919) % pool.numel()  # a new phase per tensor, so no two weights are equal
                    filled[id(param)] = nn.Parameter(data, requires_grad=False)
                sub._parameters[name] = filled[id(param)]
        module.to(device)  # buffers (CLIP position ids, RoPE frequencies) were built real, on the CPU


def _fill(flat: torch.Tensor, pool: torch.Tensor, offset: int) -> None:
    """Copy `pool` from `offset` on over `flat`, then `pool` again as many times as it takes (copies, no draws)."""
    head = min(flat.numel(), pool.numel() - offset)
    flat[:head].copy_(pool[offset : offset + head])
    for chunk in torch.split(flat[head:], pool.numel()):
        chunk.copy_(pool[: chunk.numel()])


def weights_name(arch: Architecture, *, dtype: torch.dtype, seed: int = 0) -> str:
    """The name of `arch`'s random weights, which its configs, the dtype and the seed alone decide."""
    facts = json.dumps([arch.modules, str(dtype), seed], sort_keys=True)
    return f"{arch.repo_id.replace('/', '--')}-{hashlib.sha256(facts.encode()).hexdigest()[:16]}"


def _memory_mapped(module: nn.Module, path: Path, *, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """`module`'s weights from `path` (memory-mapped on the CPU), written there first if it is missing."""
    from safetensors.torch import load_file, save_file

    aliases = _aliases(module)
    if not path.is_file():
        _check_memory([module], device=device, dtype=dtype, repo_id=path.stem)
        _materialize([module], device=device, dtype=dtype, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        state = {name: t.contiguous() for name, t in module.state_dict().items() if name not in aliases}
        save_file(state, str(partial))  # a tied tensor once: safetensors refuses aliases
        os.replace(partial, path)  # a killed writer leaves a .part file, never a truncated weights file
    state = load_file(str(path), device=str(device))
    state |= {alias: state[name] for alias, name in aliases.items()}  # tied again, to the same mapped pages
    module.load_state_dict(state, strict=True, assign=True)
    module.requires_grad_(False).to(device)  # buffers left out of the state dict were built on the CPU


def _aliases(module: nn.Module) -> dict[str, str]:
    """Each later name of a parameter registered under two names (T5's token embedding), to its first name."""
    first: dict[int, str] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        first.setdefault(id(param), name)
    return {name: first[id(p)] for name, p in module.named_parameters(remove_duplicate=False) if first[id(p)] != name}


class NotEnoughMemory(FastDiffError):
    """The weights of an architecture do not fit in the memory left on the device."""


def _check_memory(modules: list[nn.Module], *, device: torch.device, dtype: torch.dtype, repo_id: str) -> None:
    """Refuse to materialize what cannot fit, rather than being killed by the OOM killer halfway."""
    need = sum(p.numel() for m in modules for p in m.parameters()) * dtype.itemsize
    free = available_memory(device)
    refused = check_fits(what=repo_id, needed=need, available=free, device=device, dtype=dtype, offload=False)
    if refused is not None:
        raise NotEnoughMemory(str(refused))


def _module(library: str, cls_name: str, config: dict[str, Any]) -> nn.Module:
    """A module from its config by its library's public API: diffusers' `from_config`, transformers' `Class(config)`."""
    if library == "diffusers":
        model: nn.Module = getattr(diffusers, cls_name).from_config(config)
    else:
        cls = getattr(transformers, cls_name)
        model = cls(cls.config_class.from_dict(config))
    return model


def parameter_shapes(modules: dict[str, Any]) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Each module's parameter names and shapes: two architectures with equal ones can share weights (SDXL Turbo's
    and SDXL base's, which differ in their default size)."""
    return {
        name: [(key, tuple(p.shape)) for key, p in module.named_parameters()]
        for name, module in modules.items()
        if isinstance(module, nn.Module)
    }


def meta_modules(arch: Architecture) -> dict[str, nn.Module]:
    """`arch`'s modules with their parameters on the meta device: shapes and counts, no memory."""
    with _parameters_on_meta():
        return {name: _module(*spec) for name, spec in arch.modules.items()}


def random_components(
    arch: Architecture, *, device: torch.device, dtype: torch.dtype, seed: int = 0, folder: Path | None = None
) -> dict[str, Any]:
    """The pipeline's modules with random weights (and code-made tokenizers), ready for `pipeline_from`; with
    `folder`, memory-mapped from files written there on first use (module docstring)."""
    modules = meta_modules(arch)
    if folder is None:  # all of them in memory at once: refused before the first is filled
        _check_memory(list(modules.values()), device=device, dtype=dtype, repo_id=arch.repo_id)
    for i, (name, module) in enumerate(modules.items()):  # a seed per module: memory-mapped weights equal in-memory
        if folder is None:
            _materialize([module], device=device, dtype=dtype, seed=seed + i)
        else:  # one module's weights in memory at a time while they are written
            path = Path(folder) / f"{weights_name(arch, dtype=dtype, seed=seed)}-{name}.safetensors"
            _memory_mapped(module, path, device=device, dtype=dtype, seed=seed + i)
        module.eval()
    # Tokenizers made in code (`fastdiff.configs.tokenizer`): CLIP's byte-level one, else one word a token.
    tokenizers = {
        name: byte_level_tokenizer(pad_token=pad) if cls.startswith("CLIP") else word_level_tokenizer()
        for name, (cls, pad) in arch.tokenizers.items()
    }
    return {**modules, **tokenizers}


def random_tiny_vae(
    *, device: torch.device, dtype: torch.dtype, seed: int = 1, config: dict[str, Any] = TINY_VAE
) -> Any:
    """TAESD/TAESDXL's architecture (`AutoencoderTiny`) with random weights: what `optimize="max"` decodes with."""
    with _parameters_on_meta():
        vae = _module("diffusers", "AutoencoderTiny", config)
    _materialize([vae], device=device, dtype=dtype, seed=seed)
    return vae.eval()


def pipeline_from(arch: Architecture, components: dict[str, Any]) -> Any:
    """A diffusers pipeline of `arch` over existing modules, with the repo's own scheduler; the components not built
    (SD's safety checker and feature extractor) are None, and no safety checker or watermark is asked for."""
    # The repo's default size lives in the denoiser's config; shared SDXL modules take the size of the repo in use.
    if "sample_size" in arch.config(arch.denoiser):
        components[arch.denoiser].register_to_config(sample_size=arch.config(arch.denoiser)["sample_size"])
    cls = getattr(diffusers, arch.pipeline)
    given = {**arch.flags, "requires_safety_checker": False, "add_watermarker": False, **components}
    given["scheduler"] = getattr(diffusers, arch.scheduler["_class_name"]).from_config(arch.scheduler)
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return cls(**{p.name: given.get(p.name) for p in parameters if p.name in given or p.default is p.empty})


def random_pipeline(repo_id: str, *, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """The real architecture of `repo_id` with random weights on `device` (its images are noise)."""
    arch = architecture(repo_id)
    return pipeline_from(arch, random_components(arch, device=device, dtype=dtype, seed=seed))
