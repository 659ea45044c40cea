"""Live generation: images that follow the user as they type or drag a slider, with no backlog.

from fastdiff.serving import LiveSession

with LiveSession(generator, steps=1, seed=0) as session:
    session.update(prompt="a cat")      # never blocks; replaces whatever was pending
    frame = session.wait()              # the frame of the newest state
"""

from __future__ import annotations

from .session import LiveSession
from .state import UNSET, Frame, LiveState, LiveStats

__all__ = ["UNSET", "Frame", "LiveSession", "LiveState", "LiveStats"]
