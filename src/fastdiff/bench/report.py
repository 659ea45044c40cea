"""Benchmark output: run metadata, a console table, JSON, Markdown and a stacked-bar plot of the stages."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ..devices import cpu_count, cpu_has_native_bf16
from ..errors import FastDiffError
from .flops import cpu_matmul_tflops
from .runner import BenchRow, RunConfig
from .timing import BUSY_CORES, PRESSURE_FAULTS, auto_cpu_threads, busy_cpus_elsewhere

__all__ = [
    "Meta",
    "collect_meta",
    "contended",
    "device_description",
    "format_table",
    "pressured",
    "read_json",
    "to_markdown",
    "write_json",
    "write_plot",
]

STAGE_COLORS = {"encode": "#4c72b0", "denoise": "#dd8452", "decode": "#55a868"}
Meta = dict[str, Any]
RANDOM_NOTE = "random weights on the real architectures: timings are real, images are noise"
TINY_NOTE = "the real wiring at toy widths, random weights: for smoke tests only, not comparable to real timings"


def device_description(device: torch.device) -> str:
    """ "NVIDIA H100 80GB HBM3" on a GPU, "cpu: AMD EPYC (2 cores)" on the CPU (its name as OpenVINO gives it)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            import openvino as ov

            model = str(ov.Core().get_property("CPU", "FULL_DEVICE_NAME"))
        except ImportError:
            model = platform.processor() or platform.machine()
        return f"cpu: {model} ({cpu_count()} cores)"
    return device.type


