"""`LiveSession`: one worker thread that always generates the newest state, never a backlog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from PIL import Image

from ...errors import FastDiffError
from .mailbox import Mailbox
from .state import UNSET, Frame, LiveState, LiveStats, Unset

if TYPE_CHECKING:
    from ...generator import FewStepGenerator
    from ...result import GenerationResult

__all__ = ["LiveSession"]

log = logging.getLogger(__name__)


class _Superseded(Exception):
    """Raised by the session's step-end callback to abandon a generation nobody will look at."""


class LiveSession:
    """Generate images that follow changing inputs (typing, sliders, a webcam) with no backlog.

    `update(...)` never blocks: it replaces the pending state. One worker thread owns the generator and
    generates only the newest state; states replaced before their turn are dropped, never queued. A generation
    in progress finishes (with `interrupt=True` it is cut short at the end of its current step when a newer state
    arrives: newest frame sooner, but no frames at all while the input changes faster than one generation).
    Each frame is exactly `generator(prompt, steps=..., seed=..., ...)` for its state: the embeddings come from
    the generator's LRU cache and the noise is fixed by seed and size, so a prompt being typed evolves one
    picture. Use it as a context manager; leaving it stops the worker (the generation in progress is cut at
    current step).

    The keyword arguments are the initial state, as in the generator's call (None: the preset's value, so one
    step for the Turbo presets; `seed=0` rather than random, so that a session is reproducible).
    `on_frame` / `on_error` run on the worker thread: keep them short, they delay the next generation. While
    the session is open, other threads may call the same generator: their calls and the session's take turns
    (the session's run alone: each carries the step-end callback that can stop it).
    """

    def __init__(
        self,
        generator: FewStepGenerator,
        *,
        prompt: str | None = None,
        steps: int | None = None,
        seed: int | None = 0,
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        image: Image.Image | None = None,
        strength: float | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        on_error: Callable[[FastDiffError], None] | None = None,
        interrupt: bool = False,
    ) -> None:
        self.generator = generator
        self.interrupt = interrupt
        self._on_frame = on_frame
        self._on_error = on_error
        initial = LiveState(
            steps=steps,
            seed=seed,
            height=height,
            width=width,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            image=image,
            strength=strength,
        )
        self._box = Mailbox(initial)
        self._worker = threading.Thread(target=self._run, name="fastdiff-live", daemon=True)
        self._worker.start()
        if prompt is not None:
            self.update(prompt=prompt)

    def update(
        self,
        *,
        prompt: str | Unset = UNSET,
        negative_prompt: str | Unset | None = UNSET,
        seed: int | Unset | None = UNSET,
        steps: int | Unset | None = UNSET,
        guidance_scale: float | Unset | None = UNSET,
        height: int | Unset | None = UNSET,
        width: int | Unset | None = UNSET,
        image: Image.Image | Unset | None = UNSET,
        strength: float | Unset | None = UNSET,
    ) -> LiveState:
        """Replace the pending state with the newest one changed by the given arguments; never blocks.

        Arguments left out keep their value. Nothing is generated until a prompt has been given (an empty
        string is a prompt). Values are checked by the generator: a bad one surfaces from `wait()`.
        """
        box = self._box
        with box.cond:
            state = box.state.updated(
                version=box.state.version + 1,
                submitted=time.perf_counter(),
                prompt=prompt,
                negative_prompt=negative_prompt,
                seed=seed,
                steps=steps,
                guidance_scale=guidance_scale,
                height=height,
                width=width,
                image=image,
                strength=strength,
            )
            box.put(state)  # re-entrant: the condition's lock is an RLock, so the version stays consecutive
        return state

    @property
    def state(self) -> LiveState:
        """The newest state (the one `wait()` waits for)."""
        with self._box.cond:
            return self._box.state

    def wait(self, timeout: float | None = None) -> Frame:
        """The frame of the newest state, once made; raises its `FastDiffError` if that generation failed.

        Raises `TimeoutError` after `timeout` seconds, `FastDiffError` when no prompt was given yet or the
        session closes first.
        """
        return self._box.wait_version(timeout).unwrap()

    def latest(self) -> Frame | None:
        """The newest frame made so far (possibly of an older state), or None; never waits, never raises."""
        with self._box.cond:
            return self._box.latest_frame

    @property
    def error(self) -> FastDiffError | None:
        """The error of the newest generation if it failed (cleared by the next frame), else None."""
        with self._box.cond:
            return None if self._box.outcome is None else self._box.outcome.error

    def frames(self, *, timeout: float | None = None) -> Iterator[Frame]:
        """Yield frames as they come, from the current state's on; frames the loop was too slow for are
        skipped, never queued. Ends when the session closes or no frame comes for `timeout` seconds. A failed
        generation raises its `FastDiffError` here (the session keeps running: iterate again)."""
        seen = self._box.start_mark()
        while (outcome := self._box.wait_after(seen, timeout)) is not None:
            seen = outcome.number
            yield outcome.unwrap()

    async def stream(self, *, timeout: float | None = None) -> AsyncIterator[Frame]:
        """`frames()` for asyncio (notebooks, async web servers): `async for frame in session.stream(): ...`."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed while the session still runs
                loop.call_soon_threadsafe(event.set)

        box = self._box
        with box.cond:
            box.wakers.add(wake)
        seen = box.start_mark()
        try:
            while True:
                with box.cond:
                    outcome, closed = box.newer_than(seen), box.closed
                if outcome is not None:
                    seen = outcome.number
                    yield outcome.unwrap()
                    continue
                if closed:
                    return
                try:
                    await asyncio.wait_for(event.wait(), timeout)
                except asyncio.TimeoutError:
                    return
                event.clear()
        finally:
            with box.cond:
                box.wakers.discard(wake)

    @property
    def stats(self) -> LiveStats:
        """A snapshot of the counters and the input-to-frame latency percentiles."""
        return self._box.stats()

    def close(self) -> None:
        """Stop the worker (a generation in progress is cut at the end of its current step) and wait for it to end."""
        for wake in self._box.close():
            wake()
        if threading.current_thread() is not self._worker:  # a callback closing its own session cannot join
            self._worker.join()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called (the worker has ended once it returned)."""
        return self._box.closed

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats
        state = "closed" if self.closed else "open"
        return f"LiveSession({self.generator!r}, {state}, received={s.received}, generated={s.generated})"

    def _step_end(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        """diffusers' `callback_on_step_end` on the session's calls: abandon a generation nobody will see.

        It raises rather than set diffusers' `pipe._interrupt`, which would still decode the unfinished latents into
        an image nobody will see; the call runs alone (a call with a callback always does), so only it stops.
        """
        if self._box.superseded(by_newer=self.interrupt):
            raise _Superseded
        return callback_kwargs

    def _run(self) -> None:
        while (state := self._box.take()) is not None:
            assert state.prompt is not None  # only states with a prompt are put
            started = time.perf_counter()
            try:
                result = self.generator(state.prompt, callback_on_step_end=self._step_end, **state.call_kwargs())
            except _Superseded:
                self._box.count("interrupted")
                continue
            except FastDiffError as exc:
                self._finish(state, None, exc)
            except Exception as exc:  # the worker must outlive any bad state; the error goes to wait()
                error = FastDiffError(
                    f"generation failed for prompt {state.prompt!r}: {type(exc).__name__}: {exc}; "
                    "the session keeps running, update() with other values"
                )
                error.__cause__ = exc
                self._finish(state, None, error)
            else:
                self._finish(state, _frame_maker(state, result, started), None)

    def _finish(
        self, state: LiveState, make: Callable[[int, float], Frame] | None, error: FastDiffError | None
    ) -> None:
        frame = self._box.publish(state, make, error)
        try:
            if frame is not None and self._on_frame is not None:
                self._on_frame(frame)
            if error is not None and self._on_error is not None:
                self._on_error(error)
        except Exception:  # a broken callback must not stop the session; its traceback goes to the log
            log.exception("LiveSession callback raised")


def _frame_maker(state: LiveState, result: GenerationResult, started: float) -> Callable[[int, float], Frame]:
    """Builds the frame once the mailbox has numbered it and taken the time it was shown."""

    def make(number: int, now: float) -> Frame:
        timings = {**result.timings, "queued": started - state.submitted, "latency": now - state.submitted}
        return Frame(result.image, state, result.seed, result.steps, result.guidance_scale, number, timings)

    return make
