"""What a live session holds: the state the user asked for, the frame made from it, and the session's counters."""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass, field, fields
from typing import Any

from PIL import Image

__all__ = ["UNSET", "Frame", "LiveState", "LiveStats", "Unset"]


class Unset(enum.Enum):
    """Marks an `update` argument left out; None is a value there (`image=None` goes back to text-to-image)."""

    UNSET = enum.auto()


UNSET = Unset.UNSET


@dataclass(frozen=True)
class LiveState:
    """One state of the inputs: the arguments of one generator call (None: as in `FewStepGenerator.__call__`, the
    preset's value; `seed` 0, so that a session is reproducible), the number of its `update` (`version`, from 1) and
    its `time.perf_counter()` (`submitted`)."""

    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int | None = 0
    steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    image: Image.Image | None = None
    strength: float | None = None
    version: int = 0
    submitted: float = 0.0

    def call_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the generator call for this state (after the prompt). `strength` goes only with an
        image: a strength slider keeps its value while the image is cleared, and the generator refuses it alone."""
        kwargs = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("prompt", "version", "submitted")
        }
        return kwargs | {"strength": self.strength if self.image is not None else None}


@dataclass(frozen=True)
class Frame:
    """One generated image (exactly `generator(state.prompt, **state.call_kwargs()).images[0]`), its state and the
    values used. `timings` holds the generator's, plus "queued" (update → generation start) and "latency" (update →
    frame), in seconds. `number` counts the session's frames from 1."""

    image: Image.Image
    state: LiveState
    seed: int
    steps: int
    guidance_scale: float
    number: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        assert self.state.prompt is not None  # a state without a prompt is never generated
        return self.state.prompt

    @property
    def negative_prompt(self) -> str | None:
        return self.state.negative_prompt

    @property
    def strength(self) -> float | None:
        """The img2img strength of the state (None in text-to-image mode)."""
        return self.state.strength if self.state.image is not None else None

    @property
    def version(self) -> int:
        """The number of the `update` this frame answers."""
        return self.state.version

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()

    def __repr__(self) -> str:
        ms = ", ".join(f"{k}={v * 1000:.1f}ms" for k, v in self.timings.items())
        return f"Frame(#{self.number}, prompt={self.prompt!r}, seed={self.seed}, steps={self.steps}, {ms})"


@dataclass(frozen=True)
class LiveStats:
    """Counters of one session; `received == generated + failed + dropped + interrupted` once it is idle. `dropped`:
    states replaced before their generation began; `interrupted`: generations cut short at a step boundary (a newer
    state with `interrupt=True`, or shutdown); `latency_p50`/`latency_p95`: seconds from each `update` to the first
    frame that shows it or a newer state (None before any frame)."""

    received: int
    generated: int
    dropped: int
    failed: int
    interrupted: int
    latency_p50: float | None
    latency_p95: float | None
