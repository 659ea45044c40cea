"""Coalescing a generator's concurrent calls, with no thread of its own and no added wait for a lone call: a caller
that finds the model idle leads: it runs the oldest queued call with every compatible queued call (same `batch_key`,
up to `max_batch` images), hands each caller its result, and leads again until its own call is done (continuous
batching, as LLM servers do it). A solo call (its own generator or step callback, `coalesce=False`) runs alone."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from ..errors import FastDiffError

if TYPE_CHECKING:
    import torch

    from ..result import GenerationResult
    from ..validation import Request

__all__ = ["DEFAULT_MAX_BATCH", "BatchStats", "Coalescer", "check_batching", "coalescer_for", "outcomes"]

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
class _Ticket(Generic[R, T]):
    requests: list[R]  # one call's: run in one batch, never split
    key: Hashable
    size: int
    solo: bool
    queued: float = field(default_factory=time.perf_counter)
    done: bool = False
    results: list[T] | None = None
    error: BaseException | None = None


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
        self._queue: deque[_Ticket[R, T]] = deque()
        self._leading = False
        self._calls = self._batches = self._images = 0
        self._waits: deque[float] = deque(maxlen=WAITS_KEPT)

    def submit_call(self, requests: Sequence[R], *, solo: bool = False) -> list[T]:
        """Run one call's `requests` (all of one key) in one batch, with others' compatible calls unless `solo`."""
        ticket: _Ticket[R, T] = _Ticket(list(requests), self._key(requests[0]), sum(map(self._size, requests)), solo)
        with self._cond:
            self._queue.append(ticket)
            self._calls += 1
            self._cond.notify_all()  # a leader waiting for its batch to fill (max_wait_ms) looks again
            self._cond.wait_for(lambda: ticket.done or not self._leading)
            lead = not ticket.done
            self._leading = self._leading or lead
        if lead:
            try:
                while (batch := self._next_batch(ticket)) is not None:
                    done = outcomes(self._run, [t.requests for t in batch])  # outside the queue's lock
                    with self._cond:
                        for t, (results, error) in zip(batch, done, strict=True):
                            t.results, t.error, t.done = results, error, True
                        self._cond.notify_all()
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if ticket.error is not None:
            raise ticket.error
        assert ticket.results is not None
        return ticket.results

    def _next_batch(self, own: _Ticket[R, T]) -> list[_Ticket[R, T]] | None:
        """The oldest queued call and the compatible ones after it (None once `own` is done)."""
        with self._cond:
            if own.done:
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
            waits = sorted(self._waits)
            calls, batches, images = self._calls, self._batches, self._images

        def pick(q: float) -> float:
            return waits[min(len(waits) - 1, int(q * len(waits)))] if waits else 0.0

        return BatchStats(calls, batches, images / batches if batches else 0.0, pick(0.5), pick(0.95))


def outcomes(
    run: Callable[[Sequence[R]], Sequence[T]], calls: list[list[R]]
) -> list[tuple[list[T] | None, BaseException | None]]:
    """`run` of all the calls' requests at once; on failure, each call alone, so that a bad one fails by itself and
    the others get their results."""
    try:
        results = list(run([r for call in calls for r in call]))
    except BaseException as err:
        if len(calls) == 1:
            return [(None, err)]
        return [outcomes(run, [call])[0] for call in calls]
    out: list[tuple[list[T] | None, BaseException | None]] = []
    for call in calls:
        out.append((results[: len(call)], None))
        results = results[len(call) :]
    return out


def check_batching(max_batch: object, max_wait_ms: object) -> tuple[int, float]:
    """`max_batch` ≥ 1 (1: never coalesce) and `max_wait_ms` in [0, 60000), or a `FastDiffError`."""
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise FastDiffError(f"max_batch must be an int ≥ 1 (1 turns coalescing off), got {max_batch!r}")
    if not isinstance(max_wait_ms, (int, float)) or isinstance(max_wait_ms, bool) or not 0 <= max_wait_ms < 60_000:
        raise FastDiffError(f"max_wait_ms must be a number of milliseconds in [0, 60000), got {max_wait_ms!r}")
    return max_batch, float(max_wait_ms)


def coalescer_for(
    run: Callable[[Sequence[Request]], list[GenerationResult]],
    *,
    device: torch.device,
    max_batch: int | None,
    max_wait_ms: float,
) -> Coalescer[Request, GenerationResult] | None:
    """The queue that batches a generator's concurrent calls into `run` (its one pipeline call, under its lock), or
    None where its calls only take turns: `max_batch` None is by device (`DEFAULT_MAX_BATCH`: 8 on CUDA, else 1)."""
    from ..denoising import batch_key  # torch: imported with the generator, not with `fastdiff.serving`

    batch, wait = check_batching(DEFAULT_MAX_BATCH.get(device.type, 1) if max_batch is None else max_batch, max_wait_ms)
    if batch == 1 and wait and max_batch is None:
        raise FastDiffError(
            f"max_wait_ms waits for a batch to fill, and calls on {device.type} are not batched by default (no "
            "faster there, docs/serving.md): pass max_batch=4 with it, or drop max_wait_ms"
        )
    if batch == 1:
        return None
    return Coalescer(run, key=batch_key, size=lambda r: r.num_images, max_batch=batch, max_wait_ms=wait)
