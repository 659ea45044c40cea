"""Batch runs on this machine: in the driver's own process (`--workers 1`) or in N spawned worker processes, each
with its own generator and `cores // N` torch threads. At most two chunks per worker are in flight, so a
million-prompt list never sits in the pool's queue; results come back in completion order."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from ...errors import FastDiffError
from .prompts import Job
from .worker import LoadSpec, Made, Worker

__all__ = ["cpu_cores", "run_in_process", "run_process_pool"]

_WORKER: Worker | None = None  # the worker of this spawned process


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, which a container or `taskset` narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_in_process(spec: LoadSpec, chunks: Iterable[list[Job]]) -> Iterator[Made]:
    """One worker in this process, chunk after chunk."""
    return map(Worker(spec).make, chunks)


def _start(spec: LoadSpec) -> None:
    global _WORKER
    _WORKER = Worker(spec)


def _make(chunk: list[Job]) -> Made:
    assert _WORKER is not None, "the pool's initializer makes the worker"
    return _WORKER.make(chunk)


def run_process_pool(spec: LoadSpec, chunks: Iterable[list[Job]], *, workers: int) -> Iterator[Made]:
    """`workers` spawned processes (spawn: no forked torch or CUDA state)."""
    spec = replace(spec, threads=spec.threads or max(1, cpu_cores() // workers))
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start, initargs=(spec,))
    pending: set[Future[Made]] = set()
    todo = iter(chunks)
    try:
        while True:
            while len(pending) < 2 * workers and (chunk := next(todo, None)) is not None:
                pending.add(pool.submit(_make, chunk))
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()
    except BrokenProcessPool as err:
        raise FastDiffError(
            f"a worker process died ({err}); re-run the same command to resume (what is written is kept), with "
            "fewer --workers if it ran out of memory"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
