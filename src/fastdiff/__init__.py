"""fastdiff: few-step text-to-image diffusion (Turbo, Lightning, LCM, Hyper-SD, DMD2) done right, on diffusers.

The torch-heavy names (`FewStepGenerator`, `Optimizations`, `GenerationResult`) load on first use (PEP 562), so
that `import fastdiff.presets` and `fastdiff --help` start without importing torch, diffusers and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import _quiet, presets  # noqa: F401  (_quiet first: it filters library noise before transformers loads)
from .errors import FastDiffError, FastDiffWarning
from .presets import Checkpoint, Preset

if TYPE_CHECKING:
    from .generator import FewStepGenerator
    from .recipe import Optimizations
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

_LAZY = {"FewStepGenerator": ".generator", "Optimizations": ".recipe", "GenerationResult": ".result"}


def __getattr__(name: str) -> object:
    """Import a torch-heavy public name when it is first used, then keep it as a plain module attribute."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
