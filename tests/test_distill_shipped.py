"""The shipped `fastdiff-shapes` models: they load offline, run their step counts, are small, follow prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fastdiff import FewStepGenerator, presets
from fastdiff.distill.classifier import accuracy, images_to_tensor, shipped_classifier
from fastdiff.distill.evaluation import held_out_specs
from fastdiff.distill.shapes import caption
from fastdiff.presets import SHIPPED_MODELS as MODELS

TEACHER, STUDENT = presets.get("fastdiff-shapes-teacher"), presets.get("fastdiff-shapes")

# Measured when the student of the 4-step teacher target was shipped (docs/distill.md, "The shipped model"): the
# student at one step, seed i for prompt i, through `FewStepGenerator`'s default level, read back by the shipped
# classifier on the first 32 held-out prompts (combinations never trained on), on an Intel Xeon family 6 model 167:
# colour 0.97, all four attributes 0.78 (25 of 32; the teacher@20 read the same way: 0.94 and 0.81; chance: 1/8 and
# about 1/1700). Each bound sits 4 prompts below the measured value, so that a different CPU's kernels flipping a few
# borderline images do not fail the suite; the students shipped before the last three (all four 0.59, and 0.25 with
# colour 0.47 on the fixed prompts) and a broken load, scheduler, VAE or text path do.
COLOR_THRESHOLD, ALL_THRESHOLD = 0.84, 0.65
PROMPTS = 32

_LOADED: dict[str, FewStepGenerator] = {}


def _generator(name: str) -> FewStepGenerator:
    if name not in _LOADED:
        _LOADED[name] = FewStepGenerator.from_preset(name, device="cpu")
    return _LOADED[name]


def _count_unet_calls(gen: FewStepGenerator, **kwargs: object) -> list[int]:
    """The UNet batch size of each call one generation makes."""
    batches: list[int] = []
    handle = gen.pipeline.unet.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    try:
        gen("a red circle in the top left on a blue background", seed=0, **kwargs)
    finally:
        handle.remove()
    return batches


def test_the_shipped_presets_are_in_the_default_table_and_point_into_the_package():
    assert presets.get("fastdiff-shapes") == STUDENT and presets.get("fastdiff-shapes-teacher") == TEACHER
    for preset in (TEACHER, STUDENT):
        assert presets.is_shipped(preset)
        assert Path(preset.repo_id).is_absolute() and (Path(preset.repo_id) / "model_index.json").is_file()
    assert not presets.is_shipped(presets.get("sdxl-turbo"))


@pytest.mark.usefixtures("no_network")
def test_the_teacher_runs_twenty_guided_steps_offline():
    gen = _generator("fastdiff-shapes-teacher")
    assert gen.preset.default_steps == 20 and gen.preset.guidance_scale > 1
    # PNDM's PLMS warm-up evaluates one timestep twice, so 20 steps are 21 UNet calls, exactly as SD 1.5's; CFG
    # doubles the batch, not the calls.
    assert _count_unet_calls(gen) == [2] * 21


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_the_student_runs_one_to_four_unguided_steps_offline(steps):
    gen = _generator("fastdiff-shapes")
    assert _count_unet_calls(gen, steps=steps) == [1] * steps


def test_shipped_weights_are_fp16_and_small():
    files = [p for p in MODELS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    tensors = [p for p in files if p.suffix == ".safetensors"]
    assert len(tensors) == 6  # vae, text_encoder and unet of each folder
    for path in tensors:
        with safe_open(str(path), framework="pt") as f:
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        assert dtypes <= {"F16", "I64"}, (path, dtypes)  # I64: CLIP's position ids, when saved


@pytest.mark.usefixtures("no_network")
def test_the_student_follows_the_prompt_at_one_step():
    gen = _generator("fastdiff-shapes")
    specs = held_out_specs()[:PROMPTS]
    images = [np.asarray(gen(caption(spec), seed=i).image) for i, spec in enumerate(specs)]
    with torch.no_grad():
        scores = accuracy(shipped_classifier().float(), images_to_tensor(np.stack(images)), specs)
    assert scores["color"] >= COLOR_THRESHOLD, scores
    assert scores["all"] >= ALL_THRESHOLD, scores


@pytest.mark.usefixtures("no_network")
def test_max_keeps_the_shipped_vae_and_download_has_nothing_to_fetch(capsys: pytest.CaptureFixture[str]) -> None:
    from fastdiff.cli import main

    gen = FewStepGenerator.from_preset("fastdiff-shapes", device="cpu", optimize="max")
    # TAESD decodes SD's latent space, not this model's: "max" keeps the model's own AutoencoderTiny (16 channels,
    # where TAESD has 64).
    assert type(gen.pipeline.vae).__name__ == "AutoencoderTiny"
    assert gen.pipeline.vae.config.decoder_block_out_channels == [16] * 4
    assert gen("a red circle on a blue background", seed=0).images[0].size == (64, 64)
    assert main(["download", "fastdiff-shapes"]) == 0
    assert capsys.readouterr().out.strip() == STUDENT.repo_id
