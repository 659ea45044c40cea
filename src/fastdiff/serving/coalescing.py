"""Coalescing a generator's concurrent calls, with no thread of its own and no added wait for a lone call: a caller
that finds the model idle leads: it runs the oldest queued call with every compatible queued call (same `batch_key`,
up to `max_batch` images), hands each caller its result, and leads again until its own call is done (continuous
batching, as LLM servers do it). A solo call (its own generator or step callback, `coalesce=False`) runs alone."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import FastDiffError

__all__ = ["DEFAULT_MAX_BATCH", "BatchStats", "Coalescer", "check_batching", "percentile", "run_each"]

# `max_batch` by device type; 1 (never coalesce) where batching does not pay. CUDA: a batch of 8 costs far less than 8
# calls. CPU (docs/serving.md): the real SDXL-Turbo is compute-bound, 4 coalesced callers made 1.01x the serial loop.
DEFAULT_MAX_BATCH = {"cuda": 8}

R = TypeVar("R")  # a request
T = TypeVar("T")  # its result
WAITS_KEPT = 4096


@dataclass(frozen=True)
class BatchStats:
    """Counters of a generator's coalescing: calls, pipeline batches, mean images per batch, queue wait (s)."""

    calls: int
    batches: int
    mean_batch_size: float
    queue_wait_p50: float
    queue_wait_p95: float


@dataclass(eq=False)
class _Call(Generic[R, T]):
    requests: list[R]  # run in one batch, never split
    key: Hashable
    size: int
    solo: bool
    queued: float = field(default_factory=time.perf_counter)
    future: Future[list[T]] = field(default_factory=Future)


class Coalescer(Generic[R, T]):
    """Runs `run(requests)` (one result per request, in order) for batches of compatible queued calls: `key(request)`
    says which requests may share a batch, `size(request)` how many images one adds."""

    def __init__(
        self,
        run: Callable[[Sequence[R]], Sequence[T]],
        *,
        key: Callable[[R], Hashable],
        size: Callable[[R], int],
        max_batch: int,
        max_wait_ms: float = 0.0,
    ) -> None:
        self._run, self._key, self._size = run, key, size
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        self._cond = threading.Condition()
        self._queue: deque[_Call[R, T]] = deque()
        self._leading = False
        self._calls = self._batches = self._images = 0
        self._waits: deque[float] = deque(maxlen=WAITS_KEPT)

    def submit_call(self, requests: Sequence[R], *, solo: bool = False) -> list[T]:
        """Run one call's `requests` (all of one key) in one batch, with others' compatible calls unless `solo`."""
        call: _Call[R, T] = _Call(list(requests), self._key(requests[0]), sum(map(self._size, requests)), solo)
        with self._cond:
            self._queue.append(call)
            self._calls += 1
            self._cond.notify_all()  # a leader waiting for its batch to fill (max_wait_ms) looks again
            self._cond.wait_for(lambda: call.future.done() or not self._leading)
            lead = not call.future.done()
            self._leading = self._leading or lead
        if lead:
            try:
                while (batch := self._next_batch(call)) is not None:
                    run_each(self._run, [(c.requests, c.future) for c in batch])  # outside the queue's lock
                    with self._cond:
                        self._cond.notify_all()
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        return call.future.result()

    def _next_batch(self, own: _Call[R, T]) -> list[_Call[R, T]] | None:
        """The oldest queued call and the compatible ones after it (None once `own` is done)."""
        with self._cond:
            if own.future.done():
                return None
            head = self._queue[0]  # `own` at least is queued
            deadline = time.perf_counter() + self.max_wait_ms / 1000
            while True:
                batch, images = [head], head.size
                for t in self._queue:
                    fits = t.key == head.key and images + t.size <= self.max_batch
                    if not head.solo and t is not head and not t.solo and fits:
                        batch.append(t)
                        images += t.size
                left = deadline - time.perf_counter()
                if head.solo or images >= self.max_batch or left <= 0:
                    break
                self._cond.wait(left)  # throughput first: give the batch time to fill
            now = time.perf_counter()
            for t in batch:
                self._queue.remove(t)
                self._waits.append(now - t.queued)
            self._batches += 1
            self._images += images
            return batch

    def stats(self) -> BatchStats:
        """A snapshot of the counters."""
        with self._cond:
            waits, calls, batches, images = list(self._waits), self._calls, self._batches, self._images
        p50, p95 = (percentile(waits, q) or 0.0 for q in (0.5, 0.95))
        return BatchStats(calls, batches, images / batches if batches else 0.0, p50, p95)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank `q`-quantile of `values` (None when empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else None


def run_each(run: Callable[[Sequence[R]], Sequence[T]], calls: Sequence[tuple[list[R], Future[list[T]]]]) -> None:
    """Settle each call's future with its results from `run` of all the calls' requests at once; on failure, each
    call alone, so that a bad one fails by itself and the others get their results."""
    try:
        results = list(run([r for requests, _ in calls for r in requests]))
    except BaseException as err:
        if len(calls) == 1:
            calls[0][1].set_exception(err)
        else:
            for call in calls:
                run_each(run, [call])
        return
    for requests, future in calls:
        future.set_result(results[: len(requests)])
        results = results[len(requests) :]


def check_batching(max_batch: object, max_wait_ms: object) -> tuple[int, float]:
    """`max_batch` ≥ 1 (1: never coalesce) and `max_wait_ms` in [0, 60000), or a `FastDiffError`."""
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise FastDiffError(f"max_batch must be an int ≥ 1 (1 turns coalescing off), got {max_batch!r}")
    if not isinstance(max_wait_ms, (int, float)) or isinstance(max_wait_ms, bool) or not 0 <= max_wait_ms < 60_000:
        raise FastDiffError(f"max_wait_ms must be a number of milliseconds in [0, 60000), got {max_wait_ms!r}")
    return max_batch, float(max_wait_ms)
