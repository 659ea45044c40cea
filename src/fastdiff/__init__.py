"""fastdiff: few-step text-to-image diffusion (Turbo, Lightning, LCM, Hyper-SD, DMD2) done right, on diffusers."""

from __future__ import annotations

from . import _quiet, presets  # noqa: F401  (_quiet first: it filters library noise before transformers loads)
from .errors import FastDiffError, FastDiffWarning
from .generator import FewStepGenerator
from .optimize import Optimizations
from .presets import Checkpoint, Preset
from .result import GenerationResult

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "FastDiffError",
    "FastDiffWarning",
    "FewStepGenerator",
    "GenerationResult",
    "Optimizations",
    "Preset",
    "__version__",
    "presets",
]
