"""`fastdiff showcase`: the shipped toy models side by side, offline — the teacher at 20 steps against its ADD
student at 1 step, one `FewStepGenerator` call per prompt: time per image, speed-up, prompt accuracy, and a PNG, on
the recipe's fixed prompts and on held-out ones (combinations of the grammar's words never trained on).
"""

from __future__ import annotations

import argparse
import json
import statistics
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..bench.report import device_description
from ..bench.timing import BUSY_CORES, Contention
from ..generator import FewStepGenerator
from .classifier import accuracy, images_to_tensor, shipped_classifier
from .evaluation import eval_specs, held_out_specs
from .shapes import ShapeSpec, caption

__all__ = ["Row", "add_showcase_arguments", "compare", "prompt_sets", "run_showcase", "side_by_side"]

RUNS = (("fastdiff-shapes-teacher", 20), ("fastdiff-shapes", 1))  # (preset, steps): the baseline first
ATTRIBUTES = ("all", "shape", "color", "background", "position")
SCALE = 4  # the models make 64×64 images: shown 4× larger, pixel for pixel


@dataclass(frozen=True)
class Row:
    """One model's run over the prompt set: its images, the median seconds per image and the classifier's scores."""

    preset: str
    steps: int
    device: str
    images: list[Image.Image]
    seconds: float
    warmup_seconds: float
    scores: dict[str, float]
    other_cores: float | None = None  # cores other processes kept busy during the calls (None: not counted)


def _run(gen: FewStepGenerator, steps: int, specs: Sequence[ShapeSpec], warmup: float) -> Row:
    """One call per prompt, seed i for prompt i, on a generator warmed up in `warmup` seconds (reported apart)."""
    images, seconds, contention = [], [], Contention()
    # one window around all the calls: the machine's CPU time is counted in 10 ms ticks, so a window of one student
    # call (about 10 ms) reads an idle machine as 0.1 cores busy elsewhere, at the `BUSY_CORES` threshold
    contention.start()
    loop_start = time.perf_counter()
    for i, spec in enumerate(specs):
        start = time.perf_counter()
        images.append(gen(caption(spec), steps=steps, seed=i).images[0])
        seconds.append(time.perf_counter() - start)
    contention.stop(time.perf_counter() - loop_start)
    tensor = images_to_tensor(np.stack([np.asarray(im) for im in images]))
    scores = accuracy(shipped_classifier().float(), tensor, specs)
    median = statistics.median(seconds)
    return Row(gen.preset.name, steps, str(gen.device), images, median, warmup, scores, contention.medians()[1])


def prompt_sets(prompts: int) -> dict[str, list[ShapeSpec]]:
    """The first `prompts` of the recipe's fixed set (`evaluation.eval_specs`, drawn from the grammar as the training
    captions were) and of the held-out set (`evaluation.held_out_specs`: combinations absent from training)."""
    return {"fixed": eval_specs()[:prompts], "held-out": held_out_specs()[:prompts]}


def compare(*, prompts: int = 48, device: str = "cpu") -> dict[str, list[Row]]:
    """Each model of `RUNS` on each of `prompt_sets(prompts)`: {set name: one row per model, the baseline first}."""
    sets = prompt_sets(prompts)
    rows: dict[str, list[Row]] = {name: [] for name in sets}
    for preset, steps in RUNS:
        gen = FewStepGenerator.from_preset(preset, device=device)
        warmup = gen.warmup()
        for name, specs in sets.items():
            rows[name].append(_run(gen, steps, specs, warmup))
    return rows


