"""One worker of a batch run turns jobs into PNG bytes for the driver to write (one process owns the output folder).
It runs in the driver, in N spawned processes (`--workers N`) or on Ray."""

from __future__ import annotations

import contextlib
import io
import itertools
import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ...errors import FastDiffError, routed_warnings
from .prompts import Job

if TYPE_CHECKING:
    from ...generator import FewStepGenerator
    from ...result import GenerationResult

__all__ = ["LoadSpec", "Made", "Outcome", "Worker", "run_process_pool"]


@dataclass(frozen=True)
class LoadSpec:
    """How a worker loads its generator (`FewStepGenerator.from_preset(preset, **options)`) and runs it."""

    preset: str
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    threads: int | None = None  # torch CPU threads of this worker; None keeps the process's setting


@dataclass(frozen=True)
class Outcome:
    """One job's image as PNG bytes with what made it, or the error that refused it."""

    index: int
    png: bytes = b""
    seed: int = 0
    steps: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Made:
    """What one `Worker.make` call returns: its outcomes, the FastDiffWarnings raised meanwhile, or a load error."""

    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fatal: str | None = None


def _outcome(index: int, result: GenerationResult) -> Outcome:
    buffer = io.BytesIO()
    result.images[0].save(buffer, format="PNG")
    return Outcome(index, buffer.getvalue(), result.seed, result.steps, dict(result.timings))


class Worker:
    """Loads its generator on the first `make` (and again after a restart), then makes every job it is given."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._gen: FewStepGenerator | None = None

    def make(self, jobs: list[Job]) -> Made:
        """Make `jobs`: with batch_size > 1, one `gen.map` per run of consecutive jobs with equal options."""
        forwarded: list[str] = []  # FastDiffWarnings go to the driver, which shows each once; the rest warn here
        with routed_warnings(forwarded.append):
            try:
                gen = self._generator()
            except FastDiffError as err:
                return Made(fatal=str(err))
            groups = itertools.groupby(jobs, key=lambda job: sorted(job.options.items()))
            outcomes = [outcome for _, group in groups for outcome in self._make_group(gen, list(group))]
        return Made(outcomes=outcomes, warnings=forwarded)

    def _generator(self) -> FewStepGenerator:
        if self._gen is None:
            import torch

            from ..._quiet import quiet_library_logs
            from ...generator import FewStepGenerator

            if self.spec.threads is not None:
                torch.set_num_threads(self.spec.threads)
            quiet_library_logs()
            self._gen = FewStepGenerator.from_preset(self.spec.preset, **self.spec.options)
        return self._gen

    def _make_group(self, gen: FewStepGenerator, jobs: list[Job]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        if self.spec.batch_size > 1 and len(jobs) > 1:
            prompts, seeds = [job.prompt for job in jobs], [job.seed for job in jobs]
            with contextlib.suppress(FastDiffError):  # a bad job refuses its batch: what is left goes one by one
                results = gen.map(
                    prompts, seeds=seeds, batch_size=self.spec.batch_size, progress=False, **jobs[0].options
                )
                for job, result in zip(jobs, results, strict=True):  # lazily: the images before a bad job are kept
                    outcomes.append(_outcome(job.index, result))
        for job in jobs[len(outcomes) :]:
            try:
                outcomes.append(_outcome(job.index, gen(job.prompt, seed=job.seed, **job.options)))
            except FastDiffError as err:
                outcomes.append(Outcome(job.index, error=str(err)))
        return outcomes


_WORKER: Worker | None = None  # the worker of this spawned process


def _start(spec: LoadSpec) -> None:
    global _WORKER
    _WORKER = Worker(spec)


def _make(chunk: list[Job]) -> Made:
    assert _WORKER is not None, "the pool's initializer makes the worker"
    return _WORKER.make(chunk)


def run_process_pool(spec: LoadSpec, chunks: Iterable[list[Job]], *, workers: int) -> Iterator[Made]:
    """`workers` spawned processes (spawn: no forked torch or CUDA state), each chunk yielded as it is made."""
    from ...devices import cpu_count  # devices imports torch: `fastdiff batch --help` and its errors come first

    spec = replace(spec, threads=spec.threads or max(1, cpu_count() // workers))
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start, initargs=(spec,))
    try:
        for future in as_completed([pool.submit(_make, chunk) for chunk in chunks]):
            yield future.result()
    except BrokenProcessPool as err:
        raise FastDiffError(
            f"a worker process died ({err}); re-run the same command to resume (what is written is kept), with "
            "fewer --workers if it ran out of memory"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
