"""Live generation: images that follow the user as they type or drag a slider, with no backlog."""

from .session import LiveSession
from .state import UNSET, Frame, LiveState, LiveStats

__all__ = ["UNSET", "Frame", "LiveSession", "LiveState", "LiveStats"]
