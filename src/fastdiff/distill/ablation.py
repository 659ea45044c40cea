"""The ADD ablation at toy scale: teacher@20 and @1, distillation-only, adversarial-only and ADD students.

`python -m fastdiff.distill.ablation --out DIR [--steps N] [--variants add,distill,adversarial]` trains one student
per loss variant from the shipped teacher with the recipe's config (only the two loss weights differ), evaluates every
model on the 96 held-out prompts with noise of their own seed (accuracy, Fréchet distance, sharpness, time;
docs/distill.md), and writes `ablation.json` and `ablation-grid.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..presets import get
from .classifier import ShapesClassifier, accuracy, images_to_tensor, shipped_classifier
from .config import ADDConfig
from .data import shapes_images
from .evaluation import HELD_OUT_SEED, eval_specs, generate, held_out_specs, image_rows
from .recipe import refine_latents, save_fp16, step_counts, student_config, student_pipeline, training_trajectories
from .shapes import ShapeSpec, caption, draw
from .trainer import train

__all__ = [
    "RECIPE_STEPS",
    "VARIANTS",
    "energy_map",
    "evaluate_model",
    "frechet_distance",
    "main",
    "real_images",
    "sharpness",
    "sharpness_split",
    "student_configs",
]

_D: Any = diffusers  # its classes are untyped

# The loss variants as the terms each keeps: ADD (both, weighted as the recipe), distillation only, adversarial only.
VARIANTS: dict[str, tuple[bool, bool]] = {"add": (True, True), "distill": (True, False), "adversarial": (False, True)}
_LABELS = {"add": "ADD", "distill": "distill-only", "adversarial": "adv-only"}
TEACHER, STUDENT = get("fastdiff-shapes-teacher"), get("fastdiff-shapes")  # shipped in the package
GUIDANCE: float = TEACHER.guidance_scale  # the shipped teacher's CFG scale (2.0), its student's target guidance
GRID_PROMPTS = 8
ACCURACY = ("shape", "color", "background", "position", "size", "all")
SHARPNESS = ("sharpness", "sharpness_edges", "sharpness_off_edges")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
RECIPE_STEPS = step_counts(40.0)["student"]  # the shipped student's steps (`recipe --minutes 40`)


def student_configs(*, steps: int, guidance: float = GUIDANCE, seed: int = 0) -> dict[str, ADDConfig]:
    """The recipe's student `ADDConfig` (`recipe.student_config`) for each loss variant of `VARIANTS`: a term it
    drops gets weight 0, the other keeps the recipe's weight."""
    base = student_config(steps, guidance=guidance, seed=seed)
    return {
        name: dataclasses.replace(
            base,
            distill_weight=base.distill_weight if distill else 0.0,
            adversarial_weight=base.adversarial_weight if adversarial else 0.0,
        )
        for name, (distill, adversarial) in VARIANTS.items()
    }


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance of Gaussians fitted to features a (N, D) and b (M, D), computed in float64 (as FID)."""
    a, b = a.double(), b.double()
    mean = a.mean(dim=0) - b.mean(dim=0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T  # cov_a^½
    inner = root @ cov_b @ root  # tr √(cov_a cov_b) = Σ √eig(cov_a^½ cov_b cov_a^½), which is symmetric PSD
    cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return float(mean @ mean + cov_a.trace() + cov_b.trace() - 2 * cross)


def energy_map(images: torch.Tensor) -> torch.Tensor:
    """Squared x plus y forward differences of luminance (in [0, 1]) at each pixel (N, H, W) of images in [-1, 1]."""
    luma = torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1)
    y = ((images.double() + 1) / 2 * luma).sum(dim=1)  # (N, H, W)
    dx, dy = F.pad(y[:, :, 1:] - y[:, :, :-1], (0, 1)), F.pad(y[:, 1:, :] - y[:, :-1, :], (0, 0, 0, 1))
    return dx.pow(2) + dy.pow(2)


def sharpness(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean luminance gradient energy of `images` over that of `reference` (1: as sharp as the real images)."""
    mine, theirs = (energy_map(x).mean(dim=(1, 2)).mean() for x in (images, reference))  # per image, then overall
    return float(mine / theirs)


def sharpness_split(images: torch.Tensor, reference: torch.Tensor, *, band: int = 2) -> tuple[float, float]:
    """`sharpness` split into the energy within `band` px of the reference's edges and the rest (speckle, strays)."""
    edges = (reference[:, :, :, 1:] != reference[:, :, :, :-1]).any(dim=1)  # any channel changes: (N, H, W - 1)
    edges = F.pad(edges, (0, 1)) | F.pad((reference[:, :, 1:] != reference[:, :, :-1]).any(dim=1), (0, 0, 0, 1))
    near = F.max_pool2d(edges[:, None].float(), 2 * band + 1, stride=1, padding=band)[:, 0] > 0
    energy, total = energy_map(images), energy_map(reference).sum()
    return float(energy[near].sum() / total), float(energy[~near].sum() / total)


