"""The models shipped in the package: `fastdiff-shapes-teacher` (20 steps, as SD 1.5) and its ADD student.

Both were made by `python -m fastdiff.distill.recipe` (see docs/distill.md, "The shipped model") and live in
`distill/models/` as fp16 diffusers folders, so `FewStepGenerator.from_preset("fastdiff-shapes")` needs no network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import FastDiffError
from ..presets import Preset, get, register

__all__ = ["MODELS", "STUDENT", "TEACHER", "register_shipped"]

MODELS = Path(__file__).resolve().parent / "models"
GUIDANCE = 2.0  # figures.json "teacher_guidance" of the shipped run


def _shipped(name: str, **recipe: Any) -> Preset:
    """A preset for the packaged folder `models/<name>`: SD 1.x wiring, 64×64, fp16 files without a variant suffix."""
    return Preset(
        name=name,
        family="sd1",
        repo_id=str(MODELS / name),
        height=64,
        width=64,
        license="apache-2.0",
        variant=None,
        **recipe,
    )


# The recipe's teacher, run as SD 1.5 is: its own PNDM scheduler, 20 steps, with the CFG scale the recipe measured
# best of (1, 2, 4, 7.5) on held-out prompts.
TEACHER = _shipped(
    "fastdiff-shapes-teacher",
    steps=tuple(range(1, 51)),
    default_steps=20,
    guidance_scale=GUIDANCE,
    scheduler="repo",
    description="toy SD 1.x-style teacher trained on the drawn `shapes` set (64×64): 20 steps with CFG",
)
# Its ADD student (Sauer et al. 2023), run as SDXL-Turbo is: 1-4 steps, no guidance, Euler with trailing spacing.
STUDENT = _shipped(
    "fastdiff-shapes",
    steps=(1, 2, 3, 4),
    default_steps=1,
    guidance_scale=0.0,
    scheduler="euler-trailing",
    description="ADD student of fastdiff-shapes-teacher (fastdiff.distill): 1-4 steps, `shapes` prompts, 64×64",
)


def register_shipped() -> tuple[Preset, Preset]:
    """Register both shipped presets (a second call changes nothing) and return them (teacher, student)."""
    for preset in (TEACHER, STUDENT):
        try:
            known = get(preset.name)
        except FastDiffError:  # not registered yet
            known = None
        if known != preset:
            register(preset, overwrite=True)
    return TEACHER, STUDENT
