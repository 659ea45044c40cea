"""The `shapes` data set draws what its captions say, and the classifier reads it back."""

from __future__ import annotations

import numpy as np
import pytest

from fastdiff.distill import ShapeSpec, caption, draw, make_shapes, parse_caption
from fastdiff.distill.classifier import (
    ShapesClassifier,
    evaluate,
    images_to_tensor,
    shipped_classifier,
    train_classifier,
)
from fastdiff.distill.shapes import COLORS, POSITIONS, SHAPES, sample_specs
from fastdiff.errors import FastDiffError

GRAMMAR = (
    r"a (small |large )?(red|green|blue|yellow|orange|purple|white|black) (circle|square|triangle)"
    r"( in the (center|top left|top right|bottom left|bottom right))? on a "
    r"(red|green|blue|yellow|orange|purple|white|black) background"
)


def _mask(image: np.ndarray, color: str) -> np.ndarray:
    return np.all(image == np.array(COLORS[color], dtype=np.uint8), axis=-1)


def test_same_seed_same_images_other_seed_other_images():
    a, b, c = make_shapes(32, seed=3), make_shapes(32, seed=3), make_shapes(32, seed=4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (32, 64, 64, 3) and a.images.dtype == np.uint8


def test_captions_follow_the_grammar_and_parse_back_to_their_spec():
    import re

    data = make_shapes(300, seed=0)
    assert all(re.fullmatch(GRAMMAR, text) for text in data.captions)
    assert all(parse_caption(text) == spec for text, spec in zip(data.captions, data.specs, strict=True))
    assert any(" in the center" in t for t in data.captions)  # both forms of a centred caption occur
    assert any(s.position == "center" and " in the " not in t for t, s in zip(data.captions, data.specs, strict=True))
    assert caption(ShapeSpec("circle", "red", "blue", "top left", "small")) == (
        "a small red circle in the top left on a blue background"
    )
    assert parse_caption("a green square on a black background") == ShapeSpec("square", "green", "black")


def test_every_attribute_value_is_drawn():
    specs = sample_specs(400, seed=1)
    assert {s.shape for s in specs} == set(SHAPES)
    assert {s.color for s in specs} == set(COLORS) == {s.background for s in specs}
    assert {s.position for s in specs} == set(POSITIONS)
    assert {s.size for s in specs} == {"small", "medium", "large"}
    assert all(s.color != s.background for s in specs)


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_pixels_show_the_caption(size):
    height, width = size
    data = make_shapes(200, seed=2, height=height, width=width)
    for image, spec in zip(data.images, data.specs, strict=True):
        assert image.shape == (height, width, 3)
        for corner in (image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]):
            assert tuple(corner) == COLORS[spec.background]
        shape = _mask(image, spec.color)
        assert np.all(shape | _mask(image, spec.background))  # no third colour, no anti-aliasing
        ys, xs = np.nonzero(shape)
        cx, cy = xs.mean() / width, ys.mean() / height
        want_x = 0.5 if spec.position == "center" else (0.28 if "left" in spec.position else 0.72)
        want_y = 0.5 if spec.position == "center" else (0.28 if "top" in spec.position else 0.72)
        assert abs(cx - want_x) < 0.03 and abs(cy - want_y) < 0.06  # a triangle's pixel mean sits a bit low
        assert shape[int(want_y * height), int(want_x * width)]
        fill = shape.sum() / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1))  # area over bounding box
        expected = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}[spec.shape]
        assert abs(fill - expected) < 0.1, (spec, fill)


def test_sizes_are_ordered():
    area = {
        size: _mask(np.asarray(draw(ShapeSpec("circle", "red", "blue", size=size))), "red").sum()
        for size in ("small", "medium", "large")
    }
    assert area["small"] < area["medium"] < area["large"]


def test_bad_inputs_raise():
    with pytest.raises(FastDiffError, match="unknown shape 'hexagon'"):
        ShapeSpec("hexagon", "red", "blue")
    with pytest.raises(FastDiffError, match="invisible"):
        ShapeSpec("circle", "red", "red")
    with pytest.raises(FastDiffError, match="at least 64×64"):
        draw(ShapeSpec("circle", "red", "blue"), height=32, width=32)
    with pytest.raises(FastDiffError, match="not a shapes caption"):
        parse_caption("a photo of a cat")


def test_the_shipped_classifier_reads_attributes_back():
    model = shipped_classifier()
    scores = evaluate(model, make_shapes(1000, seed=12345))  # seeds never seen in training (seed 0)
    assert all(scores[name] >= 0.95 for name in ("shape", "color", "background", "position", "all")), scores
    spec = ShapeSpec("triangle", "yellow", "purple", "bottom right", "large")
    picked = model.predict(images_to_tensor(np.asarray(draw(spec))[None]))[0]
    assert picked == {"shape": "triangle", "color": "yellow", "background": "purple", "position": "bottom right"} | {
        "size": "large"
    }


def test_training_the_classifier_learns_and_round_trips(tmp_path):
    model = train_classifier(seed=0, steps=100, num_images=1024)  # a third of the shipped run: the easy ones
    scores = evaluate(model, make_shapes(300, seed=5))
    assert scores["background"] >= 0.95 and scores["position"] >= 0.95, scores
    loaded = ShapesClassifier.load(model.save(tmp_path / "classifier.safetensors"))
    assert evaluate(loaded, make_shapes(50, seed=7)) == evaluate(model, make_shapes(50, seed=7))