def real_images(specs: Sequence[ShapeSpec]) -> torch.Tensor:
    """The drawn images (N, 3, 64, 64) in [-1, 1] of `specs`."""
    return images_to_tensor(np.stack([np.asarray(draw(spec)) for spec in specs]))


def _load(folder: Path) -> Any:
    """A shipped or saved fp16 diffusers folder, computed in float32, without progress bars."""
    pipe = _D.StableDiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def evaluate_model(
    pipe: Any,
    specs: Sequence[ShapeSpec],
    *,
    steps: int,
    guidance: float,
    classifier: ShapesClassifier,
    real: torch.Tensor,
    repeats: int = 3,
    seed: int = 0,
) -> tuple[dict[str, float], torch.Tensor]:
    """Accuracy per attribute and all four, Fréchet distance and sharpness against `real`, and the median seconds
    per image of `repeats` batched runs after a warm-up one (noise of `seed`)."""
    prompts = [caption(s) for s in specs]
    images, times = generate(pipe, prompts, steps=steps, guidance=guidance, seed=seed), []
    for _ in range(repeats):
        start = time.perf_counter()
        images = generate(pipe, prompts, steps=steps, guidance=guidance, seed=seed)
        times.append((time.perf_counter() - start) / len(prompts))
    seconds = statistics.median(times)
    return _scores(images, specs, classifier=classifier, real=real) | {"seconds_per_image": seconds}, images


def _scores(
    images: torch.Tensor, specs: Sequence[ShapeSpec], *, classifier: ShapesClassifier, real: torch.Tensor
) -> dict[str, float]:
    """The image metrics of `evaluate_model` (everything but the time)."""
    with torch.no_grad():
        frechet = frechet_distance(classifier.features(images), classifier.features(real))
    on_edges, off_edges = sharpness_split(images, real)
    return accuracy(classifier, images, specs) | {
        "frechet": frechet,
        "sharpness": sharpness(images, real),
        "sharpness_edges": on_edges,
        "sharpness_off_edges": off_edges,
    }


def refined_latents(teacher: Any, images: torch.Tensor, path: Path) -> torch.Tensor:
    """The recipe's real data: `images`' latents refined for the teacher's decoder (`recipe.refine_latents`), saved
    at `path` the first time (about 15 min on one core) for the variants trained in other processes."""
    if path.is_file():
        latents: torch.Tensor = torch.load(path)
        return latents
    latents = refine_latents(teacher.vae, images)
    partial = path.with_suffix(".partial")
    torch.save(latents, partial)
    partial.replace(path)  # a process beside this one never reads a half-written file
    return latents


def train_students(
    teacher: Any, out: Path, *, steps: int, variants: Sequence[str], seed: int = 0, reuse: bool = False
) -> dict[str, Any]:
    """Train each variant from `teacher` on the recipe's data (`reuse`: load it if saved); {variant: (pipe, s)}."""
    images, captions = shapes_images(4096, seed=seed)  # as recipe.run
    configs = student_configs(steps=steps, seed=seed)
    students: dict[str, Any] = {}
    paths = real = None  # the teacher's sampling paths and the real data, the same for every variant
    for name in variants:
        folder = out / f"{name}-{steps}"
        if reuse and (folder / "pipeline" / "model_index.json").is_file():
            rows = json.loads((folder / "train" / "losses.json").read_text())
            students[name] = (_load(folder / "pipeline"), rows[-1]["seconds"])  # the trainer's own clock
            continue
        start = time.perf_counter()
        paths = training_trajectories(teacher, captions, configs[name]) if paths is None else paths
        real = refined_latents(teacher, images, out / f"real-latents-s{seed}.pt") if real is None else real
        result = train(
            teacher, images, captions, out_dir=folder / "train", config=configs[name], trajectories=paths,
            real_latents=real,
        )  # fmt: skip
        pipe = student_pipeline(teacher, result.student.float(), prediction_type=configs[name].student_prediction)
        save_fp16(pipe, folder / "pipeline")  # evaluated as saved: fp16-rounded weights, float32 compute
        pipe.set_progress_bar_config(disable=True)
        students[name] = (pipe, time.perf_counter() - start)
        print(f"trained {name} ({steps} steps) in {students[name][1] / 60:.1f} min", flush=True)
    return students


