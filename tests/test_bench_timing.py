"""The timing core: percentiles, the synchronizing clock, peak memory."""

from __future__ import annotations

import mmap
import os
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from fastdiff import devices
from fastdiff.bench import timing
from fastdiff.bench.timing import PeakMemory, make_clock, percentile, round_order, summarize, synchronize


@pytest.mark.parametrize(("q", "expected"), [(0, 1.0), (50, 2.5), (95, 3.85), (100, 4.0), (25, 1.75)])
def test_percentile_interpolates_between_ranks(q: float, expected: float) -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], q) == pytest.approx(expected)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6])
def test_round_order_lets_every_row_follow_every_other_equally_often(rows: int) -> None:
    rounds = rows if rows % 2 == 0 else 2 * rows  # one full square
    orders = [round_order(rows, r) for r in range(rounds)]
    assert all(sorted(order) == list(range(rows)) for order in orders)  # each round runs every row once
    for place in range(rows):  # every row in every place equally often
        assert sorted(order[place] for order in orders) == sorted(list(range(rows)) * (rounds // rows))
    follows = [(order[i], order[i + 1]) for order in orders for i in range(rows - 1)]
    pairs = [(a, b) for a in range(rows) for b in range(rows) if a != b]
    assert sorted(follows) == sorted(pairs * (rounds // rows))  # each ordered pair equally often
    assert round_order(rows, rounds) == orders[0]  # then it repeats


def test_percentile_matches_numpy() -> None:
    rng = random.Random(0)
    for n in (1, 2, 3, 7, 20):
        values = [rng.uniform(0, 10) for _ in range(n)]
        for q in (0, 5, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_rejects_bad_input(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summarize_reports_p50_p95_min() -> None:
    summary = summarize([0.3, 0.1, 0.2])
    assert summary == {"p50": pytest.approx(0.2), "p95": pytest.approx(0.29), "min": 0.1}


def test_clock_synchronizes_before_every_read() -> None:
    events: list[str] = []
    ticks = iter([1.0, 3.5])

    def sync(device: torch.device) -> None:
        events.append(f"sync {device}")

    def timer() -> float:
        events.append("read")
        return next(ticks)

    clock = make_clock(torch.device("cpu"), sync=sync, timer=timer)
    assert clock() == 1.0 and clock() == 3.5
    assert events == ["sync cpu", "read", "sync cpu", "read"]


def test_default_clock_uses_module_synchronize(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[torch.device] = []
    monkeypatch.setattr(devices, "synchronize", calls.append)
    clock = make_clock(torch.device("cpu"))
    clock(), clock(), clock()
    assert calls == [torch.device("cpu")] * 3


def test_synchronize_waits_for_cuda_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[Any] = []
    monkeypatch.setattr(torch.cuda, "synchronize", waited.append)
    synchronize(torch.device("cpu"))
    assert waited == []
    synchronize(torch.device("cuda", 1))
    assert waited == [torch.device("cuda", 1)]


def test_cpu_peak_memory_is_per_region() -> None:
    memory = PeakMemory(torch.device("cpu"))
    memory.reset()
    # An anonymous mapping of its own, so that freeing it surely unmaps it (an allocator may keep a freed tensor's
    # pages resident for reuse, and then no peak can drop).
    block = mmap.mmap(-1, 128 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):  # touched page by page: 128 MiB resident
        block[offset] = 1
    high = memory.read()
    block.close()  # munmap: the resident size drops, the peak of the region does not
    memory.reset()
    low = memory.read()
    assert memory.kind == "process-rss"
    assert high - low >= 96 * 2**20


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs posix_fadvise to drop pages from the cache")
def test_major_faults_count_pages_read_back_from_disk(tmp_path: Path) -> None:
    """A page of a file the kernel dropped from its cache is read back on first touch: a major fault of ours."""
    path = tmp_path / "pages"
    with path.open("wb") as file:
        file.write(b"\1" * 64 * mmap.PAGESIZE)
        file.flush()
        os.fsync(file.fileno())  # written back: clean pages, which the kernel may drop
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as block:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache, as under pressure
        before = timing.major_faults()
        assert sum(block[offset] for offset in range(0, len(block), mmap.PAGESIZE)) == 64
        after = timing.major_faults()
    assert before is not None and after is not None
    assert after > before


def test_busy_cpu_seconds_counts_this_machines_work() -> None:
    before, own = timing.busy_cpu_seconds(), time.process_time()
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:
        pass
    spent = time.process_time() - own
    assert timing.busy_cpu_seconds() - before >= 0.5 * spent  # it counts our own work too


def test_cuda_peak_memory_uses_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 12345)
    memory = PeakMemory(torch.device("cuda"))
    memory.reset()
    assert memory.read() == 12345
    assert memory.kind == "cuda-allocator"
    assert calls == ["reset", "sync"]


def test_busy_cpus_and_auto_threads_count_what_others_use(monkeypatch: pytest.MonkeyPatch) -> None:
    busy, own = iter([10.0, 10.8]), iter([1.0, 1.2])  # the machine's CPU seconds and ours, before and after
    monkeypatch.setattr(timing, "busy_cpu_seconds", lambda: next(busy))
    monkeypatch.setattr(timing.time, "process_time", lambda: next(own))
    monkeypatch.setattr(timing.time, "sleep", lambda seconds: None)
    assert timing.busy_cpus_elsewhere(interval=0.3) == 2  # (0.8 - 0.2) s of others' work in 0.3 s
    monkeypatch.setattr(timing, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    for others, threads in ((0, 4), (1, 3), (3, 1), (7, 1)):
        monkeypatch.setattr(timing, "busy_cpus_elsewhere", lambda others=others: others)
        assert timing.auto_cpu_threads() == threads


def test_cpu_matmul_rate_is_the_flops_over_the_median_matmul_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.benchmark import Timer

    from fastdiff.bench import flops

    assert 0 < flops.cpu_matmul_tflops(torch.float32, size=64) < 1e3  # really timed, on torch's threads
    asked: list[float] = []

    def autorange(timer: Timer, min_run_time: float) -> Any:
        asked.append(min_run_time)
        return SimpleNamespace(median=0.5)  # torch.utils.benchmark's median of its timed blocks

    monkeypatch.setattr(Timer, "blocked_autorange", autorange)
    assert flops.cpu_matmul_tflops(torch.float32, size=64) == pytest.approx(2 * 64**3 / 0.5 / 1e12)
    assert asked == [1.0]
