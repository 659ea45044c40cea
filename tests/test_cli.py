"""The `fastdiff` command: tables, PNGs and one-line errors (never a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastdiff import presets
from fastdiff.cli import main
from fastdiff.serving.bulk.manifest import image_name
from fastdiff.testing import save_tiny_pipeline

from .cards import card_pipeline
from .test_parity import SHAPES_PROMPT


def test_presets_table_lists_every_preset_and_licence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in presets.names():
        assert name in out
    turbo_line = next(line for line in out.splitlines() if line.startswith("sdxl-turbo "))
    assert "1-4" in turbo_line and "512x512" in turbo_line and "non-commercial" in turbo_line
    assert "non-commercial" in next(line for line in out.splitlines() if line.startswith("dmd2-sdxl-4step"))
    assert "non-commercial" not in next(line for line in out.splitlines() if line.startswith("sdxl-lightning-4step "))


@pytest.fixture(scope="module")
def tiny_sd2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline("sd2", tmp_path_factory.mktemp("cli") / "sd2")


def test_generate_writes_pngs_and_timings(tiny_sd2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fox.png"
    args = ["generate", "a red fox", "--preset", "sd-turbo", "--source", str(tiny_sd2), "--device", "cpu"]
    assert (
        main([*args, "--seed", "3", "--num-images", "2", "--height", "256", "--width", "256", "--output", str(out)])
        == 0
    )
    captured = capsys.readouterr()
    assert "warning: sd-turbo was trained at 512x512" in captured.err
    for i in range(2):
        with Image.open(tmp_path / f"fox-{i}.png") as img:
            assert img.size == (256, 256)
    assert "seed=3" in captured.out and "denoise" in captured.out
    img2img = tmp_path / "fox2.png"
    assert main([*args, "--image", str(tmp_path / "fox-0.png"), "--strength", "0.5", "--output", str(img2img)]) == 0
    with Image.open(img2img) as img:
        assert img.size == (256, 256)


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["--preset", "sdxl_turbo"], "did you mean 'sdxl-turbo'?"),
        (["--preset", "sd-turbo", "--steps", "9"], "runs 1-4 steps"),
        (["--preset", "sd-turbo", "--height", "500"], "use 496 or 504"),
        (["--preset", "sd-turbo", "--strength", "0.5"], "pass image="),
        (["--preset", "sd-turbo", "--image", "/nonexistent.png"], "not a readable image"),
        (["--preset", "sd-turbo", "--source", "/nonexistent"], "does not exist"),
    ],
)
def test_generate_bad_input_is_one_line(
    argv: list[str], hint: str, tiny_sd2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = [] if "--source" in argv else ["--source", str(tiny_sd2)]
    code = main(["generate", "a fox", *source, *argv, "--device", "cpu", "--output", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert hint in err


def test_console_script_module_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastdiff.cli", "generate", "x", "--preset", "nope", "--output", "x.png"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown preset 'nope'")
    assert "Traceback" not in done.stderr


@pytest.mark.usefixtures("no_network")
def test_generate_without_a_preset_runs_the_shipped_student_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "circle.png"
    assert main(["generate", "a large red circle on a blue background", "--seed", "0", "--output", str(out)]) == 0
    assert "fastdiff-shapes steps=1 seed=0" in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.size == (64, 64)


@pytest.mark.parametrize("command", ["generate", "batch"])
def test_optimize_none_writes_exactly_diffusers_image(command: str, tmp_path: Path) -> None:
    """Both commands default to the shipped student and take --optimize; "none" is the card's diffusers image,
    pixel for pixel (the CLI's only way to it on a CPU where "default" runs OpenVINO)."""
    pipe, kwargs = card_pipeline(presets.DEFAULT_PRESET, tmp_path)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(7)
    expected = np.asarray(pipe(SHAPES_PROMPT, num_inference_steps=2, generator=generator, **kwargs).images[0])
    if command == "generate":
        out = tmp_path / "shape.png"
        argv = ["generate", SHAPES_PROMPT, "--output", str(out), "--seed", "7"]
    else:
        (tmp_path / "prompts.txt").write_text(SHAPES_PROMPT + "\n")
        argv = ["batch", str(tmp_path / "prompts.txt"), "--out", str(tmp_path / "run"), "--seed", "7", "--no-progress"]
        out = tmp_path / "run" / image_name(0)
    assert main([*argv, "--steps", "2", "--device", "cpu", "--optimize", "none"]) == 0
    with Image.open(out) as img:
        got = np.asarray(img.convert("RGB"))
    assert expected.std() > 5, "a flat reference image would prove nothing"
    assert np.array_equal(got, expected)


@pytest.mark.usefixtures("cpu_engine_default")
def test_generate_times_the_engines_warmup_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastdiff import openvino_cache

    monkeypatch.setenv("FASTDIFF_CACHE", str(tmp_path))  # nothing converted yet
    openvino_cache._live.clear()
    args = ["generate", "a red circle on a blue background", "--preset", "fastdiff-shapes", "--device", "cpu"]
    for run in ("converts", "reads the disk cache"):
        assert main([*args, "--output", str(tmp_path / "shape.png")]) == 0, run
        out, err = capsys.readouterr()
        notices = [line for line in err.splitlines() if "OpenVINO" in line]
        said = ["warning: OpenVINO converted the text encoder, UNet and VAE decoder for 64x64"]
        assert [n[: len(said[0])] for n in notices] == (said if run == "converts" else []), err
        timings = out.splitlines()[-1]
        assert "decode" in timings and "s readying the CPU engine for this size" in timings, timings
        assert timings.index("total") < timings.index("readying")  # the image's own total, then the warm-up
        openvino_cache._live.clear()  # the next run as a new process
