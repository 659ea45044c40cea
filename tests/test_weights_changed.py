"""Weights changed after load are used at every level: a LoRA fused into `gen.pipeline` (diffusers' `fuse_lora`,
whose peft merge writes `weight.data += delta` and bumps no write counter) and a text-encoder weight written
through `.data`. What fastdiff derived from the old weights (cached prompt embeddings, packed convolutions,
sub-pixel taps, OpenVINO's compiled models) must be derived again, and the image must be diffusers' own."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastdiff import FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.testing import tiny_lora

from .images import psnr

CALL: dict[str, Any] = {"steps": 4, "guidance_scale": 1.0, "height": 64, "width": 64}
LEVELS = {
    "none": "none",
    "default, torch engine": Optimizations.preset("default", engine="torch"),
    "default, OpenVINO f32": Optimizations.preset("default", engine="openvino", openvino_precision="f32"),
}
# f32 everywhere: "none" is bit-exact; the CPU kernels and OpenVINO reorder sums (0-1 steps, test_optimize.py and
# test_openvino_engine.py); stale weights move the image by the whole change (a mean of several steps).
MAX_STEPS = {"none": 0, "default, torch engine": 2, "default, OpenVINO f32": 2}


def _image(gen: FewStepGenerator) -> np.ndarray:
    return np.asarray(gen("a watercolor fox", seed=0, **CALL).images[0], np.int16)


def _final_norm(pipe: Any) -> torch.Tensor:
    """The text encoder's last LayerNorm weight (transformers' CLIPTextModel: under `text_model` or not)."""
    encoder = getattr(pipe.text_encoder, "text_model", pipe.text_encoder)
    weight: torch.Tensor = encoder.final_layer_norm.weight
    return weight


def _change(gen: FewStepGenerator, lora: Path) -> None:
    pipe = gen.pipeline
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="user")
    pipe.fuse_lora(lora_scale=4.0, adapter_names=["user"])  # a change that shows on tiny models
    pipe.unload_lora_weights()
    norm = _final_norm(pipe)
    norm.data.mul_(3.0)  # through `.data`: the write counter stays as it was
    assert norm._version == 0


@pytest.mark.parametrize("level", list(LEVELS))
def test_weights_changed_after_load_are_used(level: str, hub_cache: Path, ov_cache: Path, tmp_path: Path) -> None:
    if "OpenVINO" in level:
        pytest.importorskip("openvino", reason="the OpenVINO engine needs `pip install 'fastdiff[cpu]'`")
    where: dict[str, Any] = {"device": "cpu", "cache_dir": hub_cache, "local_files_only": True}
    lora = tiny_lora(presets.get("sd15").family, tmp_path / "lora.safetensors", seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FastDiffWarning)
        gen = FewStepGenerator.from_preset("sd15", optimize=LEVELS[level], **where)
        before = _image(gen)  # derives and caches from the weights as loaded
        _change(gen, lora)
        after = _image(gen)
        reference = FewStepGenerator.from_preset("sd15", optimize="none", **where)
        _change(reference, lora)  # before any call: nothing derived yet
        expected = _image(reference)
    assert np.abs(expected - before).mean() > 3  # the change shows: stale weights would be far outside MAX_STEPS
    assert np.abs(after - expected).max() <= MAX_STEPS[level], f"{level}: ran the weights as loaded"
    if MAX_STEPS[level]:
        assert psnr(after, expected) >= 45.0
    assert torch.equal(_final_norm(gen.pipeline), _final_norm(reference.pipeline))
