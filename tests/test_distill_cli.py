"""`fastdiff distill`'s flags, data loading and output, on a micro teacher folder."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from fastdiff.distill.cli import add_distill_arguments, run_distill
from fastdiff.distill.data import image_folder
from fastdiff.errors import FastDiffError
from fastdiff.testing import save_tiny_pipeline


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_distill_arguments(parser)
    return parser.parse_args(argv)


def test_distill_shapes_from_a_teacher_folder_writes_a_loadable_preset(tmp_path, monkeypatch, capsys):
    from fastdiff import presets
    from fastdiff.distill import load_preset_file

    monkeypatch.setattr(presets, "_REGISTRY", dict(presets._REGISTRY))
    teacher = save_tiny_pipeline("sd1", tmp_path / "teacher", fp16_variant=False)
    out = tmp_path / "student"
    args = _parse("--teacher", str(teacher), "--data", "shapes", "--out", str(out), "--num-images", "8")
    args = argparse.Namespace(**{**vars(args), "max_steps": 2, "batch_size": 2, "sample_every": 2})
    assert run_distill(args) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    fields = json.loads((out / "preset.json").read_text())
    assert fields["name"] == "student" and fields["height"] == 64 and fields["repo_id"] == "pipeline"
    assert (out / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "samples" / "step-0000002.png").is_file() and (out / "losses.csv").is_file()
    assert load_preset_file(out).default_steps == 1


def test_a_preset_teacher_from_the_hub_cache(tmp_path, monkeypatch, no_network):
    from fastdiff import presets
    from fastdiff.testing import make_hf_cache

    monkeypatch.setattr(presets, "_REGISTRY", dict(presets._REGISTRY))
    cache = make_hf_cache(tmp_path / "hub", ["sd15"])
    out = tmp_path / "sd15-add"
    args = _parse("--teacher", "sd15", "--data", "shapes", "--out", str(out), "--cache-dir", str(cache))
    args = argparse.Namespace(**{**vars(args), "max_steps": 1, "batch_size": 2, "num_images": 4})
    assert run_distill(args) == 0
    fields = json.loads((out / "preset.json").read_text())
    assert fields["license"] == "creativeml-openrail-m" and fields["family"] == "sd1" and fields["width"] == 64


def test_bad_flags_fail_before_the_teacher_loads(tmp_path):
    with pytest.raises(FastDiffError, match="neither 'shapes' nor a folder"):
        run_distill(_parse("--teacher", "no-such-teacher", "--data", str(tmp_path / "x"), "--out", str(tmp_path)))
    with pytest.raises(FastDiffError, match="max_steps and batch_size"):
        run_distill(_parse("--teacher", "no-such-teacher", "--data", "shapes", "--out", "o", "--max-steps", "0"))


def test_flags_reach_the_config():
    args = _parse("--teacher", "t", "--data", "shapes", "--out", "o", "--r1-gamma", "0.1", "--distill-weight", "0")
    assert args.r1_gamma == 0.1 and args.distill_weight == 0.0 and args.max_steps == 1000 and args.max_seconds is None
    assert args.student_prediction is None  # as the teacher, unless asked
    assert (
        _parse("--teacher", "t", "--data", "s", "--out", "o", "--student-prediction", "sample").student_prediction
        == "sample"
    )


def test_image_folder_pairs_images_with_captions(tmp_path):
    for i, color in enumerate(("red", "blue")):
        Image.fromarray(np.full((80, 120, 3), 200 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.txt").write_text(f"a {color} picture\n")
    images, captions = image_folder(tmp_path, resolution=64)
    assert images.shape == (2, 3, 64, 64) and captions == ["a red picture", "a blue picture"]
    assert int(images[1].min()) == 200
    (tmp_path / "2.png").write_bytes((tmp_path / "0.png").read_bytes())
    with pytest.raises(FastDiffError, match="no caption file, e.g. '2.png'"):
        image_folder(tmp_path, resolution=64)
    with pytest.raises(FastDiffError, match="neither 'shapes' nor a folder"):
        image_folder(tmp_path / "nope", resolution=64)
