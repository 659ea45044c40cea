"""Presets: the `Preset` and `Checkpoint` types and the table of every preset, one row per model card.

Each row reproduces its model card's diffusers snippet (scheduler, spacing, prediction type, explicit timesteps,
eta, guidance, LoRA fused). Adding a family is one row here and at most one recipe in `schedulers.py`.
`check_steps` holds a step count to a row's allowed set, torch-free, so that the CLI can refuse it before loading.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import FastDiffError, did_you_mean

__all__ = [
    "DEFAULT_PRESET",
    "SHIPPED_MODELS",
    "Checkpoint",
    "Family",
    "Preset",
    "all_presets",
    "check_steps",
    "get",
    "is_shipped",
    "names",
    "register",
    "replace",
]

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # runwayml/stable-diffusion-v1-5 was taken down
SDXL_BASE_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
SD_TURBO_REPO = "stabilityai/sd-turbo"
SDXL_TURBO_REPO = "stabilityai/sdxl-turbo"
LIGHTNING_REPO = "ByteDance/SDXL-Lightning"
HYPER_REPO = "ByteDance/Hyper-SD"
DMD2_REPO = "tianweiy/DMD2"
FLUX_SCHNELL_REPO = "black-forest-labs/FLUX.1-schnell"
FLUX2_KLEIN_4B_REPO = "black-forest-labs/FLUX.2-klein-4B"
SANA_SPRINT_06B_REPO = "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers"
SANA_SPRINT_16B_REPO = "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers"
Z_IMAGE_TURBO_REPO = "Tongyi-MAI/Z-Image-Turbo"
SD35_LARGE_TURBO_REPO = "stabilityai/stable-diffusion-3.5-large-turbo"
QWEN_IMAGE_REPO = "Qwen/Qwen-Image"
QWEN_LIGHTNING_REPO = "lightx2v/Qwen-Image-Lightning"

# The models fastdiff ships in the package (fp16 diffusers folders, no variant suffix), so that a fresh machine
# makes real images offline; `python -m fastdiff.distill.recipe` reproduces them (docs/distill.md).
SHIPPED_MODELS = Path(__file__).resolve().parent / "distill" / "models"
DEFAULT_PRESET = "fastdiff-shapes"  # what `fastdiff generate` and `fastdiff demo` run when no preset is named

Family = Literal["sd1", "sd2", "sdxl", "flux", "flux2", "zimage", "sd3", "qwenimage", "sana-sprint"]

NON_COMMERCIAL = ("sai-nc-community", "cc-by-nc-sa-4.0")


@dataclass(frozen=True)
class Checkpoint:
    """Weights applied on top of the pipeline repo: a full UNet state dict, or a LoRA that is fused."""

    repo_id: str
    filename: str
    kind: Literal["unet", "lora"]

    @property
    def is_pickle(self) -> bool:
        """True for `.bin`/`.pt` files, which `torch.load` unpickles (only loaded when the user opts in)."""
        return not self.filename.endswith(".safetensors")


@dataclass(frozen=True)
class Preset:
    """How to run one few-step model: where its weights live and the exact sampling recipe of its model card."""

    name: str
    family: Family
    repo_id: str  # the diffusers pipeline repo
    steps: tuple[int, ...]  # allowed step counts (diffusers' num_inference_steps)
    default_steps: int
    guidance_scale: float
    height: int
    width: int
    scheduler: str  # a recipe name in fastdiff.schedulers
    license: str
    checkpoint: Checkpoint | None = None
    timesteps: tuple[int, ...] | None = None  # explicit timesteps (DMD2), used instead of spacing
    eta: float | None = None  # stochasticity of TCD's step
    variant: str | None = "fp16"  # variant of the repo's files loaded for float16
    max_sequence_length: int | None = None  # the T5/Qwen3 prompt length the card passes (CLIP reads 77)
    description: str = ""

    def __post_init__(self) -> None:
        if self.default_steps not in self.steps:
            raise FastDiffError(f"preset {self.name!r}: default_steps {self.default_steps} not in steps {self.steps}")
        if self.timesteps is not None and self.steps != (len(self.timesteps),):
            raise FastDiffError(f"preset {self.name!r}: {len(self.timesteps)} explicit timesteps need steps=(N,)")

    @property
    def guidance_free(self) -> bool:
        """True when the model was distilled to run without classifier-free guidance (guidance ≤ 1)."""
        return self.guidance_scale <= 1.0

    @property
    def commercial_use(self) -> bool:
        """False for the SD/SDXL-Turbo and DMD2 licences, which forbid commercial use. True for Stability AI's
        community licence (SD 3.5), which allows it below $1M annual revenue: read the terms above that."""
        return self.license not in NON_COMMERCIAL

    def steps_label(self) -> str:
        """The allowed step counts for humans: "1-4", "4", "1-150"."""
        lo, hi = self.steps[0], self.steps[-1]
        if self.steps == tuple(range(lo, hi + 1)) and hi > lo:
            return f"{lo}-{hi}"
        return ",".join(str(s) for s in self.steps)


def _turbo(**recipe: Any) -> Preset:
    """A Stability AI Turbo (ADD, Sauer et al. 2023): 1-4 steps (1 by default), guidance 0, 512², non-commercial."""
    base = {"steps": (1, 2, 3, 4), "default_steps": 1, "guidance_scale": 0.0, "height": 512, "width": 512}
    return Preset(**{**base, "license": "sai-nc-community", **recipe})


def _sdxl_base(steps: int, **recipe: Any) -> Preset:
    """A checkpoint distilled from SDXL base for exactly `steps` steps and applied on top of it: its repo, 1024²,
    guidance 0 unless named."""
    base = {"family": "sdxl", "repo_id": SDXL_BASE_REPO, "height": 1024, "width": 1024, "license": "openrail++"}
    return Preset(**{**base, "steps": (steps,), "default_steps": steps, "guidance_scale": 0.0, **recipe})


def _lightning(steps: int, kind: Literal["unet", "lora"]) -> Preset:
    # https://huggingface.co/ByteDance/SDXL-Lightning: UNet (or LoRA, fused), Euler trailing, exactly the step count
    # the checkpoint was distilled for; the 1-step UNet predicts x0.
    x0 = steps == 1
    filename = f"sdxl_lightning_{steps}step_{kind}{'_x0' if x0 else ''}.safetensors"
    return _sdxl_base(
        steps,
        name=f"sdxl-lightning-{steps}step{'-lora' if kind == 'lora' else ''}",
        checkpoint=Checkpoint(LIGHTNING_REPO, filename, kind),
        scheduler="euler-trailing-x0" if x0 else "euler-trailing",
        description=f"SDXL-Lightning {steps}-step {kind} (progressive adversarial distillation)",
    )


def _hyper_lora(steps: int) -> Preset:
    # https://huggingface.co/ByteDance/Hyper-SD: LoRA fused; N-step LoRAs use DDIM trailing, the 1-step one TCD eta=1.
    one = steps == 1
    return _sdxl_base(
        steps,
        name=f"hyper-sdxl-{steps}step-lora",
        checkpoint=Checkpoint(HYPER_REPO, f"Hyper-SDXL-{steps}step{'' if one else 's'}-lora.safetensors", "lora"),
        scheduler="tcd" if one else "ddim-trailing",
        eta=1.0 if one else None,
        description=f"Hyper-SDXL {steps}-step LoRA (trajectory segmented consistency distillation)",
    )


def _lcm_lora(base: Literal["sd15", "sdxl"]) -> Preset:
    # https://huggingface.co/latent-consistency/lcm-lora-sdv1-5 and -sdxl: LCMScheduler, LoRA fused, 4-8 steps,
    # guidance 1 (no CFG) as in diffusers' inference_with_lcm guide; the base model's native size.
    sdxl = base == "sdxl"
    lora_repo = "latent-consistency/lcm-lora-sdxl" if sdxl else "latent-consistency/lcm-lora-sdv1-5"
    side = 1024 if sdxl else 512
    return Preset(
        name=f"lcm-lora-{base}",
        family="sdxl" if sdxl else "sd1",
        repo_id=SDXL_BASE_REPO if sdxl else SD15_REPO,
        checkpoint=Checkpoint(lora_repo, "pytorch_lora_weights.safetensors", "lora"),
        steps=(4, 5, 6, 7, 8),
        default_steps=4,
        guidance_scale=1.0,
        height=side,
        width=side,
        scheduler="lcm",
        license="openrail++",
        description=f"LCM-LoRA on {'SDXL' if sdxl else 'SD 1.5'} (latent consistency distillation)",
    )


def _dmd2(timesteps: tuple[int, ...]) -> Preset:
    # https://huggingface.co/tianweiy/DMD2: UNet (.bin, pickled), LCMScheduler on the card's explicit timesteps.
    steps = len(timesteps)
    return _sdxl_base(
        steps,
        name=f"dmd2-sdxl-{steps}step",
        checkpoint=Checkpoint(DMD2_REPO, f"dmd2_sdxl_{steps}step_unet_fp16.bin", "unet"),
        scheduler="lcm",
        timesteps=timesteps,
        license="cc-by-nc-sa-4.0",
        description=f"DMD2 {steps}-step (improved distribution matching distillation)",
    )


def _flow(**recipe: Any) -> Preset:
    """A flow-matching transformer preset: the cards' 1024², the repo's own files (bf16 on the hub: no fp16
    variant), its largest step count by default and, unless named, the repo's own scheduler config."""
    base = {"height": 1024, "width": 1024, "variant": None, "scheduler": "repo", "default_steps": max(recipe["steps"])}
    return Preset(**{**base, **recipe})


