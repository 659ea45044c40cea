"""The `shapes` data set, drawn in code: one coloured shape on a plain background, with its caption.

Captions follow one grammar, `a [small |large ]COLOR SHAPE[ in the POSITION] on a COLOR background`, which
`parse_caption` reads back, so a classifier can check a generated image against its prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..errors import FastDiffError

__all__ = [
    "ATTRIBUTES",
    "CHOICES",
    "COLORS",
    "EXAMPLE_CAPTION",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "VOCABULARY",
    "ShapeSpec",
    "ShapesData",
    "caption",
    "draw",
    "make_shapes",
    "parse_caption",
    "sample_specs",
    "unknown_words",
]

SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 20),
    "purple": (140, 40, 170),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
SIZES = ("small", "medium", "large")  # "medium" has no word in the caption
# Each attribute's values, in the order of its class labels.
CHOICES = {"shape": SHAPES, "color": tuple(COLORS), "background": tuple(COLORS), "position": POSITIONS, "size": SIZES}
ATTRIBUTES = tuple(CHOICES)

# Half-extent of the shape as a fraction of the image side, and the centre of each position: a large shape in a
# corner still leaves the image's corner pixels to the background (0.28 - 0.22 = 0.06).
_RADIUS = {"small": 0.10, "medium": 0.16, "large": 0.22}
_CENTER = {
    "center": (0.5, 0.5),
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
}
_CAPTION = re.compile(
    rf"a (?:(?P<size>small|large) )?(?P<color>{'|'.join(COLORS)}) (?P<shape>{'|'.join(SHAPES)})"
    rf"(?: in the (?P<position>{'|'.join(POSITIONS)}))? on a (?P<background>{'|'.join(COLORS)}) background"
)


@dataclass(frozen=True)
class ShapeSpec:
    """What one image shows: a `size` `color` `shape` at `position` on a `background`."""

    shape: str
    color: str
    background: str
    position: str = "center"
    size: str = "medium"

    def __post_init__(self) -> None:
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise FastDiffError(f"unknown {name} {getattr(self, name)!r}; expected one of {list(allowed)}")
        if self.color == self.background:
            raise FastDiffError(f"a {self.color} shape on a {self.background} background would be invisible")

    def label(self, attribute: str) -> int:
        """The class index of `attribute` (one of `ATTRIBUTES`)."""
        return CHOICES[attribute].index(getattr(self, attribute))


@dataclass(frozen=True)
class ShapesData:
    """A drawn set: `images` (N, H, W, 3) uint8, one caption and one spec per image, labels per attribute."""

    images: np.ndarray
    captions: list[str]
    specs: list[ShapeSpec]

    def labels(self, attribute: str) -> np.ndarray:
        """Class indices (N,) of `attribute` (one of `ATTRIBUTES`)."""
        return np.array([spec.label(attribute) for spec in self.specs], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.specs)


def caption(spec: ShapeSpec, *, say_position: bool = True) -> str:
    """The caption of `spec`; without `say_position` a centred shape's " in the center" is left out."""
    size = "" if spec.size == "medium" else f"{spec.size} "
    where = f" in the {spec.position}" if say_position or spec.position != "center" else ""
    return f"a {size}{spec.color} {spec.shape}{where} on a {spec.background} background"


# Every word of the caption grammar: all a model trained on `shapes` captions has seen.
_GRAMMAR_WORDS = ("a", "in", "the", "on", "background", "small", "large")
VOCABULARY = frozenset({*_GRAMMAR_WORDS, *COLORS, *SHAPES, *(word for p in POSITIONS for word in p.split())})
EXAMPLE_CAPTION = "a small red circle in the top left on a blue background"


def unknown_words(prompt: str) -> list[str]:
    """The words of `prompt` outside the caption grammar's `VOCABULARY`, in order, each once."""
    return list(dict.fromkeys(w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in VOCABULARY))


def parse_caption(text: str) -> ShapeSpec:
    """The spec a caption asks for (no position word means the center, no size word medium)."""
    match = _CAPTION.fullmatch(text.strip().lower())
    if match is None:
        raise FastDiffError(f"{text!r} is not a shapes caption, e.g. {EXAMPLE_CAPTION!r}")
    parts = match.groupdict()
    return ShapeSpec(
        shape=parts["shape"],
        color=parts["color"],
        background=parts["background"],
        position=parts["position"] or "center",
        size=parts["size"] or "medium",
    )


def draw(spec: ShapeSpec, *, height: int = 64, width: int = 64) -> Image.Image:
    """The image of `spec`, drawn without anti-aliasing so every pixel is the shape's or the background's colour."""
    if min(height, width) < 64:
        raise FastDiffError(f"shapes images are at least 64×64, not {height}×{width}")
    image = Image.new("RGB", (width, height), COLORS[spec.background])
    side = min(height, width)
    r = _RADIUS[spec.size] * side
    cx, cy = _CENTER[spec.position][0] * width, _CENTER[spec.position][1] * height
    pen = ImageDraw.Draw(image)
    fill = COLORS[spec.color]
    if spec.shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif spec.shape == "square":
        half = r * 0.9  # a square of the circle's area would look larger; this one looks the same size
        pen.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:  # an upright equilateral triangle whose centroid is the centre
        rt = r * 1.15
        pen.polygon([(cx, cy - rt), (cx - rt * 0.866, cy + rt / 2), (cx + rt * 0.866, cy + rt / 2)], fill=fill)
    return image


def sample_specs(n: int, *, seed: int) -> list[ShapeSpec]:
    """`n` specs drawn uniformly (the background from the colours other than the shape's), a function of `seed`."""
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(n):
        color = CHOICES["color"][rng.integers(len(COLORS))]
        others = [c for c in COLORS if c != color]
        specs.append(
            ShapeSpec(
                shape=SHAPES[rng.integers(len(SHAPES))],
                color=color,
                background=others[rng.integers(len(others))],
                position=POSITIONS[rng.integers(len(POSITIONS))],
                size=SIZES[rng.integers(len(SIZES))],
            )
        )
    return specs


def make_shapes(n: int, *, seed: int, height: int = 64, width: int = 64) -> ShapesData:
    """`n` images with captions and specs, the same for the same `seed` and size."""
    specs = sample_specs(n, seed=seed)
    images = np.stack([np.asarray(draw(spec, height=height, width=width)) for spec in specs])  # (N, H, W, 3)
    # Half the captions leave out " in the center", so both forms of the grammar are seen in training.
    rng = np.random.default_rng(seed + 1)
    captions = [caption(spec, say_position=bool(rng.integers(2))) for spec in specs]
    return ShapesData(images=images, captions=captions, specs=specs)