def _labelled_grid(rows: Sequence[torch.Tensor], labels: Sequence[str], path: Path, *, zoom: int = 2) -> None:
    """`evaluation.image_rows` of the rows, enlarged `zoom`×, with each row's label in a left margin."""
    grid = image_rows(rows)
    grid = grid.resize((grid.width * zoom, grid.height * zoom), Image.Resampling.NEAREST)
    margin, row_height = 150, grid.height // len(rows)
    canvas = Image.new("RGB", (grid.width + margin, grid.height), "white")
    canvas.paste(grid, (margin, 0))
    pen = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        pen.text((6, i * row_height + row_height // 2 - 6), label, fill="black")
    canvas.save(path)


def table(results: dict[str, dict[str, Any]]) -> str:
    """The figures as a markdown table, one row per model."""
    lines = [
        "| model | train steps | shape | colour | background | position | size | all four | Fréchet | sharpness "
        "| on edges | off edges | s / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        formats = [(c, ".2f") for c in ACCURACY] + [("frechet", ".1f")]
        # at two decimals every good model's speckle off the edges reads 0.01
        formats += [(c, ".4f" if c == "sharpness_off_edges" else ".2f") for c in SHARPNESS]
        cells = ["—" if r.get(c) is None else format(r[c], f) for c, f in [*formats, ("seconds_per_image", ".4f")]]
        lines.append(f"| {name} | {r.get('train_steps') or '—'} | {' | '.join(cells)} |")
    return "\n".join(lines)


def run(
    out: Path, *, steps: int, variants: Sequence[str], seed: int = 0, repeats: int = 3, reuse: bool = False
) -> dict[str, Any]:
    """Train the students, evaluate every model, write `ablation.json` and `ablation-grid.png`; return the figures."""
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    teacher = _load(Path(TEACHER.repo_id))
    students = train_students(teacher, out, steps=steps, variants=variants, seed=seed, reuse=reuse)
    shipped = _load(Path(STUDENT.repo_id))
    teacher_euler = student_pipeline(teacher, teacher.unet)  # its one-step x̂0 at t = 999, as the students' sampler
    teacher_euler.set_progress_bar_config(disable=True)
    tag = "" if steps == RECIPE_STEPS else f" ({steps} steps)"
    models: list[tuple[str, Any, int, float, int | None]] = [
        ("teacher@20, CFG 2 (PNDM)", teacher, 20, GUIDANCE, None),
        ("teacher@1, CFG 2 (PNDM)", teacher, 1, GUIDANCE, None),
        ("teacher@1, CFG 2 (Euler trailing)", teacher_euler, 1, GUIDANCE, None),
        ("teacher@1, no CFG (Euler trailing)", teacher_euler, 1, 0.0, None),
        ("teacher@4, CFG 2 (Euler trailing)", teacher_euler, 4, GUIDANCE, None),
    ]
    for name in ("distill", "adversarial", "add"):
        if name in students:
            models += [(f"{_LABELS[name]}{tag}@1", students[name][0], 1, 0.0, steps)]
    if "add" in students:
        models += [(f"ADD{tag}@{n}", students["add"][0], n, 0.0, steps) for n in (2, 4)]
    models += [(f"shipped student@{n}", shipped, n, 0.0, RECIPE_STEPS) for n in (1, 4)]

    specs = held_out_specs()
    real = real_images(specs)
    classifier = shipped_classifier().float()
    other = eval_specs(len(specs), seed=1)  # real images of other prompts: perfect pictures, not of these prompts
    reference = _scores(real_images(other), other, classifier=classifier, real=real)
    results: dict[str, dict[str, Any]] = {
        f"real ({len(other)} other prompts)": reference | dict.fromkeys(SHARPNESS[1:])
    }
    rows, labels = [real[:GRID_PROMPTS]], ["real"]
    for label, pipe, n, guidance, trained in models:
        scores, images = evaluate_model(
            pipe, specs, steps=n, guidance=guidance, classifier=classifier, real=real, repeats=repeats,
            seed=HELD_OUT_SEED,
        )  # fmt: skip
        results[label] = scores | {"steps": n, "guidance": guidance, "train_steps": trained}
        rows.append(images[:GRID_PROMPTS])
        labels.append(label)
    _labelled_grid(rows, labels, out / "ablation-grid.png")
    figures: dict[str, Any] = {"results": results, "student_steps": steps, "variants": list(variants), "seed": seed}
    figures["train_seconds"] = {name: s for name, (_, s) in students.items()}
    if "add" in students and steps == RECIPE_STEPS:  # same teacher, data, config and seed as the shipped run
        theirs = shipped.unet.state_dict()
        diffs = [float((v - theirs[k]).abs().max()) for k, v in students["add"][0].unet.state_dict().items()]
        figures["add_vs_shipped_unet_max_abs_diff"] = max(diffs)
    figures["prompts_in_grid"] = [caption(s) for s in specs[:GRID_PROMPTS]]
    figures["seconds_total"] = time.perf_counter() - clock
    (out / "ablation.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fastdiff.distill.ablation --out DIR [--steps N] [--variants add,distill,adversarial]`."""
    parser = argparse.ArgumentParser(prog="python -m fastdiff.distill.ablation", description=__doc__)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--steps", type=int, default=RECIPE_STEPS, help=f"student steps (recipe: {RECIPE_STEPS})")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of add,distill,adversarial"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="load students already saved under --out, do not retrain")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    figures = run(args.out, steps=args.steps, variants=variants, seed=args.seed, reuse=args.reuse)
    print(table(figures["results"]))
    print(f"total {figures['seconds_total'] / 60:.1f} min; files in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