def _qwen_lightning(steps: int) -> Preset:
    # https://huggingface.co/lightx2v/Qwen-Image-Lightning: the V2.0 LoRA (bf16 file) fused into Qwen-Image, the
    # card's fixed shift of 3, true_cfg_scale=1.0 (no CFG); why each, docs/presets.md.
    return _flow(
        name=f"qwen-image-lightning-{steps}step",
        family="qwenimage",
        repo_id=QWEN_IMAGE_REPO,
        checkpoint=Checkpoint(QWEN_LIGHTNING_REPO, f"Qwen-Image-Lightning-{steps}steps-V2.0-bf16.safetensors", "lora"),
        steps=(steps,),
        guidance_scale=1.0,
        scheduler="flow-euler-shift-3",
        license="apache-2.0",
        description=f"Qwen-Image-Lightning {steps}-step LoRA on Qwen-Image (20B MMDiT, Qwen2.5-VL text encoder)",
    )


def _sana_sprint(size: str, repo: str) -> Preset:
    # https://nvlabs.github.io/Sana/docs/sana_sprint: the card's call, the pipeline's own defaults otherwise
    # (guidance 4.5 is embedded, not CFG); licence unsettled, so "other" (docs/presets.md).
    return _flow(
        name=f"sana-sprint-{size}",
        family="sana-sprint",
        repo_id=repo,
        steps=(1, 2),
        guidance_scale=4.5,
        license="other",
        max_sequence_length=300,
        description=f"SANA-Sprint {size.upper()} (sCM + LADD, embedded guidance); licence unsettled: check its card",
    )


