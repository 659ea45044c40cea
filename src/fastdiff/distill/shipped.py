"""The models shipped in the package: `fastdiff-shapes-teacher` (20 steps, as SD 1.5) and its ADD student.

Both were made by `python -m fastdiff.distill.recipe` (see docs/distill.md, "The shipped model") and live in
`distill/models/` as fp16 diffusers folders, so `FewStepGenerator.from_preset("fastdiff-shapes")` needs no network.
Their presets are rows of the default table (`fastdiff.presets`); this module names them for the distill code.
"""

from __future__ import annotations

from ..errors import FastDiffError
from ..presets import SHIPPED_MODELS, Preset, get, register

__all__ = ["GUIDANCE", "MODELS", "STUDENT", "TEACHER", "register_shipped"]

MODELS = SHIPPED_MODELS
TEACHER = get("fastdiff-shapes-teacher")
STUDENT = get("fastdiff-shapes")
GUIDANCE = TEACHER.guidance_scale  # figures.json "teacher_guidance" of the shipped run


def register_shipped() -> tuple[Preset, Preset]:
    """Put both shipped presets back in the table if a caller replaced or removed them; return (teacher, student)."""
    for preset in (TEACHER, STUDENT):
        try:
            known = get(preset.name)
        except FastDiffError:  # removed from the table
            known = None
        if known != preset:
            register(preset, overwrite=True)
    return TEACHER, STUDENT
