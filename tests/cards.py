"""Each model card's diffusers snippet, written out as the card has it, run on the test cache.

These are deliberately independent of fastdiff's presets: the parity tests compare fastdiff against them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoPipelineForText2Image,
    DDIMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    FluxPipeline,
    LCMScheduler,
    SanaSprintPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
    TCDScheduler,
    UNet2DConditionModel,
    ZImagePipeline,
)
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

BASE = "stabilityai/stable-diffusion-xl-base-1.0"


def _hub(cache: Path) -> dict[str, Any]:
    return {"cache_dir": cache, "local_files_only": True}


def turbo(repo: str, cache: Path) -> tuple[Any, dict[str, Any]]:
    """stabilityai/sdxl-turbo and sd-turbo cards: AutoPipelineForText2Image, guidance_scale=0.0."""
    return AutoPipelineForText2Image.from_pretrained(repo, **_hub(cache)), {"guidance_scale": 0.0}


def sd15(cache: Path) -> tuple[Any, dict[str, Any]]:
    """The SD 1.5 card: the repo's own scheduler, guidance 7.5."""
    repo = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    return AutoPipelineForText2Image.from_pretrained(repo, **_hub(cache)), {"guidance_scale": 7.5}


def _unet_from(state: dict[str, torch.Tensor], cache: Path) -> Any:
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(BASE, subfolder="unet", **_hub(cache)))
    unet.load_state_dict(state)
    return unet


def lightning(steps: int, kind: str, cache: Path) -> tuple[Any, dict[str, Any]]:
    """ByteDance/SDXL-Lightning card: UNet (or fused LoRA) into SDXL base, Euler trailing (1-step: sample)."""
    name = f"sdxl_lightning_{steps}step_{kind}{'_x0' if steps == 1 else ''}.safetensors"
    path = hf_hub_download("ByteDance/SDXL-Lightning", name, **_hub(cache))
    if kind == "unet":
        pipe = StableDiffusionXLPipeline.from_pretrained(BASE, unet=_unet_from(load_file(path), cache), **_hub(cache))
    else:
        pipe = StableDiffusionXLPipeline.from_pretrained(BASE, **_hub(cache))
        pipe.load_lora_weights(path)
        pipe.fuse_lora()
    extra = {"prediction_type": "sample"} if steps == 1 else {}
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", **extra)
    return pipe, {"guidance_scale": 0}


def lcm(family: str, cache: Path) -> tuple[Any, dict[str, Any]]:
    """diffusers' inference_with_lcm guide: LCMScheduler, LCM-LoRA loaded and fused, guidance 1.0."""
    base, lora = {
        "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5", "latent-consistency/lcm-lora-sdv1-5"),
        "sdxl": (BASE, "latent-consistency/lcm-lora-sdxl"),
    }[family]
    pipe = AutoPipelineForText2Image.from_pretrained(base, **_hub(cache))
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(hf_hub_download(lora, "pytorch_lora_weights.safetensors", **_hub(cache)))
    pipe.fuse_lora()
    return pipe, {"guidance_scale": 1.0}


def hyper(steps: int, cache: Path) -> tuple[Any, dict[str, Any]]:
    """ByteDance/Hyper-SD card: LoRA fused; DDIM trailing for N steps, TCD with eta=1.0 for 1 step."""
    name = f"Hyper-SDXL-{steps}step{'' if steps == 1 else 's'}-lora.safetensors"
    pipe = StableDiffusionXLPipeline.from_pretrained(BASE, **_hub(cache))
    pipe.load_lora_weights(hf_hub_download("ByteDance/Hyper-SD", name, **_hub(cache)))
    pipe.fuse_lora()
    if steps == 1:
        pipe.scheduler = TCDScheduler.from_config(pipe.scheduler.config)
        return pipe, {"guidance_scale": 0, "eta": 1.0}
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    return pipe, {"guidance_scale": 0}


def dmd2(steps: int, cache: Path) -> tuple[Any, dict[str, Any]]:
    """tianweiy/DMD2 card: UNet from torch.load, LCMScheduler, explicit timesteps."""
    path = hf_hub_download("tianweiy/DMD2", f"dmd2_sdxl_{steps}step_unet_fp16.bin", **_hub(cache))
    unet = _unet_from(torch.load(path, map_location="cpu", weights_only=True), cache)
    pipe = StableDiffusionXLPipeline.from_pretrained(BASE, unet=unet, **_hub(cache))
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    timesteps = [399] if steps == 1 else [999, 749, 499, 249]
    return pipe, {"guidance_scale": 0, "timesteps": timesteps}


def shapes(name: str) -> tuple[Any, dict[str, Any]]:
    """docs/distill.md for the shipped models: the teacher with its own scheduler and CFG 2; the student with
    Euler trailing and guidance 0, as SD-Turbo's card."""
    import fastdiff

    folder = Path(fastdiff.__file__).parent / "distill" / "models" / name
    pipe = AutoPipelineForText2Image.from_pretrained(folder, dtype=torch.float32)
    if name == "fastdiff-shapes-teacher":
        return pipe, {"guidance_scale": 2.0}
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    return pipe, {"guidance_scale": 0.0}


def flux_schnell(cache: Path) -> tuple[Any, dict[str, Any]]:
    """black-forest-labs/FLUX.1-schnell card: FluxPipeline with the repo's scheduler, guidance_scale=0.0,
    max_sequence_length=256."""
    pipe = FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-schnell", **_hub(cache))
    return pipe, {"guidance_scale": 0.0, "max_sequence_length": 256}