def _shipped(name: str, **recipe: Any) -> Preset:
    """A preset for the packaged folder `distill/models/<name>`: SD 1.x wiring, 64×64, fp16 files, no variant."""
    base = {"family": "sd1", "repo_id": str(SHIPPED_MODELS / name), "height": 64, "width": 64, "variant": None}
    return Preset(**{**base, "name": name, "license": "apache-2.0", **recipe})


_BUILTIN: tuple[Preset, ...] = (
    # https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5: the baseline, the repo's PNDM scheduler.
    Preset(
        name="sd15",
        family="sd1",
        repo_id=SD15_REPO,
        steps=tuple(range(1, 151)),
        default_steps=20,
        guidance_scale=7.5,
        height=512,
        width=512,
        scheduler="repo",
        license="creativeml-openrail-m",
        description="Stable Diffusion 1.5, the 20-step baseline",
    ),
    # https://huggingface.co/stabilityai/sd-turbo: ADD-distilled SD 2.1, Euler trailing.
    _turbo(
        name="sd-turbo",
        family="sd2",
        repo_id=SD_TURBO_REPO,
        scheduler="euler-trailing",
        description="SD-Turbo (adversarial diffusion distillation of SD 2.1)",
    ),
    # https://huggingface.co/stabilityai/sdxl-turbo: ADD-distilled SDXL at 512², the repo's Euler-ancestral with
    # trailing spacing (img2img: steps × strength ≥ 1 in diffusers).
    _turbo(
        name="sdxl-turbo",
        family="sdxl",
        repo_id=SDXL_TURBO_REPO,
        scheduler="euler-ancestral-trailing",
        description="SDXL-Turbo (adversarial diffusion distillation of SDXL)",
    ),
    *(_lightning(n, "unet") for n in (1, 2, 4, 8)),
    *(_lightning(n, "lora") for n in (2, 4, 8)),
    _lcm_lora("sd15"),
    _lcm_lora("sdxl"),
    *(_hyper_lora(n) for n in (1, 2, 4, 8)),
    _dmd2((399,)),
    _dmd2((999, 749, 499, 249)),
    # https://huggingface.co/black-forest-labs/FLUX.1-schnell: 1-4 steps, guidance 0, T5 prompt ≤ 256 tokens.
    _flow(
        name="flux-schnell",
        family="flux",
        repo_id=FLUX_SCHNELL_REPO,
        steps=(1, 2, 3, 4),
        guidance_scale=0.0,
        license="apache-2.0",
        max_sequence_length=256,
        description="FLUX.1 [schnell] (latent adversarial diffusion distillation, 12B transformer)",
    ),
    # https://huggingface.co/black-forest-labs/FLUX.2-klein-4B: step-distilled to exactly 4 steps, guidance 1.0 as
    # the card passes it (its `is_distilled` turns CFG off), the pipeline's 512 Qwen3 tokens.
    _flow(
        name="flux2-klein-4b",
        family="flux2",
        repo_id=FLUX2_KLEIN_4B_REPO,
        steps=(4,),
        guidance_scale=1.0,
        license="apache-2.0",
        max_sequence_length=512,
        description="FLUX.2 [klein] 4B (step-distilled rectified-flow transformer, Qwen3 text encoder)",
    ),
    # https://huggingface.co/Tongyi-MAI/Z-Image-Turbo: 8 transformer passes (the card's num_inference_steps=9 on
    # diffusers < 0.39: docs/presets.md), guidance 0 (its pipeline runs CFG above 0), Qwen3 prompt ≤ 512 tokens.
    _flow(
        name="z-image-turbo",
        family="zimage",
        repo_id=Z_IMAGE_TURBO_REPO,
        steps=(8,),
        guidance_scale=0.0,
        license="apache-2.0",
        max_sequence_length=512,
        description="Z-Image-Turbo (decoupled DMD distillation, 6B single-stream transformer)",
    ),
    # https://huggingface.co/stabilityai/stable-diffusion-3.5-large-turbo: the card's 4 steps (no other count is
    # named) and guidance 0.0, T5 prompt at the pipeline's 256 tokens.
    _flow(
        name="sd35-large-turbo",
        family="sd3",
        repo_id=SD35_LARGE_TURBO_REPO,
        steps=(4,),
        guidance_scale=0.0,
        license="stabilityai-ai-community",
        max_sequence_length=256,
        description="Stable Diffusion 3.5 Large Turbo (adversarial diffusion distillation, 8B MMDiT)",
    ),
    _qwen_lightning(4),
    _qwen_lightning(8),
    *(_sana_sprint(size, repo) for size, repo in (("0.6b", SANA_SPRINT_06B_REPO), ("1.6b", SANA_SPRINT_16B_REPO))),
    # Shipped, docs/distill.md: a toy teacher trained on the drawn `shapes` set, run as SD 1.5 is (its own PNDM
    # scheduler, 20 steps, CFG 2.0: the best of 1, 2, 4, 7.5 on held-out prompts in the recipe's run) ...
    _shipped(
        "fastdiff-shapes-teacher",
        steps=tuple(range(1, 51)),
        default_steps=20,
        guidance_scale=2.0,
        scheduler="repo",
        description="toy SD 1.x-style teacher trained on the drawn `shapes` set (64×64): 20 steps with CFG",
    ),
    # ... and its ADD student (fastdiff.distill, Sauer et al. 2023), run as SDXL-Turbo is (1-4 steps, guidance 0,
    # Euler with trailing spacing), reading its UNet's output as x̂0, as SDXL-Lightning's 1-step UNet.
    _shipped(
        "fastdiff-shapes",
        steps=(1, 2, 3, 4),
        default_steps=1,
        guidance_scale=0.0,
        scheduler="euler-trailing-x0",
        description="ADD student of fastdiff-shapes-teacher (fastdiff.distill): 1-4 steps, `shapes` prompts, 64×64",
    ),
)

