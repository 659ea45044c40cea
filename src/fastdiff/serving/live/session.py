"""`LiveSession`: one worker thread that always generates the newest state, never a backlog: the hand-over is one
slot for the newest state and one for the newest outcome, under one condition variable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ...errors import FastDiffError
from ..coalescing import percentile
from .state import UNSET, Frame, LiveState, LiveStats

if TYPE_CHECKING:
    from ...generator import FewStepGenerator
    from ...result import GenerationResult

__all__ = ["LiveSession"]

log = logging.getLogger(__name__)
LATENCIES_KEPT = 2048


class _Superseded(Exception):
    """Abandons a generation nobody will look at."""


@dataclass(frozen=True)
class _Outcome:
    number: int  # counts outcomes, so that an iterator can tell new from seen
    version: int  # the update it answers
    frame: Frame | None
    error: FastDiffError | None

    def unwrap(self) -> Frame:
        """The frame, or the error raised as a new exception (raising one object again grows its traceback)."""
        if self.error is not None:
            fresh = FastDiffError(*self.error.args)
            fresh.__cause__ = self.error.__cause__
            raise fresh
        assert self.frame is not None
        return self.frame


class LiveSession:
    """Generate images that follow changing inputs (typing, sliders, a webcam) with no backlog.

    `**state` is the initial state: `LiveState`'s fields, as in the generator's call. One worker thread generates
    only the newest state; states replaced before their turn are dropped. A generation in progress finishes, unless
    `interrupt=True`: then a newer state cuts it at the end of its current step. Each frame is exactly
    `generator(prompt, **state)` for its state. `on_frame` / `on_error` run on the worker thread: keep them short.
    """

    def __init__(
        self,
        generator: FewStepGenerator,
        *,
        prompt: str | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        on_error: Callable[[FastDiffError], None] | None = None,
        interrupt: bool = False,
        **state: Any,
    ) -> None:
        self.generator = generator
        self.interrupt = interrupt
        self._on_frame, self._on_error = on_frame, on_error
        self._cond = threading.Condition()
        self._state = LiveState(**state)  # the newest state, with or without a prompt
        self._pending: LiveState | None = None  # the newest state not yet taken by the worker
        self._outcome: _Outcome | None = None
        self._latest: Frame | None = None
        self._closed = False
        self._wakers: set[Callable[[], None]] = set()  # async iterators' wake-up calls
        self._counts = dict.fromkeys(("received", "generated", "dropped", "failed", "interrupted"), 0)
        self._unshown: deque[tuple[int, float]] = deque()  # (version, submitted) of updates no frame answered yet
        self._latencies: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self._worker = threading.Thread(target=self._run, name="fastdiff-live", daemon=True)
        self._worker.start()
        if prompt is not None:
            self.update(prompt=prompt)

    def update(self, **changes: Any) -> LiveState:
        """Replace the pending state with the newest one changed by the given `LiveState` fields (those left out, or
        `UNSET`, keep their value); never blocks. A bad value surfaces from `wait()`."""
        given = {name: value for name, value in changes.items() if value is not UNSET}
        with self._cond:
            if self._closed:
                raise FastDiffError("this LiveSession is closed; start a new one to keep generating")
            version = self._state.version + 1
            state = self._state = replace(self._state, **given, version=version, submitted=time.perf_counter())
            if state.prompt is not None:
                self._counts["received"] += 1
                self._counts["dropped"] += self._pending is not None
                self._unshown.append((state.version, state.submitted))
                self._pending = state
                self._cond.notify_all()
        return state

    @property
    def state(self) -> LiveState:
        """The newest state (the one `wait()` waits for)."""
        with self._cond:
            return self._state

    def wait(self, timeout: float | None = None) -> Frame:
        """The frame of the newest state, once made; raises its `FastDiffError` if that generation failed,
        `TimeoutError` after `timeout` seconds, `FastDiffError` when no prompt was given yet or the session closes."""
        with self._cond:
            target = self._state
            if target.prompt is None:
                raise FastDiffError("nothing to wait for: call update(prompt=...) first")

            def answered() -> bool:
                return self._outcome is not None and self._outcome.version >= target.version

            if not self._cond.wait_for(lambda: answered() or self._closed, timeout):
                raise TimeoutError(f"no frame for {target.prompt!r} within {timeout} s")
            if not answered():
                raise FastDiffError(f"the session was closed before the frame for {target.prompt!r} was made")
            assert self._outcome is not None
            return self._outcome.unwrap()

    def latest(self) -> Frame | None:
        """The newest frame made so far (possibly of an older state), or None; never waits, never raises."""
        with self._cond:
            return self._latest

    @property
    def error(self) -> FastDiffError | None:
        """The error of the newest generation if it failed (cleared by the next frame), else None."""
        with self._cond:
            return None if self._outcome is None else self._outcome.error

    def frames(self, *, timeout: float | None = None) -> Iterator[Frame]:
        """Yield frames as they come, from the current state's on, skipping those the loop was too slow for; ends when
        the session closes or no frame comes for `timeout` seconds. A failed generation raises its error here."""
        seen = self._start_mark()
        while (outcome := self._wait_after(seen, timeout)) is not None:
            seen = outcome.number
            yield outcome.unwrap()

    async def stream(self, *, timeout: float | None = None) -> AsyncIterator[Frame]:
        """`frames()` for asyncio (notebooks, async web servers): `async for frame in session.stream(): ...`."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed while the session still runs
                loop.call_soon_threadsafe(event.set)

        with self._cond:
            self._wakers.add(wake)
        seen = self._start_mark()
        try:
            while True:
                with self._cond:
                    outcome, closed = self._newer_than(seen), self._closed
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
            with self._cond:
                self._wakers.discard(wake)

    @property
    def stats(self) -> LiveStats:
        """A snapshot of the counters and the input-to-frame latency percentiles."""
        with self._cond:
            counts, latencies = dict(self._counts), list(self._latencies)
        return LiveStats(**counts, latency_p50=percentile(latencies, 0.5), latency_p95=percentile(latencies, 0.95))

    def close(self) -> None:
        """Stop the worker (a generation in progress is cut at the end of its current step) and wait for it to end."""
        with self._cond:
            if not self._closed and self._pending is not None:
                self._counts["dropped"] += 1
                self._pending = None
            self._closed = True
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()
        if threading.current_thread() is not self._worker:  # a callback closing its own session cannot join
            self._worker.join()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called (the worker has ended once it returned)."""
        return self._closed

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.stats
        state = "closed" if self.closed else "open"
        return f"LiveSession({self.generator!r}, {state}, received={s.received}, generated={s.generated})"

    def _newer_than(self, seen: int) -> _Outcome | None:
        outcome = self._outcome
        return outcome if outcome is not None and outcome.number > seen else None

    def _wait_after(self, seen: int, timeout: float | None) -> _Outcome | None:
        """The newest outcome if it is newer than number `seen`, waiting up to `timeout`; None when closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._newer_than(seen) is not None or self._closed, timeout)
            return self._newer_than(seen)

    def _start_mark(self) -> int:
        """Where an iterator starts: just before the current state's outcome if it exists, else after the newest."""
        with self._cond:
            if self._outcome is None:
                return 0
            return self._outcome.number - (self._outcome.version >= self._state.version)

    def _step_end(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        """diffusers' `callback_on_step_end`: abandon a generation nobody will see (raising: `pipe._interrupt` would
        still decode the unfinished latents; a call with a callback runs alone, so only it stops)."""
        with self._cond:
            if self._closed or (self.interrupt and self._pending is not None):
                raise _Superseded
        return callback_kwargs

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._closed:
                    return
                state, self._pending = self._pending, None
            assert state is not None and state.prompt is not None  # only states with a prompt are pending
            started = time.perf_counter()
            try:
                result = self.generator(state.prompt, callback_on_step_end=self._step_end, **state.call_kwargs())
            except _Superseded:
                with self._cond:
                    self._counts["interrupted"] += 1
                continue
            except FastDiffError as exc:
                self._publish(state, None, started, exc)
            except Exception as exc:  # the worker must outlive any bad state; the error goes to wait()
                error = FastDiffError(
                    f"generation failed for prompt {state.prompt!r}: {type(exc).__name__}: {exc}; "
                    "the session keeps running, update() with other values"
                )
                error.__cause__ = exc
                self._publish(state, None, started, error)
            else:
                self._publish(state, result, started, None)

    def _publish(
        self, state: LiveState, result: GenerationResult | None, started: float, error: FastDiffError | None
    ) -> None:
        now = time.perf_counter()
        with self._cond:
            number = 1 if self._outcome is None else self._outcome.number + 1
            frame = None
            if result is not None:
                timings = {**result.timings, "queued": started - state.submitted, "latency": now - state.submitted}
                image, seed, steps, guidance = result.image, result.seed, result.steps, result.guidance_scale
                frame = self._latest = Frame(image, state, seed, steps, guidance, number, timings)
            self._counts["generated" if frame is not None else "failed"] += 1
            while self._unshown and self._unshown[0][0] <= state.version:  # each update is answered by this outcome
                submitted = self._unshown.popleft()[1]
                if frame is not None:
                    self._latencies.append(now - submitted)
            self._outcome = _Outcome(number, state.version, frame, error)
            self._cond.notify_all()
            wakers = list(self._wakers)
        for wake in wakers:
            wake()
        try:
            if frame is not None and self._on_frame is not None:
                self._on_frame(frame)
            if error is not None and self._on_error is not None:
                self._on_error(error)
        except Exception:  # a broken callback must not stop the session; its traceback goes to the log
            log.exception("LiveSession callback raised")
