"""`fastdiff bench` (`add_bench_arguments`, `run_bench`): torch loads only once the arguments, the scenarios and
(for `--weights hub`) the hub have been checked, so an offline machine hears what to do at once."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FastDiffError
from .scenarios import DEFAULT_SCENARIOS, OPTIONAL_SCENARIOS, Scenario, parse_scenarios

if TYPE_CHECKING:
    from .report import Meta
    from .runner import BenchRow, RunConfig

__all__ = ["add_bench_arguments", "run_bench"]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `bench` options to `parser`."""
    parser.add_argument(
        "--weights",
        choices=("random", "hub", "tiny"),
        type=lambda value: "hub" if value == "real" else value,  # "real" reads as the weights' kind, so it works too
        default="random",
        help="random: the real architectures with random weights, nothing downloaded (default); hub (or real): real "
        "weights from the Hugging Face cache/hub; tiny: the real wiring at toy widths (smoke tests only)",
    )
    parser.add_argument("--cache-dir", default=None, help="hub cache for --weights hub (default: HF_HOME's)")
    parser.add_argument(
        "--weights-dir",
        default=None,
        metavar="DIR",
        help="for --weights random: write the random weights to DIR once and memory-map them from there, as "
        "from_pretrained maps a checkpoint (page cache, not process memory: an engine's compiled copy fits beside)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--dtype", default=None, help="float32, float16 or bfloat16 (default: float16 on a GPU, float32 on the CPU)"
    )
    parser.add_argument("--height", type=int, default=None, help="override every scenario's native height")
    parser.add_argument("--width", type=int, default=None, help="override every scenario's native width")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=list(DEFAULT_SCENARIOS),
        metavar="SCENARIO",
        help="PRESET@STEPS, diffusers:PRESET@STEPS, openvino:PRESET@STEPS or fastdiff:LEVEL[+int8|+int8-full]:"
        f"PRESET@STEPS (default: {' '.join(DEFAULT_SCENARIOS)}; "
        f"also e.g. {' '.join(OPTIONAL_SCENARIOS)} or any preset name)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per scenario (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs, timed apart (default 1)")
    parser.add_argument(
        "--repeat-prompt",
        action="store_true",
        help="every run uses the same prompt, so fastdiff's prompt-embedding cache hits as in a live session "
        "(default: a new prompt per run, so the text encoders always run)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's count, lowered to the cores other processes leave idle; decided once "
        "for rows that run interleaved)",
    )
    parser.add_argument("--json", dest="json_path", default=None, metavar="FILE", help="write rows and metadata")
    parser.add_argument("--markdown", default=None, metavar="FILE", help="write the table as Markdown")
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="stacked bars by stage (needs matplotlib)")
    parser.add_argument("--log-scale", action="store_true", help="log time axis for --plot")
    parser.add_argument(
        "--from-json", default=None, metavar="FILE", help="no run: render the table/--markdown/--plot of a --json file"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_arguments(args: argparse.Namespace) -> None:
    if args.weights_dir and args.weights != "random":
        raise FastDiffError(f"--weights-dir is for --weights random, not {args.weights}")
    for name, minimum in (("repeats", 1), ("warmup", 0), ("threads", 1), ("height", 64), ("width", 64)):
        value, sizes = getattr(args, name), minimum == 64
        if value is not None and (value < minimum or (sizes and value % 8)):
            rule = "a multiple of 8 and ≥ 64" if sizes else f"≥ {minimum}"
            raise FastDiffError(f"--{name} must be {rule}, got {value}")


def _check_hub(scenarios: list[Scenario], args: argparse.Namespace) -> None:
    """Every scenario's weights cached, or the hub there to serve them: else the one-line error now, before torch
    loads and before the scenarios ahead of it run (nor after huggingface_hub's retries)."""
    from ..hub import check_cached_or_reachable

    # Without --dtype (or with an alias) either precision's files will do: the device's own needs torch to tell.
    dtypes = [args.dtype] if args.dtype in ("float32", "float16", "bfloat16") else ["float16", "float32"]
    for preset in dict.fromkeys(scenario.preset for scenario in scenarios):
        check_cached_or_reachable(preset, dtypes=dtypes, cache_dir=args.cache_dir)


def _config(args: argparse.Namespace) -> RunConfig:
    from ..devices import resolve_device, resolve_dtype
    from .report import device_description
    from .runner import RunConfig

    device = resolve_device(args.device)
    return RunConfig(
        device=device,
        dtype=resolve_dtype(args.dtype, device),
        height=args.height or args.width,  # one given: a square image (`_check_arguments` refused 0)
        width=args.width or args.height,
        repeats=args.repeats,
        warmup=args.warmup,
        repeat_prompt=args.repeat_prompt,
        device_name=device_description(device),
        threads=args.threads,
    )


def _measure(args: argparse.Namespace) -> tuple[list[BenchRow], Meta]:
    """Check `args`, then run their scenarios with a progress bar over the runs; the rows and the run's metadata."""
    _check_arguments(args)
    scenarios = parse_scenarios(args.scenarios)
    if args.weights == "hub":
        _check_hub(scenarios, args)
    config = _config(args)  # torch loads from here on, once the checks above have answered
    from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]

    from .report import collect_meta, seconds
    from .runner import baseline_row, run_scenarios
    from .sources import make_source
    from .timing import make_clock

    meta = collect_meta(config, weights=args.weights + (" (memory-mapped)" if args.weights_dir else ""))
    if meta["note"]:
        print(f"fastdiff bench: {meta['note']}", file=sys.stderr)
    source = make_source(
        args.weights, device=config.device, dtype=config.dtype, clock=make_clock(config.device),
        cache_dir=args.cache_dir, weights_dir=args.weights_dir,  # `_check_arguments` refused it for other weights
    )  # fmt: skip
    total = len(scenarios) * (config.warmup + config.repeats)
    bar = tqdm(total=total, desc="fastdiff bench", unit="run", disable=args.no_progress, file=sys.stderr)
    skipped: list[dict[str, str]] = []

    def done(row: BenchRow) -> None:
        bar.write(f"{row.scenario}: p50 {seconds(row.latency_s['p50'])} (load {seconds(row.load_s)})")

    def skip(scenario: Scenario, reason: str) -> None:
        bar.update(config.warmup + config.repeats)
        bar.write(f"{scenario.name}: skipped: {reason}")
        skipped.append({"scenario": scenario.name, "reason": reason})

    with bar:
        rows = run_scenarios(scenarios, source, config, tick=lambda: bar.update(1), on_row=done, on_skip=skip)
    baseline = baseline_row(rows)
    meta.update(baseline=baseline.scenario if baseline else None, skipped=skipped)
    return rows, meta


def run_bench(args: argparse.Namespace) -> int:
    """Run the scenarios of `args` (or read `--from-json`), print the table, write --json/--markdown/--plot; 0 on
    success, 2 on bad input."""
    try:
        if args.from_json:
            from .report import read_json

            rows, meta = read_json(args.from_json)
        else:
            rows, meta = _measure(args)
    except FastDiffError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .report import format_table, to_markdown, write_json, write_plot

    print(format_table(rows, meta))
    if args.json_path:
        print(f"wrote {write_json(args.json_path, rows, meta)}")
    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_markdown(rows, meta))
        print(f"wrote {path}")
    if args.plot and rows:
        print(f"wrote {write_plot(args.plot, rows, meta, log_scale=args.log_scale)}")
    return 0