def _commit() -> str | None:
    """fastdiff's own commit where it runs from a checkout (not that of the directory the bench was started in)."""
    command = ["git", "rev-parse", "--short", "HEAD"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def collect_meta(config: RunConfig, *, weights: str) -> Meta:
    """Everything needed to reproduce or compare a run: device, versions, weights, dtype, commit, date."""
    import diffusers

    from .. import __version__

    return {
        "device": config.device_name or device_description(config.device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "fastdiff": __version__,
        "python": platform.python_version(),
        "weights": weights,
        "dtype": str(config.dtype).removeprefix("torch."),
        "size": f"{config.width}x{config.height}" if config.height or config.width else "native",
        "repeats": config.repeats,
        "warmup": config.warmup,
        "repeat_prompt": config.repeat_prompt,
        "commit": _commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "note": {"random": RANDOM_NOTE, "tiny": TINY_NOTE}.get(weights.split(" ")[0], ""),
        **_cpu_context(config.device, config.threads),
    }


def _cpu_context(device: torch.device, threads: int | None) -> dict[str, Any]:
    """On the CPU, how busy the other cores were (a shared CPU inflates every timing) and the rates this CPU
    multiplies at in fp32 and, where it computes bf16 natively, bf16: the ceiling each row's TFLOP/s is under."""
    if device.type != "cpu":
        return {}
    dtypes = [torch.float32, *((torch.bfloat16,) if cpu_has_native_bf16() else ())]
    before = torch.get_num_threads()
    torch.set_num_threads(threads or auto_cpu_threads())  # the rows' threads: --threads, else the idle cores
    try:
        rates = {str(dtype).removeprefix("torch."): cpu_matmul_tflops(dtype) for dtype in dtypes}
    finally:
        torch.set_num_threads(before)
    return {"busy_cpus_elsewhere_at_start": busy_cpus_elsewhere(), "cpu_matmul_tflops": rates}


def read_json(path: str | Path) -> tuple[list[BenchRow], Meta]:
    """Rows and metadata of a file `write_json` wrote (fields of other versions, such as `memory_stall_s`, left out)."""
    known = {field.name for field in dataclasses.fields(BenchRow)}
    try:
        data = json.loads(Path(path).read_text())
        return [BenchRow(**{k: v for k, v in row.items() if k in known}) for row in data["rows"]], data["meta"]
    except (OSError, ValueError, KeyError, TypeError) as err:  # an unreadable or foreign file
        raise FastDiffError(f"cannot read {path}: {err}") from None


def write_json(path: str | Path, rows: list[BenchRow], meta: Meta) -> Path:
    """Write `{"meta": {...}, "rows": [...]}` to `path` (parents created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"meta": meta, "rows": [row.as_dict() for row in rows]}, indent=2) + "\n")
    return target


def seconds(value: float | None) -> str:
    """ "1.23 s", "45.6 ms", "-" for None."""
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1e3:.1f} ms" if value < 0.1 else f"{value * 1e3:.0f} ms"


HEADERS = (
    "scenario", "steps", "size", "p50", "p95", "min", "encode", "denoise", "(per UNet call)", "decode",
    "load", "warm-up", "peak mem", "disk faults", "other CPU", "GFLOP", "TFLOP/s", "img/s", "speedup",
    "vs diffusers", "threads",
)  # fmt: skip


def pressured(row: BenchRow) -> bool:
    """Whether the row's median timed run read `PRESSURE_FAULTS` or more pages back from disk."""
    return row.major_faults is not None and row.major_faults >= PRESSURE_FAULTS


def contended(row: BenchRow) -> bool:
    """Whether other tasks kept `BUSY_CORES` or more busy during the row's median timed run."""
    return row.other_cpu_cores is not None and row.other_cpu_cores >= BUSY_CORES


def _notes(rows: list[BenchRow], meta: Meta) -> list[str]:
    """The note on the weights, the skipped scenarios, and one line per row whose timed runs waited for memory
    (`pressured`) or shared the CPU (`contended`): its time is not what it would be alone, nor any ratio to it."""
    notes = [meta["note"]] if meta.get("note") else []
    notes += [f"skipped {s['scenario']}: {s['reason']}" for s in meta.get("skipped", [])]
    notes += [
        f"memory pressure: {row.scenario} read {row.major_faults:.0f} pages back from disk per timed run (median "
        "major page faults): they were evicted and read again, so it ran slower than alone and every ratio to it "
        "is off by as much; time it in a process of its own "
        f"(--scenarios {row.scenario}) or with fewer rows"
        for row in rows
        if pressured(row)
    ]
    notes += [
        f"shared CPU: while {row.scenario} ran, other tasks kept {row.other_cpu_cores:.2f} cores busy (median; "
        "another process, kswapd reclaiming memory, the hypervisor's steal), so it ran slower than alone"
        for row in rows
        if contended(row)
    ]
    return notes


def _cells(row: BenchRow) -> list[str]:
    stages, latency = row.stages_s, row.latency_s

    def shown(value: float | None, template: str) -> str:
        return "-" if value is None else template.format(value)

    tflops = f"{row.tflops_per_s:.3f}" + (f" ({row.peak_fraction:.0%})" if row.peak_fraction is not None else "")
    return [
        row.scenario, str(row.steps), f"{row.width}x{row.height}", seconds(latency["p50"]), seconds(latency["p95"]),
        seconds(latency["min"]), seconds(stages["encode"]), seconds(stages["denoise"]),
        f"{seconds(row.per_unet_call_s)} ×{row.unet_calls}", seconds(stages["decode"]),
        seconds(row.load_s) + (" (shared)" if row.load_shared else ""), seconds(row.warmup_s),
        f"{row.peak_memory_bytes / 2**30:.2f} GiB", shown(row.major_faults, "{:.0f}"),
        shown(row.other_cpu_cores, "{:.2f}"), f"{row.gflops:.1f}", tflops, f"{row.images_per_s:.3f}",
        shown(row.speedup_vs_baseline, "{:.2f}×"), shown(row.speedup_vs_diffusers, "{:.2f}×"),
        shown(row.threads, "{}"),
    ]  # fmt: skip


def _header(meta: Meta) -> str:
    """The run's facts, the first line of the table and of the Markdown."""
    facts = [
        meta["device"], meta["dtype"], f"weights: {meta['weights']}", f"size: {meta['size']}",
        f"{meta['repeats']} timed runs after {meta['warmup']} warm-up", f"torch {meta['torch']}",
        f"diffusers {meta['diffusers']}", meta["date"],
        "one prompt for every run (cache hits)" if meta.get("repeat_prompt") else "a new prompt per run",
    ]  # fmt: skip
    if rates := meta.get("cpu_matmul_tflops"):
        facts.append("matmul TFLOP/s: " + ", ".join(f"{dtype} {rate:.3f}" for dtype, rate in rates.items()))
    return " | ".join(facts)


def format_table(rows: list[BenchRow], meta: Meta) -> str:
    """The console table: the run's facts, the rows, then the notes."""
    table = [list(HEADERS), *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    footer = "stages are p50 of each stage; 'hooks' rows are split at module boundaries (plain diffusers)"
    return "\n".join([_header(meta), *lines, *_notes(rows, meta), footer])


def to_markdown(rows: list[BenchRow], meta: Meta) -> str:
    """A GitHub Markdown table of the rows, after the run's facts and the notes."""
    lines = [f"*{_header(meta)}*", "", *(f"> {note}\n" for note in _notes(rows, meta))]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|---" + "|---:" * (len(HEADERS) - 1) + "|")
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_plot(path: str | Path, rows: list[BenchRow], meta: Meta, *, log_scale: bool = False) -> Path:
    """Stacked horizontal bars of each scenario's p50 stage times (matplotlib, from the `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("--plot needs matplotlib: pip install 'fastdiff[bench]'") from err
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 2.2))
    labels = [row.scenario for row in reversed(rows)]
    # A log axis has no zero: bars start at half the shortest first stage (segment widths are then not to scale).
    shortest = min((r.stages_s["encode"] for r in rows if r.stages_s["encode"] > 0), default=2e-3)
    floor = shortest / 2 if log_scale else 0.0
    left = [floor] * len(rows)
    for stage, color in STAGE_COLORS.items():
        widths = [row.stages_s[stage] for row in reversed(rows)]
        ax.barh(labels, widths, left=left, color=color, label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, row in enumerate(reversed(rows)):
        speedup = f"  {row.speedup_vs_baseline:.1f}× vs {meta['baseline']}" if row.speedup_vs_baseline else ""
        ax.text(left[y], y, f" {seconds(row.latency_s['p50'])}{speedup}", va="center", fontsize=8)
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlim(left=floor, right=max(left) * (8 if log_scale else 1.45))
    ax.set_xlabel("seconds per image (p50 of each stage)" + (", log scale" if log_scale else ""))
    ax.set_title(f"fastdiff bench — {meta['device']}, {meta['dtype']}, {meta['size']}, weights: {meta['weights']}")
    ax.legend(ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.2 / len(rows)), frameon=False)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target
