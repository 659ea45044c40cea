"""How the shipped models are measured: the fixed prompt set, batched generation, prompt accuracy, image rows.

The recipe's figures, the ablation, `fastdiff showcase` and the shipped model's tests all read them from here.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .classifier import accuracy, images_to_tensor, shipped_classifier
from .shapes import CHOICES, ShapeSpec, caption, sample_specs

__all__ = ["HELD_OUT_SEED", "eval_specs", "generate", "held_out_specs", "image_rows", "prompt_accuracy"]

HELD_OUT_SEED = 30  # never used elsewhere: picks the held-out prompts and the noise they are generated from


def eval_specs(n: int = 48, *, seed: int = 12345) -> list[ShapeSpec]:
    """The fixed prompt set of the figures (and of the shipped model's test)."""
    return sample_specs(n, seed=seed)


def held_out_specs(n: int = 96, *, seed: int = HELD_OUT_SEED) -> list[ShapeSpec]:
    """`n` prompts never trained on: combinations of the grammar's words absent from the recipe's training captions
    (its 4096 drawn with seed 0; about a fifth of the 2520 combinations), picked without repeats by `seed`."""
    seen = set(sample_specs(4096, seed=0))
    combos = (dict(zip(CHOICES, values, strict=True)) for values in itertools.product(*CHOICES.values()))
    unseen = [spec for c in combos if c["color"] != c["background"] and (spec := ShapeSpec(**c)) not in seen]
    return [unseen[i] for i in np.random.default_rng(seed).choice(len(unseen), n, replace=False)]


@torch.no_grad()
def generate(pipe: Any, prompts: Sequence[str], *, steps: int, guidance: float, seed: int = 0) -> torch.Tensor:
    """Images (N, 3, 64, 64) in [-1, 1] from the pipeline as it is (its own scheduler), one seed for the batch."""
    gen = torch.Generator().manual_seed(seed)
    out = pipe(list(prompts), num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="np")
    return images_to_tensor((out.images * 255).round().astype(np.uint8))


def prompt_accuracy(pipe: Any, specs: Sequence[ShapeSpec], *, steps: int, guidance: float) -> dict[str, float]:
    """The shipped classifier's accuracy on images made from the captions of `specs`, and the seconds per image."""
    start = time.perf_counter()
    images = generate(pipe, [caption(s) for s in specs], steps=steps, guidance=guidance)
    seconds = (time.perf_counter() - start) / len(specs)
    return accuracy(shipped_classifier().float(), images, specs) | {"seconds_per_image": seconds}


def image_rows(rows: Sequence[torch.Tensor], path: Path | None = None) -> Image.Image:
    """Rows of (N, 3, H, W) images in [-1, 1], pasted one row each (and saved to `path` when given)."""
    arrays = [((r.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy() for r in rows]
    grid = Image.fromarray(np.concatenate([np.concatenate(list(a), axis=1) for a in arrays], axis=0))
    if path is not None:
        grid.save(path)
    return grid
