"""The two types a preset is made of: `Preset` (how to run one few-step model) and `Checkpoint` (weights applied
on top of its pipeline repo). The catalogue of rows and its registry are `fastdiff.presets`, which re-exports
both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import FastDiffError

__all__ = ["NON_COMMERCIAL", "Checkpoint", "Family", "Preset"]

Family = Literal["sd1", "sd2", "sdxl", "flux"]

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
    max_sequence_length: int | None = None  # the T5 prompt length the card passes (T5 families; CLIP reads 77)
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
        """False for the Turbo and DMD2 licences, which forbid commercial use."""
        return self.license not in NON_COMMERCIAL

    def steps_label(self) -> str:
        """The allowed step counts for humans: "1-4", "4", "1-150"."""
        lo, hi = self.steps[0], self.steps[-1]
        if self.steps == tuple(range(lo, hi + 1)) and hi > lo:
            return f"{lo}-{hi}"
        return ",".join(str(s) for s in self.steps)