_REGISTRY: dict[str, Preset] = {p.name: p for p in _BUILTIN}


def names() -> list[str]:
    """Names of every registered preset, in table order."""
    return list(_REGISTRY)


def all_presets() -> list[Preset]:
    """Every registered preset, in table order."""
    return list(_REGISTRY.values())


def get(name: str | Preset) -> Preset:
    """Look a preset up by name (a `Preset` is returned as is); unknown names raise with the closest match."""
    if isinstance(name, Preset):
        return name
    if not isinstance(name, str):
        raise FastDiffError(f"a preset is a name or a Preset, not {type(name).__name__}; see fastdiff.presets.names()")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FastDiffError(f"unknown preset {name!r}" + did_you_mean(name, _REGISTRY)) from None


def is_shipped(preset: Preset) -> bool:
    """True for a model that ships inside the package: nothing to download, no hub cache involved."""
    return Path(preset.repo_id).parent == SHIPPED_MODELS


def _sibling_for(preset: Preset, steps: int) -> Preset | None:
    """The preset of the same family variant distilled for `steps` (sdxl-lightning-4step → -2step)."""
    stem = re.sub(r"\d+step", "#step", preset.name)
    same = (p for p in all_presets() if re.sub(r"\d+step", "#step", p.name) == stem and steps in p.steps)
    return next((p for p in same if p.name != preset.name), None)


