"""Deprecated: the live session moved to `fastdiff.serving`; this module re-exports it, with a warning."""

from __future__ import annotations

import warnings

from .errors import FastDiffWarning
from .serving.live import UNSET, Frame, LiveSession, LiveState, LiveStats

__all__ = ["UNSET", "Frame", "LiveSession", "LiveState", "LiveStats"]

warnings.warn(
    "fastdiff.realtime moved to fastdiff.serving: import LiveSession (and Frame, LiveState, LiveStats, UNSET) from "
    "fastdiff.serving",
    FastDiffWarning,
    stacklevel=2,
)
