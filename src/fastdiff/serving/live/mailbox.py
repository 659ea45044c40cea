"""The hand-over between the caller's threads and the worker: one slot for the newest state, one for the newest
outcome. Nothing here ever holds more than one of each, which is what keeps a live session free of backlog."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import FastDiffError
from .state import Frame, LatencyLog, LiveState, LiveStats

__all__ = ["Mailbox", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """What one generation ended with: a frame or an error."""

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


class Mailbox:
    """Latest-only slots guarded by one condition variable; every method is thread-safe and returns quickly
    except the `wait_*` ones."""

    def __init__(self, initial: LiveState) -> None:
        self.cond = threading.Condition()
        self.state = initial  # the newest state, with or without a prompt
        self.pending: LiveState | None = None  # the newest state not yet taken by the worker
        self.outcome: Outcome | None = None
        self.latest_frame: Frame | None = None
        self.closed = False
        self.wakers: set[Callable[[], None]] = set()  # async iterators' wake-up calls
        self.counts = {"received": 0, "generated": 0, "dropped": 0, "failed": 0, "interrupted": 0}
        self.latency = LatencyLog()

    def put(self, state: LiveState) -> None:
        """Make `state` the newest; a state with a prompt replaces (drops) the pending one."""
        with self.cond:
            if self.closed:
                raise FastDiffError("this LiveSession is closed; start a new one to keep generating")
            self.state = state
            if state.prompt is None:
                return
            self.counts["received"] += 1
            self.latency.received(state.version, state.submitted)
            if self.pending is not None:
                self.counts["dropped"] += 1
            self.pending = state
            self.cond.notify_all()

    def take(self) -> LiveState | None:
        """The worker's next state, blocking until there is one; None once closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.pending is not None or self.closed)
            if self.closed:
                return None
            state, self.pending = self.pending, None
            return state

    def superseded(self, *, by_newer: bool) -> bool:
        """Whether the generation in progress is no longer wanted: closing, or (if `by_newer`) a newer state."""
        with self.cond:
            return self.closed or (by_newer and self.pending is not None)

    def count(self, name: str) -> None:
        with self.cond:
            self.counts[name] += 1

    def publish(
        self, state: LiveState, make: Callable[[int, float], Frame] | None, error: FastDiffError | None
    ) -> Frame | None:
        """Record the outcome of `state`'s generation (`make(number, now)` builds its frame) and wake readers."""
        now = time.perf_counter()
        with self.cond:
            number = 1 if self.outcome is None else self.outcome.number + 1
            frame = None if make is None else make(number, now)
            if frame is not None:
                self.latest_frame = frame
            self.counts["generated" if frame is not None else "failed"] += 1
            self.latency.served(state.version, now, shown=frame is not None)
            self.outcome = Outcome(number, state.version, frame, error)
            self.cond.notify_all()
            wakers = list(self.wakers)
        for wake in wakers:
            wake()
        return frame

    def wait_version(self, timeout: float | None) -> Outcome:
        """The outcome of the newest state, waiting up to `timeout` seconds for it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            target = self.state
            if target.prompt is None:
                raise FastDiffError("nothing to wait for: call update(prompt=...) first")
            while self.outcome is None or self.outcome.version < target.version:
                if self.closed:
                    raise FastDiffError(f"the session was closed before the frame for {target.prompt!r} was made")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no frame for {target.prompt!r} within {timeout} s")
                self.cond.wait(remaining)
            return self.outcome

    def wait_after(self, seen: int, timeout: float | None) -> Outcome | None:
        """The newest outcome if it is newer than number `seen`, waiting up to `timeout`; None when closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.newer_than(seen) is not None or self.closed, timeout)
            return self.newer_than(seen)

    def newer_than(self, seen: int) -> Outcome | None:
        outcome = self.outcome
        return outcome if outcome is not None and outcome.number > seen else None

    def start_mark(self) -> int:
        """Where an iterator starts: just before the current state's outcome if it exists, else after the newest."""
        with self.cond:
            if self.outcome is None:
                return 0
            return self.outcome.number - (self.outcome.version >= self.state.version)

    def close(self) -> list[Callable[[], None]]:
        """Refuse further states, drop the pending one; returns the wake-ups to call (outside the lock)."""
        with self.cond:
            if not self.closed and self.pending is not None:
                self.counts["dropped"] += 1
                self.pending = None
            self.closed = True
            self.cond.notify_all()
            return list(self.wakers)

    def stats(self) -> LiveStats:
        with self.cond:
            return LiveStats(
                **self.counts, latency_p50=self.latency.quantile(0.50), latency_p95=self.latency.quantile(0.95)
            )