def check_steps(preset: Preset, steps: object) -> int:
    """Default or validate the step count against the preset's allowed set (torch-free, so that the CLI refuses a
    wrong count before it checks for, or downloads, any weights)."""
    if steps is None:
        return preset.default_steps
    if not isinstance(steps, int) or isinstance(steps, bool):
        raise FastDiffError(f"steps must be an int, not {steps!r}; {preset.name} runs {preset.steps_label()} steps")
    if steps in preset.steps:
        return steps
    if len(preset.steps) == 1:
        hint = f"{preset.name} runs exactly {preset.steps[0]} steps (its checkpoint was distilled for that count)"
    else:
        hint = f"{preset.name} runs {preset.steps_label()} steps"
    sibling = _sibling_for(preset, steps)
    plural = "s" if steps != 1 else ""
    nearest = min(preset.steps, key=lambda allowed: (abs(allowed - steps), allowed))
    fix = f"; for {steps} step{plural} use {sibling.name}" if sibling else f"; use steps={nearest}"
    raise FastDiffError(f"{hint}, got steps={steps}{fix}")


def register(preset: Preset, *, overwrite: bool = False) -> Preset:
    """Add a preset to the table so `get`, `from_preset` and the CLI know it by name."""
    from .schedulers import check_recipe

    if not isinstance(preset, Preset):
        raise FastDiffError(f"register() takes a Preset, not {type(preset).__name__}")
    check_recipe(preset.scheduler)
    if preset.name in _REGISTRY and not overwrite:
        raise FastDiffError(f"preset {preset.name!r} already exists; pass overwrite=True to replace it")
    _REGISTRY[preset.name] = preset
    return preset


def replace(preset: Preset, **changes: object) -> Preset:
    """A copy of `preset` with some fields changed (`dataclasses.replace`)."""
    return dataclasses.replace(preset, **changes)  # type: ignore[arg-type]
