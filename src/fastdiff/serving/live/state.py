"""What a live session holds: the state the user asked for, the frame made from it, and the session's counters."""

from __future__ import annotations

import enum
import io
import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

__all__ = ["UNSET", "Frame", "LiveState", "LiveStats", "Unset"]


class Unset(enum.Enum):
    """Marks an `update` argument left out; None is a value there (`image=None` goes back to text-to-image)."""

    UNSET = enum.auto()


UNSET = Unset.UNSET


@dataclass(frozen=True)
class LiveState:
    """One state of the inputs, as of one `update`: the arguments of one generator call plus when it arrived.

    None means what it means to `FewStepGenerator.__call__` (the preset's value; a random seed for `seed`).
    `version` counts updates (1 for the first); `submitted` is its `time.perf_counter()`.
    """

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

    def updated(self, *, version: int, submitted: float, **changes: Any) -> LiveState:
        """This state with `changes` applied (UNSET values skipped) as the state of update number `version`."""
        given = {name: value for name, value in changes.items() if value is not UNSET}
        return replace(self, **given, version=version, submitted=submitted)

    def call_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the generator call for this state (after the prompt).

        `strength` goes only with an image: a strength slider keeps its value while the image is cleared, and
        the generator rightly refuses strength without an image.
        """
        return {
            "steps": self.steps,
            "seed": self.seed,
            "guidance_scale": self.guidance_scale,
            "negative_prompt": self.negative_prompt,
            "height": self.height,
            "width": self.width,
            "image": self.image,
            "strength": self.strength if self.image is not None else None,
        }


@dataclass(frozen=True)
class Frame:
    """One generated image and the state it was made from.

    `image` is exactly `generator(state.prompt, **state.call_kwargs()).images[0]`. `seed`, `steps` and
    `guidance_scale` are the values used (the preset's where the state said None). `timings` holds the
    generator's "encode", "denoise", "decode", "total", plus "queued" (update → generation start) and
    "latency" (update → frame), in seconds. `number` counts the session's frames from 1.
    """

    image: Image.Image
    state: LiveState
    seed: int
    steps: int
    guidance_scale: float
    number: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The prompt this frame shows."""
        assert self.state.prompt is not None  # a state without a prompt is never generated
        return self.state.prompt

    @property
    def negative_prompt(self) -> str | None:
        """The negative prompt of the state."""
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
    """Counters of one session; `received == generated + failed + dropped + interrupted` once it is idle.

    `dropped`: states replaced by a newer one before their generation began. `interrupted`: generations cut
    short at a step boundary (newer state with `interrupt=True`, or shutdown). `latency_p50`/`latency_p95`:
    seconds from each `update` to the first frame that shows it or a newer state (None before any frame).
    """

    received: int
    generated: int
    dropped: int
    failed: int
    interrupted: int
    latency_p50: float | None
    latency_p95: float | None


class LatencyLog:
    """Input-to-frame latency of every update: an update counts as served by the first frame at or after it."""

    def __init__(self, window: int = 2048) -> None:
        self._waiting: deque[tuple[int, float]] = deque()  # (version, submitted) of updates not yet shown
        self._values: deque[float] = deque(maxlen=window)

    def received(self, version: int, submitted: float) -> None:
        self._waiting.append((version, submitted))

    def served(self, version: int, now: float, *, shown: bool) -> None:
        """Updates up to `version` got their answer at `now` (a frame when `shown`, else an error)."""
        while self._waiting and self._waiting[0][0] <= version:
            _, submitted = self._waiting.popleft()
            if shown:
                self._values.append(now - submitted)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (nearest rank) of the recorded latencies."""
        if not self._values:
            return None
        ordered = sorted(self._values)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
