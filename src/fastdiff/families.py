"""The facts of each model family, in one place: its diffusers pipeline classes, adapter, base repo, tiny VAE.

A preset names its family (`Preset.family`); everything fastdiff needs to know about that family is here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffusers import (
    Flux2KleinPipeline,
    FluxImg2ImgPipeline,
    FluxPipeline,
    QwenImageImg2ImgPipeline,
    QwenImagePipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
)

from .adapters import (
    Flux2KleinAdapter,
    FluxAdapter,
    ModelAdapter,
    QwenImageAdapter,
    StableDiffusionAdapter,
    StableDiffusionXLAdapter,
)
from .adapters.base import clip_truncation, unet_img2img_arguments
from .adapters.flux import flux_img2img_arguments, t5_truncation
from .adapters.flux2 import qwen_truncation
from .adapters.qwenimage import qwen_vl_truncation
from .errors import FastDiffError, did_you_mean
from .presets import FLUX2_KLEIN_4B_REPO, FLUX_SCHNELL_REPO, QWEN_IMAGE_REPO, SD15_REPO, SD_TURBO_REPO, SDXL_BASE_REPO

__all__ = ["FAMILIES", "FamilySpec", "family"]


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
    # guidance_scale is the pipeline's `true_cfg_scale` (CFG on a transformer: two passes a step); QwenImage's own
    # `guidance_scale` is for guidance-distilled transformers
    true_cfg: bool = False
    img2img_arguments: Callable[..., dict[str, Any]] = unet_img2img_arguments  # its img2img call's schedule, size
    warn_if_truncated: Callable[[Any, str, int | None], None] = clip_truncation  # (pipe, prompt, max_sequence_length)

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
        """The family's text-to-image (or image-to-image) pipeline over `pipe`'s own modules, shared, not copied;
        None for img2img where diffusers has none. Built as the `AutoPipelineFor*.from_pipe` methods build it:
        `DiffusionPipeline.from_pipe` would cast every shared module to one dtype (float32 unless told), and the
        auto mappings lack some families (SANA-Sprint)."""
        cls = self.img2img if img2img else self.pipeline
        if cls is None:
            return None
        accepted = inspect.signature(cls.__init__).parameters
        arguments = {**dict(pipe.config), **pipe.components}  # the config's flags, then the modules themselves
        return cls(**{name: value for name, value in arguments.items() if name in accepted})

    def accepts(self, pipe: object) -> bool:
        """True for a text-to-image or image-to-image pipeline of this family (not ControlNet, inpaint…)."""
        return isinstance(pipe, self.pipelines)


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
    ),
    "qwenimage": FamilySpec(
        "qwenimage",
        QwenImagePipeline,
        QwenImageImg2ImgPipeline,
        QwenImageAdapter(),
        QWEN_IMAGE_REPO,
        None,  # no diffusers AutoencoderTiny for its latents: optimize="max" keeps the VAE
        denoiser="transformer",
        true_cfg=True,
        img2img_arguments=flux_img2img_arguments,  # the same schedule: at least one step for any strength
        warn_if_truncated=qwen_vl_truncation,
    ),
}


def family(name: str) -> FamilySpec:
    """The family called `name` ("sd1", "flux", "qwenimage", …); register a new one by adding it to `FAMILIES`."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise FastDiffError(f"no model family {name!r}" + did_you_mean(name, FAMILIES)) from None
