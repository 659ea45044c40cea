"""A small CNN that reads a `shapes` image's attributes back: the project's stand-in for a CLIP score.

Four stride-2 convolutions (taesd-sized, ~160k parameters) and one linear layer per attribute. Images of any
size are resized to 64×64 first; the flattened 4×4 map keeps where the shape is, which global pooling would lose.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_file
from torch import nn

from .shapes import ATTRIBUTES, CHOICES, ShapesData, ShapeSpec, make_shapes

__all__ = [
    "ShapesClassifier",
    "accuracy",
    "evaluate",
    "images_to_tensor",
    "prompt_hits",
    "shipped_classifier",
    "train_classifier",
]

SHIPPED = Path(__file__).parent / "weights" / "shapes_classifier.safetensors"
NUM_CLASSES = {name: len(values) for name, values in CHOICES.items()}


def _block(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(4, cout), nn.SiLU())


class ShapesClassifier(nn.Module):
    """(B, 3, H, W) images in [-1, 1] → one logit vector per attribute, and 256-d features for an FID-like distance."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(_block(3, width // 2), _block(width // 2, width), _block(width, width))
        self.body.append(_block(width, width))
        self.neck = nn.Sequential(nn.Flatten(), nn.Linear(width * 16, 256), nn.SiLU())
        self.heads = nn.ModuleDict({name: nn.Linear(256, n) for name, n in NUM_CLASSES.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The 256-d penultimate features (B, 256)."""
        x = F.interpolate(images, size=(64, 64), mode="area") if images.shape[-2:] != (64, 64) else images
        out: torch.Tensor = self.neck(self.body(x))  # (B, width, 4, 4) -> (B, 256)
        return out

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute, {name: (B, classes)}."""
        h = self.features(images)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict[str, str]]:
        """The attribute names read from each image."""
        logits = self(images)
        picks = {name: value.argmax(dim=1).tolist() for name, value in logits.items()}
        return [{name: CHOICES[name][picks[name][i]] for name in picks} for i in range(images.shape[0])]

    def save(self, path: str | Path, *, half: bool = False) -> Path:
        """Write the weights as safetensors (float16 with `half`, as the shipped file)."""
        path = Path(path)
        state = {k: (v.half() if half else v).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"format": "pt"})
        return path

    @classmethod
    def load(cls, path: str | Path) -> ShapesClassifier:
        """A classifier with the weights of `path` (safetensors: no pickle), in eval mode."""
        model = cls()
        load_model(model, path)
        return model.eval()


def shipped_classifier() -> ShapesClassifier:
    """The classifier shipped with fastdiff: `train_classifier(seed=0).save(SHIPPED, half=True)`, 99.9 % on shapes."""
    return ShapesClassifier.load(SHIPPED)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float in [-1, 1], as diffusers' VAEs take them."""
    return torch.tensor(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # a copy: `images` may be read-only


def _targets(specs: Sequence[ShapeSpec]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([s.label(name) for s in specs]) for name in ATTRIBUTES}


def train_classifier(
    *, num_images: int = 4096, steps: int = 300, batch_size: int = 64, lr: float = 3e-3, seed: int = 0
) -> ShapesClassifier:
    """Train on freshly drawn `shapes` images (cross-entropy summed over attributes, Adam, cosine decay)."""
    torch.manual_seed(seed)
    data = make_shapes(num_images, seed=seed)
    x, y = images_to_tensor(data.images), _targets(data.specs)
    model = ShapesClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(num_images, (batch_size,), generator=order)
        logits = model(x[idx])
        loss = sum(F.cross_entropy(logits[name], y[name][idx]) for name in ATTRIBUTES)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def prompt_hits(model: ShapesClassifier, images: torch.Tensor, specs: Sequence[ShapeSpec]) -> dict[str, torch.Tensor]:
    """Per image, whether each attribute matches `specs`, and whether all four of the prompt do ("all")."""
    logits = model(images)
    targets = _targets(specs)
    hits = {name: logits[name].argmax(dim=1) == targets[name] for name in ATTRIBUTES}
    prompt = ("shape", "color", "background", "position")  # the size word is optional in a prompt
    return hits | {"all": torch.stack([hits[name] for name in prompt]).all(dim=0)}


def accuracy(model: ShapesClassifier, images: torch.Tensor, specs: Sequence[ShapeSpec]) -> dict[str, float]:
    """Fraction of images whose attribute matches `specs`, per attribute and for all four of the prompt ("all")."""
    return {name: hit.float().mean().item() for name, hit in prompt_hits(model, images, specs).items()}


def evaluate(model: ShapesClassifier, data: ShapesData) -> dict[str, float]:
    """`accuracy` on a drawn set."""
    return accuracy(model, images_to_tensor(data.images), data.specs)
