"""What the trainer feeds the UNets: the noise schedule, text conditioning and VAE latents of a batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import retrieve_latents

__all__ = ["Conditioning", "NoiseSchedule", "decode_latents", "encode_captions", "encode_images", "family_of"]


class NoiseSchedule:
    """ᾱ_t of the teacher's scheduler config (DDPM, Ho et al. 2020): x_t = α_t·x0 + σ_t·ε, α = √ᾱ, σ = √(1 − ᾱ)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        steps = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
        kind = config.get("beta_schedule", "linear")
        if kind == "scaled_linear":  # SD's schedule
            betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
        elif kind == "linear":
            betas = torch.linspace(start, end, steps, dtype=torch.float64)
        else:
            raise ValueError(f"beta_schedule {kind!r} is not supported by the distillation trainer")
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).float()  # (T,)
        self.num_train_timesteps = steps
        self.prediction_type = str(config.get("prediction_type", "epsilon"))

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α_t, σ_t), each (B,), on the device of `t`."""
        abar = self.alphas_cumprod.to(t.device)[t]
        return abar.sqrt(), (1 - abar).sqrt()

    def noise(
        self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, *, zero_terminal: bool = False
    ) -> torch.Tensor:
        """x_t; with `zero_terminal` the last timestep keeps σ·ε alone (α = 0): exactly the UNet input of a trailing
        Euler sampler at t = 999, σ_E·ε scaled by 1/√(σ_E² + 1) = √(1 − ᾱ)·ε."""
        alpha, sigma = self.alpha_sigma(t)
        if zero_terminal:
            alpha = torch.where(t == self.num_train_timesteps - 1, 0.0, alpha)
        return alpha.view(-1, 1, 1, 1) * x0 + sigma.view(-1, 1, 1, 1) * eps


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning of a batch: the UNet's `encoder_hidden_states` (B, L, D), a pooled (B, P), SDXL extras."""

    hidden: torch.Tensor
    pooled: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    def unet_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `UNet2DConditionModel.forward`."""
        kwargs: dict[str, Any] = {"encoder_hidden_states": self.hidden}
        if self.added is not None:
            kwargs["added_cond_kwargs"] = self.added
        return kwargs

    def to_unet_dtype(self, dtype: torch.dtype) -> Conditioning:
        """The UNet inputs cast to `dtype`; the pooled embedding (the heads' input) kept float32."""
        added = {k: v.to(dtype) for k, v in self.added.items()} if self.added is not None else None
        return Conditioning(self.hidden.to(dtype), self.pooled.float(), added)

    def with_uncond(self, uncond: Conditioning) -> Conditioning:
        """These rows, then the one row of `uncond` (the empty prompt's) as many times: CFG in one teacher call."""

        def both(mine: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
            return torch.cat([mine, theirs.expand(mine.shape[0], *theirs.shape[1:])])

        added = None
        if self.added is not None and uncond.added is not None:
            added = {k: both(v, uncond.added[k]) for k, v in self.added.items()}
        return Conditioning(both(self.hidden, uncond.hidden), both(self.pooled, uncond.pooled), added)


def family_of(pipe: Any) -> str:
    """ "sdxl" with two text encoders, else "sd2" for OpenCLIP's gelu encoder, else "sd1" (CLIP's quick_gelu)."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    return "sd2" if pipe.text_encoder.config.hidden_act == "gelu" else "sd1"


@torch.no_grad()
def encode_captions(pipe: Any, captions: Sequence[str], *, height: int, width: int) -> Conditioning:
    """The frozen text encoder(s)' embeddings of `captions`, as the pipeline computes them."""
    device = pipe.text_encoder.device
    if getattr(pipe, "text_encoder_2", None) is not None:
        hidden, _, pooled, _ = pipe.encode_prompt(
            prompt=list(captions), device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=device, dtype=hidden.dtype)
        added = {"text_embeds": pooled, "time_ids": time_ids.repeat(len(captions), 1)}
        return Conditioning(hidden, pooled, added)
    tokens = pipe.tokenizer(
        list(captions), padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True
    )
    ids = torch.tensor(tokens.input_ids, device=device)
    out = pipe.text_encoder(ids)
    return Conditioning(out[0], out.pooler_output)  # (B, 77, D), (B, D): CLIP's EOS token


def _latent_stats(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL-style per-channel latent mean and std of the VAE config; 0 and 1 (which change nothing) without them."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        mean, std = [0.0], [1.0]
    return torch.tensor(mean).view(1, -1, 1, 1).to(like), torch.tensor(std).view(1, -1, 1, 1).to(like)


@torch.no_grad()
def encode_images(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] → scaled latents (B, 4, H/8, W/8): the posterior's mean (so a batch is deterministic)
    of an `AutoencoderKL`, the latents of an `AutoencoderTiny`, as diffusers' img2img pipelines read them."""
    encoded = vae.encode(images.to(vae.device, vae.dtype))
    latents: torch.Tensor = retrieve_latents(encoded, sample_mode="argmax")
    mean, std = _latent_stats(vae, latents)
    scaled: torch.Tensor = (latents - mean) / std * vae.config.scaling_factor
    return scaled


def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """The inverse of `encode_images`: (B, 3, H, W) in about [-1, 1] (a plain decode: no safety checker). Gradients
    reach `latents` where they require them (`recipe.refine_latents`)."""
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
    mean, std = _latent_stats(vae, z)
    pixels: torch.Tensor = vae.decode(z * std + mean, return_dict=False)[0].float()
    return pixels
