"""Qwen-Image (a Qwen2.5-VL text encoder behind a chat template, an MMDiT over packed 2×2 latent patches, a causal
3-D VAE whose latents are normalised per channel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from ..errors import warn
from .base import Embeddings, image_latents

__all__ = ["QwenImageAdapter", "qwen_vl_truncation"]

MAX_SEQUENCE_LENGTH = 512  # QwenImagePipeline.__call__'s default, which the cards keep
DEFAULT_NEGATIVE_PROMPT = " "  # the negative prompt the Qwen-Image card recommends when there is none


class QwenImageAdapter:
    """Adapter for `QwenImagePipeline` / `QwenImageImg2ImgPipeline`. Guidance is the pipeline's true CFG: negative
    embeddings only when it runs (`FamilySpec.true_cfg`)."""

    def encode(
        self,
        pipe: Any,
        prompt: str,
        negative_prompt: str | None,
        *,
        guidance: bool,
        device: torch.device,
        max_sequence_length: int | None = None,
    ) -> Embeddings:
        """`encode_prompt` for one image, as the pipeline calls it, with each prompt's attention mask: a prompt keeps
        its own token count, and prompts of different lengths are padded into one batch (the pipeline drops a
        mask of ones again, as it does for one prompt)."""
        length = max_sequence_length or MAX_SEQUENCE_LENGTH

        def one(text: str) -> tuple[torch.Tensor, torch.Tensor]:
            embeds, mask = pipe.encode_prompt(text, device=device, num_images_per_prompt=1, max_sequence_length=length)
            return embeds, torch.ones(
                embeds.shape[:2], dtype=torch.long, device=embeds.device
            ) if mask is None else mask

        embeds, mask = one(prompt)  # (1, L, 3584), (1, L) for the real model
        if not guidance:
            return {"prompt_embeds": embeds, "prompt_embeds_mask": mask}
        negative, negative_mask = one(DEFAULT_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)
        return {
            "prompt_embeds": embeds,
            "prompt_embeds_mask": mask,
            "negative_prompt_embeds": negative,
            "negative_prompt_embeds_mask": negative_mask,
        }

    @torch.no_grad()
    def encode_image(
        self, pipe: Any, images: Sequence[Image.Image], generators: Sequence[torch.Generator], dtype: torch.dtype
    ) -> torch.Tensor:
        """As `QwenImageImg2ImgPipeline._encode_vae_image`: the VAE sample normalised per channel, its one frame
        taken out (B, 16, H/8, W/8); the img2img pipeline takes these latents as `image=` and packs them itself."""
        latents = image_latents(pipe, images, generators, dtype)  # (B, 16, 1, H/8, W/8)
        mean, inverse_std = _latent_statistics(pipe.vae, latents)
        normalised: torch.Tensor = (latents - mean) * inverse_std
        return normalised[:, :, 0].to(dtype)

    @torch.no_grad()
    def decode(
        self, pipe: Any, latents: torch.Tensor, *, height: int | None = None, width: int | None = None
    ) -> list[Image.Image]:
        """Unpack (B, H/16 · W/16, 64) to one frame (B, 16, 1, H/8, W/8), undo the per-channel normalisation,
        decode: QwenImagePipeline's `output_type="pil"` path."""
        if height is None or width is None:
            raise TypeError("QwenImageAdapter.decode needs the image's height= and width= to unpack the latents")
        vae = pipe.vae
        latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor).to(vae.dtype)
        mean, inverse_std = _latent_statistics(vae, latents)
        image = vae.decode(latents / inverse_std + mean, return_dict=False)[0][:, :, 0]  # (B, 3, H, W)
        images: list[Image.Image] = pipe.image_processor.postprocess(image, output_type="pil")
        return images


def _latent_statistics(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's per-channel latent mean and 1 / std, shaped (1, C, 1, 1, 1) on `like`'s device and dtype, computed
    as the pipelines compute them."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, inverse_std


def qwen_vl_truncation(pipe: Any, prompt: str, max_sequence_length: int | None) -> None:
    """Warn when the prompt's embedding, which keeps the tokens after the chat template's system part, is cut at
    `max_sequence_length`."""
    limit = max_sequence_length or MAX_SEQUENCE_LENGTH
    template, dropped = pipe.prompt_template_encode, pipe.prompt_template_encode_start_idx

    def tokens(text: str) -> int:
        ids: list[int] = pipe.tokenizer(template.format(text), truncation=False).input_ids
        return len(ids) - int(dropped)

    closing = tokens("")  # the template's tokens after the prompt ("<|im_end|>", "<|im_start|>assistant", …)
    count = tokens(prompt) - closing
    if count > limit - closing:
        warn(
            f"the prompt is {count} Qwen2.5-VL tokens; this model reads only the first {limit - closing} "
            f"(max_sequence_length={limit}, less the chat template's {closing} closing tokens), the rest is cut. "
            "Shorten the prompt (put what matters first)."
        )
