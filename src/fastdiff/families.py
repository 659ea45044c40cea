"""The facts of each model family, in one place: its diffusers pipeline classes, adapter, base repo, tiny VAE.

A preset names its family (`Preset.family`); everything fastdiff needs to know about that family is here.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import (
    Flux2KleinPipeline,
    FluxImg2ImgPipeline,
    FluxPipeline,
    QwenImageImg2ImgPipeline,
    QwenImagePipeline,
    SanaSprintImg2ImgPipeline,
    SanaSprintPipeline,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    ZImageImg2ImgPipeline,
    ZImagePipeline,
)

from .adapters import (
    Flux2KleinAdapter,
    FluxAdapter,
    ModelAdapter,
    QwenImageAdapter,
    SanaSprintAdapter,
    StableDiffusion3Adapter,
    StableDiffusionAdapter,
    StableDiffusionXLAdapter,
)
from .adapters.base import clip_truncation, unet_img2img_arguments
from .adapters.flux import flux_img2img_arguments, t5_truncation
from .adapters.flux2 import qwen_truncation
from .adapters.qwenimage import qwen_vl_truncation
from .adapters.sana_sprint import gemma_truncation, scm_step_arguments
from .adapters.sd3 import sd3_img2img_arguments, sd3_truncation
from .adapters.zimage import ZImageAdapter
from .errors import FastDiffError, did_you_mean
from .presets import (
    FLUX2_KLEIN_4B_REPO,
    FLUX_SCHNELL_REPO,
    QWEN_IMAGE_REPO,
    SANA_SPRINT_06B_REPO,
    SD15_REPO,
    SD35_LARGE_TURBO_REPO,
    SD_TURBO_REPO,
    SDXL_BASE_REPO,
    Z_IMAGE_TURBO_REPO,
)

__all__ = ["FAMILIES", "FamilySpec", "family", "rebuild"]


def rebuild(cls: Any, pipe: Any, **components: Any) -> Any:
    """A `cls` pipeline over `pipe`'s modules (shared, not copied) with `components` replaced, as the
    `AutoPipelineFor*.from_pipe` methods build it but for any class (their mappings lack SANA-Sprint), and without
    `DiffusionPipeline.from_pipe`'s cast of every shared module to one dtype (float32 unless told)."""
    accepted = inspect.signature(cls.__init__).parameters
    arguments = {**dict(pipe.config), **pipe.components, **components}  # the config's flags, then the modules
    built = cls(**{name: value for name, value in arguments.items() if name in accepted})
    built.register_to_config(_name_or_path=pipe.name_or_path)
    return built


