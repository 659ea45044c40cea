"""`fastdiff batch PROMPTS --out DIR`: every prompt of a file to DIR/NNNNNN.png, resumable. The driver (this process)
opens DIR, hands the prompts not yet done to a runner and writes what comes back: image first, then its manifest line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ... import __version__, cli_options
from ... import presets as preset_table
from ...errors import FastDiffError, warn
from .manifest import RunDir
from .prompts import Job, make_jobs, prompts_sha256, read_prompt_file
from .worker import LoadSpec, Made, Worker, run_process_pool

__all__ = ["add_batch_arguments", "main", "run_batch"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `fastdiff batch`."""
    add = parser.add_argument
    add(
        "prompts",
        metavar="PROMPTS",
        help=".txt (one prompt a line) or .jsonl ({'prompt': ..., 'seed': ...} a line; a line may also set its own "
        "steps, negative_prompt, guidance_scale, height, width)",
    )
    add("--out", required=True, help="output folder: NNNNNN.png, manifest.jsonl, run.json")
    cli_options.add_model_options(parser)
    cli_options.add_sampling_options(
        parser, seed_default=0, seed_help="prompt i gets seed SEED+i unless its line names one"
    )
    add("--batch-size", type=_positive, default=1, help="images per pipeline call in each worker")
    add("--workers", type=_positive, default=1, help="worker processes (with --ray: actors per CPU node)")
    add("--threads", type=_positive, help="torch CPU threads per worker (default: cores // workers)")
    add("--ray", nargs="?", const="", metavar="ADDRESS", help="run on Ray: alone ray.init(), or join ADDRESS/auto")
    add("--force", action="store_true", help="delete DIR's images and manifest and start over")
    add("--no-progress", action="store_true", help="no progress bar (the summary line is still printed)")


def _load_spec(args: argparse.Namespace) -> LoadSpec:
    """The generator every worker loads, with local paths made absolute (a worker may start elsewhere)."""
    options = cli_options.load_options(args)
    for key in ("source", "checkpoint", "cache_dir"):  # a hub repo id (not a path here) stays as it is
        if options[key] is not None and (key == "cache_dir" or Path(options[key]).exists()):
            options[key] = str(Path(options[key]).resolve())
    return LoadSpec(args.preset, options, batch_size=args.batch_size, threads=args.threads)


def _header(args: argparse.Namespace, spec: LoadSpec, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What DIR records about its run: every setting that changes the images, and the prompt list's hash."""
    settings = {"preset": args.preset, **{key: spec.options[key] for key in ("source", "checkpoint", "dtype")}}
    settings |= {"optimize": args.optimize, "seed": args.seed, **cli_options.sampling_options(args)}
    return {
        "format": 1,
        "settings": settings,
        "count": len(entries),
        "prompts_sha256": prompts_sha256(entries),
        "prompts_file": str(Path(args.prompts).resolve()),
        "fastdiff": __version__,
    }


def _drain(run_dir: RunDir, made: Iterator[Made], *, jobs: list[Job], preset: str, bar: Any) -> tuple[int, int]:
    """Write every image that comes back (image, then manifest line); returns (images written, failures)."""
    shown: set[str] = set()
    written = failed = 0
    for batch in made:
        if batch.fatal is not None:
            raise FastDiffError(batch.fatal)
        for message in batch.warnings:
            if message not in shown:  # every worker warns about the same size: say it once
                shown.add(message)
                warn(message)
        for outcome in batch.outcomes:
            job = jobs[outcome.index]
            if outcome.error is not None:
                failed += 1
                bar.write(f"error: prompt {job.index} {job.prompt[:60]!r}: {outcome.error}", file=sys.stderr)
            else:
                entry = {"index": job.index, "prompt": job.prompt, "seed": outcome.seed, "steps": outcome.steps}
                run_dir.record({**entry, "preset": preset, "timings": outcome.timings}, outcome.png)
                written += 1
            bar.update(1)
    return written, failed


def run_batch(args: argparse.Namespace) -> int:
    """Run `fastdiff batch`; 0 when every prompt has its image, 1 when some were refused (named on stderr)."""
    from tqdm import tqdm  # type: ignore[import-untyped, unused-ignore]

    preset = preset_table.get(args.preset).name  # a wrong name is refused before DIR is touched
    # the step count, and weights that cannot load (not with Ray: its workers read their own nodes' caches), in one
    # line before torch loads
    cli_options.check_before_loading(args, weights=args.ray is None)
    entries = read_prompt_file(args.prompts)
    jobs = make_jobs(entries, base_seed=args.seed, defaults=cli_options.sampling_options(args))
    spec = _load_spec(args)
    run_dir = RunDir.open(args.out, header=_header(args, spec, entries), force=args.force)
    todo = [job for job in jobs if job.index not in run_dir.done]
    chunks = [todo[k : k + args.batch_size] for k in range(0, len(todo), args.batch_size)]
    made: Iterator[Made]
    if args.ray is not None and chunks:  # no cluster to start for a finished run
        from .ray_runner import run_on_ray

        made = run_on_ray(spec, chunks, address=args.ray or None, workers=args.workers)
    elif args.workers > 1:
        made = run_process_pool(spec, chunks, workers=args.workers)
    else:
        made = map(Worker(spec).make, chunks)  # loads the generator on its first chunk only
    skipped = len(jobs) - len(todo)
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), initial=skipped, desc="fastdiff batch", unit="img", disable=args.no_progress)
    try:
        written, failed = _drain(run_dir, made, jobs=jobs, preset=preset, bar=bar)
    finally:
        bar.close()
        run_dir.close()
    seconds = time.perf_counter() - start
    rate = written / seconds if seconds > 0 else 0.0
    print(
        f"fastdiff batch: made {written}, skipped {skipped} (done before), failed {failed} in {seconds:.1f} s "
        f"({rate:.2f} images/s, loading included) -> {run_dir.root}"
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fastdiff.serving.bulk.cli`: the same as `fastdiff batch`."""
    from ...cli import main as fastdiff

    return fastdiff(["batch", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
