"""The real scheduler and pipeline classes of the hub repos the presets name, copied so tests need no download."""

from __future__ import annotations

from typing import Any

__all__ = ["MODEL_INDEX_CLASSES", "SCHEDULER_CONFIGS"]

# Every repo below uses these DDPM betas (SD 1.5, SD 2.1 and SDXL were trained with the same schedule).
_BETAS: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "trained_betas": None,
}

# The k-diffusion style keys that diffusers wrote into the Euler configs of the Stability repos.
_EULER_COMMON: dict[str, Any] = {
    **_BETAS,
    "clip_sample": False,
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}

# scheduler/scheduler_config.json of each repo, key for key.
SCHEDULER_CONFIGS: dict[str, dict[str, Any]] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.6.0",
        **_BETAS,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "clip_sample": False,
    },
    "stabilityai/sd-turbo": {
        "_class_name": "EulerDiscreteScheduler",
        "_diffusers_version": "0.24.0.dev0",
        **_EULER_COMMON,
        "timestep_spacing": "trailing",
        "use_karras_sigmas": False,
    },
    "stabilityai/sdxl-turbo": {
        "_class_name": "EulerAncestralDiscreteScheduler",
        "_diffusers_version": "0.24.0.dev0",
        **_EULER_COMMON,
        "timestep_spacing": "trailing",
    },
    "stabilityai/stable-diffusion-xl-base-1.0": {
        "_class_name": "EulerDiscreteScheduler",
        "_diffusers_version": "0.19.0.dev0",
        **_EULER_COMMON,
        "timestep_spacing": "leading",
        "use_karras_sigmas": False,
    },
    # shared/reference/model-configs/flux1-schnell (read from the repo, commit 768d12a)
    "black-forest-labs/FLUX.1-schnell": {
        "_class_name": "FlowMatchEulerDiscreteScheduler",
        "_diffusers_version": "0.30.0.dev0",
        "base_image_seq_len": 256,
        "base_shift": 0.5,
        "max_image_seq_len": 4096,
        "max_shift": 1.15,
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
    },
}

# model_index.json "_class_name" of each pipeline repo.
MODEL_INDEX_CLASSES: dict[str, str] = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "StableDiffusionPipeline",
    "stabilityai/sd-turbo": "StableDiffusionPipeline",
    "stabilityai/sdxl-turbo": "StableDiffusionXLPipeline",
    "stabilityai/stable-diffusion-xl-base-1.0": "StableDiffusionXLPipeline",
    "black-forest-labs/FLUX.1-schnell": "FluxPipeline",
}