@dataclass(frozen=True)
class FamilySpec:
    """One model family: what loads it, what runs it, and the repos its defaults come from."""

    name: str
    pipeline: Any  # the text-to-image pipeline class (also what single files load into)
    img2img: Any | None  # the image-to-image pipeline class over the same modules; None where diffusers has none
    adapter: ModelAdapter
    base_repo: str  # the repo whose architecture and scheduler config stand for the family (tiny/random models)
    tiny_vae_repo: str | None  # TAESD for the family's latent space (optimize="max"); None where there is none
    denoiser: str = "unet"  # the pipeline attribute holding the denoising network ("transformer" for FLUX)
    img2img_arguments: Callable[..., dict[str, Any]] = unet_img2img_arguments  # its img2img call's schedule, size
    warn_if_truncated: Callable[[Any, str, int | None], None] = clip_truncation  # (pipe, prompt, max_sequence_length)
    step_arguments: Callable[[int], dict[str, Any]] = lambda steps: {}  # the call's arguments a step count sets
    # the pipeline generates at the aspect-ratio bin nearest the size asked and resizes the image back to it
    resolution_binning: bool = False
    cfg_above: float = 1.0  # the guidance_scale above which its pipeline runs classifier-free guidance
    # guidance_scale is the pipeline's `true_cfg_scale` (CFG on a transformer: two passes a step); QwenImage's own
    # `guidance_scale` is for guidance-distilled transformers
    true_cfg: bool = False
    # what such a guidance does to a model distilled to run without it (the warning's words)
    guidance_effect: str = "doubles the UNet work and usually burns the image"
    refused_dtypes: Mapping[torch.dtype, str] = field(default_factory=dict, compare=False)  # dtype → why, and the fix
    fuse_qkv: bool = True  # diffusers' fused QKV computes the same network (the CUDA recipe's "auto" fuses it)

    def check_dtype(self, dtype: torch.dtype | None) -> None:
        """Refuse a dtype the family's models cannot compute in, saying why and what to use."""
        if dtype is not None and dtype in self.refused_dtypes:
            named = str(dtype).removeprefix("torch.")
            raise FastDiffError(f"{self.name} models cannot run in {named}: {self.refused_dtypes[dtype]}")

    def size_multiple(self, pipe: Any) -> int:
        """What image sides must be multiples of: the image processor's factor (FLUX's counts its 2×2 patches),
        times the pipeline's own `patch_size` where it keeps the patches apart (SD3: VAE 8 × patch 2)."""
        return int(pipe.image_processor.config.vae_scale_factor) * int(getattr(pipe, "patch_size", 1))

    def max_side(self, pipe: Any) -> int:
        """The longest image side: `MAX_SIDE`, or less where the denoiser's position embeddings end (SD3's
        `pos_embed_max_size` patches: 192 × 16 = 3072 px; diffusers refuses more only mid-call)."""
        from .validation import MAX_SIDE

        patches = getattr(getattr(pipe, self.denoiser).config, "pos_embed_max_size", None)
        return MAX_SIDE if patches is None else min(MAX_SIDE, patches * self.size_multiple(pipe))

    @functools.cached_property
    def default_strength(self) -> float | None:
        """The img2img pipeline's own default strength (0.3 for SDXL, 0.8 for SD), as diffusers would use it."""
        if self.img2img is None:
            return None
        return float(inspect.signature(self.img2img.__call__).parameters["strength"].default)

    @property
    def pipelines(self) -> tuple[Any, ...]:
        """The family's diffusers pipeline classes: text-to-image, then image-to-image where diffusers has one."""
        return (self.pipeline,) if self.img2img is None else (self.pipeline, self.img2img)

    def over(self, pipe: Any, *, img2img: bool = False) -> Any:
        """The family's text-to-image (or image-to-image) pipeline over `pipe`'s own modules (`rebuild`); None for
        img2img where diffusers has none."""
        cls = self.img2img if img2img else self.pipeline
        return None if cls is None else rebuild(cls, pipe)