def flux2_klein_4b(cache: Path) -> tuple[Any, dict[str, Any]]:
    """black-forest-labs/FLUX.2-klein-4B card: Flux2KleinPipeline with the repo's scheduler, guidance_scale=1.0,
    num_inference_steps=4 (the pipeline's own max_sequence_length, 512)."""
    pipe = Flux2KleinPipeline.from_pretrained("black-forest-labs/FLUX.2-klein-4B", **_hub(cache))
    return pipe, {"guidance_scale": 1.0}


def z_image_turbo(cache: Path) -> tuple[Any, dict[str, Any]]:
    """Tongyi-MAI/Z-Image-Turbo card: ZImagePipeline with the repo's scheduler, guidance_scale=0.0 (its
    num_inference_steps=9 is 8 transformer passes on diffusers < 0.39; 8 on ours)."""
    pipe = ZImagePipeline.from_pretrained("Tongyi-MAI/Z-Image-Turbo", low_cpu_mem_usage=False, **_hub(cache))
    return pipe, {"guidance_scale": 0.0}


def with_lora(pipe: Any, lora: Path, *, scale: float, fuse: bool) -> Any:
    """What a diffusers user writes for a LoRA file: `load_lora_weights`, then `fuse_lora(lora_scale=)` and
    `unload_lora_weights` (fused), or `set_adapters` (not fused)."""
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="user")
    if fuse:
        pipe.fuse_lora(lora_scale=scale, adapter_names=["user"])
        pipe.unload_lora_weights()
    else:
        pipe.set_adapters(["user"], adapter_weights=[scale])
    return pipe


def sd35_large_turbo(cache: Path) -> tuple[Any, dict[str, Any]]:
    """stabilityai/stable-diffusion-3.5-large-turbo card: StableDiffusion3Pipeline with the repo's scheduler,
    num_inference_steps=4, guidance_scale=0.0 (max_sequence_length: the pipeline's 256)."""
    pipe = StableDiffusion3Pipeline.from_pretrained("stabilityai/stable-diffusion-3.5-large-turbo", **_hub(cache))
    return pipe, {"guidance_scale": 0.0}


# lightx2v/Qwen-Image-Lightning card (and diffusers' qwenimage.md, "LoRA for faster inference"), comments its own
QWEN_LIGHTNING_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": math.log(3),  # We use shift=3 in distillation
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": math.log(3),  # We use shift=3 in distillation
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": None,  # set shift_terminal to None
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


def qwen_image_lightning(steps: int, cache: Path) -> tuple[Any, dict[str, Any]]:
    """lightx2v/Qwen-Image-Lightning card: Qwen/Qwen-Image with the card's scheduler, the step count's LoRA loaded
    (fused here, as fastdiff fuses it), negative_prompt=" " and true_cfg_scale=1.0 (no CFG)."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(QWEN_LIGHTNING_SCHEDULER)
    pipe = DiffusionPipeline.from_pretrained("Qwen/Qwen-Image", scheduler=scheduler, **_hub(cache))
    name = f"Qwen-Image-Lightning-{steps}steps-V2.0-bf16.safetensors"
    pipe.load_lora_weights(hf_hub_download("lightx2v/Qwen-Image-Lightning", name, **_hub(cache)))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return pipe, {"negative_prompt": " ", "true_cfg_scale": 1.0}


def sana_sprint(size: str, cache: Path) -> tuple[Any, dict[str, Any]]:
    """NVlabs' SANA-Sprint docs: SanaSprintPipeline.from_pretrained(repo) and the pipeline's own defaults
    (guidance 4.5 embedded, 2 steps with intermediate_timesteps 1.3, resolution binning, max_sequence_length 300,
    the complex human instruction); no argument beyond the prompt and the step count."""
    repo = f"Efficient-Large-Model/Sana_Sprint_{size.upper()}_1024px_diffusers"
    return SanaSprintPipeline.from_pretrained(repo, **_hub(cache)), {}


def step_arguments(preset: str, steps: int) -> dict[str, Any]:
    """What the card's reader adds to run another step count than the card's: SanaSprintPipeline refuses its
    default intermediate timestep (1.3, for 2 steps) at any other count."""
    return {"intermediate_timesteps": None} if preset.startswith("sana-sprint-") and steps != 2 else {}


def card_pipeline(preset: str, cache: Path) -> tuple[Any, dict[str, Any]]:
    """The card's pipeline for a preset name, and the extra call arguments the card passes."""
    if preset.startswith("fastdiff-shapes"):
        return shapes(preset)
    if preset == "sd15":
        return sd15(cache)
    if preset in ("sd-turbo", "sdxl-turbo"):
        return turbo(f"stabilityai/{preset}", cache)
    if preset.startswith("sdxl-lightning-"):
        steps = int(preset.split("-")[2].removesuffix("step"))
        return lightning(steps, "lora" if preset.endswith("-lora") else "unet", cache)
    if preset.startswith("lcm-lora-"):
        return lcm(preset.removeprefix("lcm-lora-"), cache)
    if preset.startswith("hyper-sdxl-"):
        return hyper(int(preset.split("-")[2].removesuffix("step")), cache)
    if preset.startswith("dmd2-sdxl-"):
        return dmd2(int(preset.split("-")[2].removesuffix("step")), cache)
    if preset == "flux-schnell":
        return flux_schnell(cache)
    if preset == "flux2-klein-4b":
        return flux2_klein_4b(cache)
    if preset == "z-image-turbo":
        return z_image_turbo(cache)
    if preset == "sd35-large-turbo":
        return sd35_large_turbo(cache)
    if preset.startswith("qwen-image-lightning-"):
        return qwen_image_lightning(int(preset.split("-")[3].removesuffix("step")), cache)
    if preset.startswith("sana-sprint-"):
        return sana_sprint(preset.removeprefix("sana-sprint-"), cache)
    raise KeyError(preset)