def side_by_side(rows: Sequence[Row], prompts: Sequence[str], columns: int = 8) -> Image.Image:
    """One row per model and one column per prompt (captioned at the top), 4× enlarged, each row labelled."""
    cell, label, head = 64 * SCALE, 18, 34
    columns = min(columns, len(prompts))
    sheet = Image.new("RGB", (columns * cell, head + len(rows) * (cell + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, prompt in enumerate(prompts[:columns]):
        draw.multiline_text((c * cell + 4, 2), textwrap.fill(prompt, 40), fill="black", spacing=2)
    for r, row in enumerate(rows):
        top = head + r * (cell + label)
        draw.text((4, top + 3), f"{row.preset} @{row.steps}: {row.seconds * 1000:.0f} ms/image", fill="black")
        for c, image in enumerate(row.images[:columns]):
            sheet.paste(image.resize((cell, cell), Image.Resampling.NEAREST), (c * cell, top + label))
    return sheet


def _table(rows: Sequence[Row], *, busy: bool) -> str:
    """The rows' times and scores; no speed-up when a busy machine skewed the times (`_busy_note`)."""
    base = rows[0].seconds
    lines = ["| model | steps | ms / image | speed-up | all four | shape | colour | background | position |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        scores = " | ".join(f"{row.scores[k]:.2f}" for k in ATTRIBUTES)
        speedup = "—" if busy else f"{base / row.seconds:.1f}×"
        lines.append(f"| {row.preset} | {row.steps} | {row.seconds * 1000:.1f} | {speedup} | {scores} |")
    return "\n".join(lines)


def _busy_note(rows: Sequence[Row]) -> str | None:
    """What a busy machine did to the timings (`BUSY_CORES` or more kept busy by other processes, the bench's rule),
    or None when every row was timed with the machine to itself."""
    busy = [f"{row.preset} {row.other_cores:.1f}" for row in rows if (row.other_cores or 0.0) >= BUSY_CORES]
    if not busy:
        return None
    return (
        f"note: other processes kept CPU cores busy while these were timed ({', '.join(busy)} cores, over the "
        "calls): the times are slower than this machine alone, and the speed-up is not shown since it could not be "
        "measured cleanly. Run again when the machine is idle."
    )


def _record(row: Row) -> dict[str, object]:
    """A row's fields for showcase.json, without its images."""
    return {k: v for k, v in vars(row).items() if k != "images"}


def add_showcase_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `fastdiff showcase`."""
    parser.add_argument("--out", type=Path, default=Path("showcase"), help="folder for the PNG and the JSON")
    parser.add_argument("--prompts", type=int, default=48, help="how many of the fixed prompts (1-48)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")


def run_showcase(args: argparse.Namespace) -> int:
    """Run the comparison, print its table, write `side-by-side.png` and `showcase.json` to `--out`."""
    from .._quiet import quiet_library_logs
    from ..errors import FastDiffError

    if not 1 <= args.prompts <= 48:
        raise FastDiffError(f"--prompts must be 1-48 (the fixed prompt set), not {args.prompts}")
    args.out.mkdir(parents=True, exist_ok=True)
    quiet_library_logs()
    start = time.perf_counter()
    sets = compare(prompts=args.prompts, device=args.device)
    prompts = {name: [caption(s) for s in specs] for name, specs in prompt_sets(args.prompts).items()}
    for name, rows in sets.items():
        suffix = "" if name == "fixed" else f"-{name}"
        side_by_side(rows, prompts[name]).save(args.out / f"side-by-side{suffix}.png")
        for row in rows:
            folder = args.out / f"{row.preset}{suffix}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(row.images):
                image.save(folder / f"{i:02d}.png")
    rows = sets["fixed"]
    device, note = device_description(torch.device(rows[0].device)), _busy_note([*rows, *sets["held-out"]])
    print(f"fastdiff showcase: the shipped toy models (64×64), one call per prompt, on {device},")
    print(f"{torch.get_num_threads()} threads; warm-up runs reported apart.\n")
    print(f"{args.prompts} fixed prompts (drawn from the grammar as the training captions were):\n")
    print(_table(rows, busy=note is not None))
    print(f"\n{args.prompts} held-out prompts (combinations of the grammar's words never trained on):\n")
    print(_table(sets["held-out"], busy=note is not None) + ("" if note is None else f"\n\n{note}"))
    print(f"\nwarm-up: {', '.join(f'{r.preset} {r.warmup_seconds:.2f} s' for r in rows)}")
    print("accuracy: the shipped classifier reads the prompt's attributes back (all four: the whole prompt)")
    held_out_png = args.out / "side-by-side-held-out.png"
    print(f"wrote {args.out / 'side-by-side.png'} and {held_out_png} (top: teacher@20, bottom: student@1)")
    print(f"done in {time.perf_counter() - start:.1f} s. Next: the real architectures' timing, random weights:")
    print("  fastdiff bench --weights random --device cpu --height 128 --width 128 --repeats 2")
    record = {
        "prompts": prompts["fixed"],
        "rows": [_record(r) for r in rows],
        "held_out": {"prompts": prompts["held-out"], "rows": [_record(r) for r in sets["held-out"]]},
        "device": device,
        "threads": torch.get_num_threads(),
        "busy": note is not None,
    }
    (args.out / "showcase.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0
