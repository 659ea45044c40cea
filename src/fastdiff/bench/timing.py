"""The timing core: a clock that synchronizes the device before every read (as in gpt-fast: a CUDA launch returns
before its kernel runs), percentiles, peak memory, and what else the machine did meanwhile."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from ..devices import cpu_count, make_clock, synchronize
from ..memory import available_memory

__all__ = [
    "BUSY_CORES",
    "PRESSURE_FAULTS",
    "Clock",
    "Contention",
    "PeakMemory",
    "auto_cpu_threads",
    "available_memory",
    "busy_cpu_seconds",
    "busy_cpus_elsewhere",
    "cpu_count",
    "major_faults",
    "make_clock",
    "percentile",
    "round_order",
    "summarize",
    "synchronize",
]

Clock = Callable[[], float]

# A row whose median timed run read this many pages back from disk (major page faults: its weights or libraries
# evicted under memory pressure) ran slower than alone; a row whose working set fits reads none.
PRESSURE_FAULTS = 1000
# A row whose median timed run had other tasks (another process, kswapd reclaiming memory, the hypervisor's
# steal) keep this many cores busy beside it shared the CPU: on 2 cores a tenth of a core is 5 % of it.
BUSY_CORES = 0.1


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 ≤ q ≤ 100), interpolated linearly between ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(values, q))


def round_order(rows: int, round_: int) -> list[int]:
    """The order in which `rows` interleaved rows run in round `round_`: a balanced Latin square (Williams, 1949).
    Over `rows` rounds (twice as many for an odd count) every row runs right after every other one equally often
    and once in every place, so no row always inherits one predecessor's evicted pages and freed memory."""
    zigzag = [(i + 1) // 2 if i % 2 else (rows - i // 2) % rows for i in range(rows)]  # 0, 1, n-1, 2, n-2, ...
    order = [(row + round_) % rows for row in zigzag]
    return order[::-1] if rows % 2 and (round_ // rows) % 2 else order


def summarize(values: Sequence[float]) -> dict[str, float]:
    """`{"p50": …, "p95": …, "min": …}` of steady-state seconds (warm-up runs left out): a row's `latency_s`."""
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "min": min(values)}


class PeakMemory:
    """Peak memory over a region: the CUDA caching allocator's peak on a GPU, else the process's peak RSS (reset
    per region on Linux by writing "5" to /proc/self/clear_refs; elsewhere the process-lifetime peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda-allocator" if device.type == "cuda" else "process-rss"

    def reset(self) -> None:
        """Start a new measurement region."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:  # not Linux, or a read-only /proc in a sandbox: the process-lifetime peak
            self.kind = "process-rss-lifetime"

    def read(self) -> int:
        """Peak bytes since the last `reset`."""
        if self.device.type == "cuda":
            synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        usage = _rusage()
        if usage is None:
            return 0
        return int(usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024)  # bytes on macOS, else KiB


def _rusage() -> Any:
    """This process's `getrusage` (peak RSS, major page faults); None on Windows, which has none."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF)


def busy_cpus_elsewhere(*, interval: float = 0.3) -> int:
    """How many CPUs other tasks keep busy right now: the machine's busy CPU time less this process's, over
    `interval` seconds (as `Contention` counts it for a timed run)."""
    contention = Contention()
    contention.start()
    time.sleep(interval)
    contention.stop(interval)
    return round(contention.other_cores[0])


def auto_cpu_threads() -> int:
    """torch's thread count, lowered to the CPUs nobody else is using (at least 1): intra-op threads wait for each
    other at every parallel region, a time slice each where another process holds a core (80× for a tiny UNet)."""
    return max(1, min(torch.get_num_threads(), cpu_count() - busy_cpus_elsewhere()))


def major_faults() -> int | None:
    """Page faults this process has served by reading the disk so far (evicted pages read back); None off Unix."""
    usage = _rusage()
    return None if usage is None else int(usage.ru_majflt)


def busy_cpu_seconds() -> float:
    """CPU seconds every task on this machine has used since boot (user, nice, system, irq, softirq), plus the
    seconds the hypervisor gave this machine's CPUs to others (steal)."""
    times = psutil.cpu_times()
    return float(sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal")))


class Contention:
    """What else the machine did during each timed run: the pages this process read back from disk, and the cores
    other tasks kept busy (the machine's CPU time less ours). `start()`, `stop(seconds)`, `medians()`."""

    def __init__(self) -> None:
        self.faults: list[float] = []
        self.other_cores: list[float] = []
        self._before: tuple[int | None, float | None, float] = (None, None, 0.0)

    def start(self) -> None:
        self._before = (major_faults(), busy_cpu_seconds(), time.process_time())

    def stop(self, seconds: float) -> None:
        (faults, busy, own), now = self._before, (major_faults(), busy_cpu_seconds(), time.process_time())
        if faults is not None and now[0] is not None:
            self.faults.append(now[0] - faults)
        if busy is not None and now[1] is not None and seconds > 0:
            others = (now[1] - busy) - (now[2] - own)  # the machine's CPU time less ours
            self.other_cores.append(max(0.0, others) / seconds)

    def medians(self) -> tuple[float | None, float | None]:
        """(median major faults, median other cores) over the runs; None where the machine does not count."""
        faults = percentile(self.faults, 50) if self.faults else None
        cores = percentile(self.other_cores, 50) if self.other_cores else None
        return faults, cores