_SD = StableDiffusionAdapter()
FAMILIES: dict[str, FamilySpec] = {
    "sd1": FamilySpec(
        "sd1", StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, _SD, SD15_REPO, "madebyollin/taesd"
    ),
    "sd2": FamilySpec(
        "sd2", StableDiffusionPipeline, StableDiffusionImg2ImgPipeline, _SD, SD_TURBO_REPO, "madebyollin/taesd"
    ),
    "sdxl": FamilySpec(
        "sdxl",
        StableDiffusionXLPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLAdapter(),
        SDXL_BASE_REPO,
        "madebyollin/taesdxl",
    ),
    "flux": FamilySpec(
        "flux",
        FluxPipeline,
        FluxImg2ImgPipeline,
        FluxAdapter(),
        FLUX_SCHNELL_REPO,
        "madebyollin/taef1",
        denoiser="transformer",
        img2img_arguments=flux_img2img_arguments,
        warn_if_truncated=t5_truncation,
        guidance_effect="is ignored by its transformer",  # no guidance embedder; FluxPipeline's CFG is true_cfg_scale
    ),
    "zimage": FamilySpec(
        "zimage",
        ZImagePipeline,
        ZImageImg2ImgPipeline,
        ZImageAdapter(),
        Z_IMAGE_TURBO_REPO,
        "madebyollin/taef1",  # its VAE is FLUX.1's
        denoiser="transformer",
        img2img_arguments=flux_img2img_arguments,  # as FLUX's: at least one step for any strength, the input's size
        warn_if_truncated=functools.partial(qwen_truncation, enable_thinking=True),
        cfg_above=0.0,
        guidance_effect="runs classifier-free guidance: twice the transformer work, and usually a burnt image",
        refused_dtypes={
            torch.float16: "their activations overflow it, giving NaN (black) images (Tongyi-MAI/Z-Image#14); use "
            "bfloat16 (dtype='bfloat16', precision='bf16') or float32",
        },
    ),
    # No img2img (the pipeline's image= is reference editing) and no tiny VAE: its latent path reads the VAE's
    # batch-norm statistics, which an AutoencoderTiny lacks.
    "flux2": FamilySpec(
        "flux2",
        Flux2KleinPipeline,
        None,
        Flux2KleinAdapter(),
        FLUX2_KLEIN_4B_REPO,
        None,
        denoiser="transformer",
        warn_if_truncated=qwen_truncation,
        guidance_effect="is ignored by its transformer",  # the repo's is_distilled turns CFG off
    ),
    "sd3": FamilySpec(
        "sd3",
        StableDiffusion3Pipeline,
        StableDiffusion3Img2ImgPipeline,
        StableDiffusion3Adapter(),
        SD35_LARGE_TURBO_REPO,
        "madebyollin/taesd3",
        denoiser="transformer",
        img2img_arguments=sd3_img2img_arguments,
        warn_if_truncated=sd3_truncation,
        guidance_effect="runs classifier-free guidance: twice the transformer work, and usually a burnt image",
        fuse_qkv=False,  # diffusers' FusedJointAttnProcessor2_0 skips SD 3.5's RMS QK-norm: another image
    ),
    "qwenimage": FamilySpec(
        "qwenimage",
        QwenImagePipeline,
        QwenImageImg2ImgPipeline,
        QwenImageAdapter(),
        QWEN_IMAGE_REPO,
        None,  # no diffusers AutoencoderTiny for its latents: optimize="max" keeps the VAE
        denoiser="transformer",
        img2img_arguments=flux_img2img_arguments,  # the same schedule: at least one step for any strength
        warn_if_truncated=qwen_vl_truncation,
        true_cfg=True,
        guidance_effect="runs true CFG: twice the transformer work, and usually a burnt image",
        refused_dtypes={
            torch.float16: "its activations overflow it, giving NaN (black) images (ComfyUI#10751); use bfloat16 "
            "as the card does (dtype='bfloat16', precision='bf16') or float32",
        },
    ),
    "sana-sprint": FamilySpec(
        "sana-sprint",
        SanaSprintPipeline,
        SanaSprintImg2ImgPipeline,
        SanaSprintAdapter(),
        SANA_SPRINT_06B_REPO,
        None,  # no tiny autoencoder exists for DC-AE's latents: optimize="max" keeps the VAE
        denoiser="transformer",
        img2img_arguments=flux_img2img_arguments,
        warn_if_truncated=gemma_truncation,
        step_arguments=scm_step_arguments,
        resolution_binning=True,
        cfg_above=math.inf,  # guidance_scale feeds the transformer's guidance embedder: one pass, never CFG
        refused_dtypes={
            torch.float16: "their Gemma-2 text encoder must stay in bfloat16 (diffusers' SANA-Sprint docs); use "
            "bfloat16 (dtype='bfloat16', precision='bf16') or float32",
        },
    ),
}


def family(name: str) -> FamilySpec:
    """The family called `name` (a key of `FAMILIES`: "sd1", "flux"…); register a new one by adding it there."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise FastDiffError(f"no model family {name!r}" + did_you_mean(name, FAMILIES)) from None
