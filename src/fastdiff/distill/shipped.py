"""The models shipped in the package: `fastdiff-shapes-teacher` (20 steps, as SD 1.5) and its ADD student.

Both were made by `python -m fastdiff.distill.recipe` (see docs/distill.md, "The shipped model") and live in
`distill/models/` as fp16 diffusers folders, so `FewStepGenerator.from_preset("fastdiff-shapes")` needs no network.
Their presets are rows of the default table (`fastdiff.presets`); this module names them for the distill code.
"""

from __future__ import annotations

from ..presets import SHIPPED_MODELS, get

__all__ = ["GUIDANCE", "MODELS", "STUDENT", "TEACHER"]

MODELS = SHIPPED_MODELS
TEACHER = get("fastdiff-shapes-teacher")
STUDENT = get("fastdiff-shapes")
GUIDANCE = TEACHER.guidance_scale  # figures.json "teacher_guidance" of the shipped run
