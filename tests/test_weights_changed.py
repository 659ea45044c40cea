"""Weight changes after load are explicit, and every engine and level runs the new weights: `gen.load_lora`
(diffusers' `load_lora_weights` + `fuse_lora`), `gen.load_checkpoint`, and a direct write to `gen.pipeline`'s
weights announced with `gen.weights_changed()`. What fastdiff derived from the old weights (cached prompt
embeddings, OpenVINO's compiled models, on disk too) is derived again, and the image is diffusers' own."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.testing import tiny_lora
from fastdiff.weights import WeightsIdentity

from .images import psnr

CALL: dict[str, Any] = {"steps": 4, "guidance_scale": 1.0, "height": 64, "width": 64}
LEVELS = {
    "none": "none",
    "default, torch engine": Optimizations.level("default", engine="torch"),
    "default, OpenVINO f32": Optimizations.level("default", engine="openvino", precision="fp32"),
}
# f32 everywhere: "none" and torch's "default" are bit-exact; OpenVINO reorders sums (0-1 steps,
# test_openvino_engine.py); stale weights move the image by the whole change (a mean of several steps).
MAX_STEPS = {"none": 0, "default, torch engine": 0, "default, OpenVINO f32": 2}
SCALE = 4.0  # a LoRA scale whose change shows on tiny models


def _image(gen: FewStepGenerator) -> np.ndarray:
    return np.asarray(gen("a watercolor fox", seed=0, **CALL).images[0], np.int16)


def _final_norm(pipe: Any) -> torch.Tensor:
    """The text encoder's last LayerNorm weight (transformers' CLIPTextModel: under `text_model` or not)."""
    encoder = getattr(pipe.text_encoder, "text_model", pipe.text_encoder)
    weight: torch.Tensor = encoder.final_layer_norm.weight
    return weight


def _write(pipe: Any) -> None:
    """A user's direct writes, through `.data` (no write counter moves): a text-encoder and a UNet weight."""
    _final_norm(pipe).data.mul_(3.0)
    pipe.unet.conv_out.weight.data.mul_(3.0)


def _diffusers_lora(pipe: Any, lora: Path) -> None:
    """What a diffusers user writes for a fused LoRA."""
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="user")
    pipe.fuse_lora(lora_scale=SCALE, adapter_names=["user"])
    pipe.unload_lora_weights()


def _skip_without_openvino(level: str) -> None:
    if "OpenVINO" in level:
        pytest.importorskip("openvino", reason="the OpenVINO engine needs `pip install openvino`")


@pytest.fixture
def where(hub_cache: Path, ov_cache: Path, small_sizes: None) -> dict[str, Any]:
    return {"device": "cpu", "cache_dir": hub_cache, "local_files_only": True}


@pytest.mark.parametrize("level", list(LEVELS))
def test_load_lora_gives_diffusers_fused_image(level: str, where: dict[str, Any], tmp_path: Path) -> None:
    _skip_without_openvino(level)
    lora = tiny_lora(presets.get("sd15").family, tmp_path / "lora.safetensors", seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FastDiffWarning)
        gen = FewStepGenerator.from_preset("sd15", optimize=LEVELS[level], **where)
        before = _image(gen)  # derives and caches from the weights as loaded
        gen.load_lora(lora, scale=SCALE)
        after = _image(gen)
        reference = FewStepGenerator.from_preset("sd15", optimize="none", **where)
        _diffusers_lora(reference.pipeline, lora)  # before any call: nothing derived yet
        expected = _image(reference)
    assert gen.weights.version == 1 and gen.embedding_cache.misses == 2  # the prompt encoded again after the change
    assert np.abs(expected - before).mean() > 3  # the change shows: stale weights would be far outside MAX_STEPS
    assert np.abs(after - expected).max() <= MAX_STEPS[level], f"{level}: ran the weights as loaded"
    if MAX_STEPS[level]:
        assert psnr(after, expected) >= 45.0


@pytest.mark.parametrize("level", list(LEVELS))
def test_a_direct_write_and_weights_changed(level: str, where: dict[str, Any], tmp_path: Path) -> None:
    _skip_without_openvino(level)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FastDiffWarning)
        gen = FewStepGenerator.from_preset("sd15", optimize=LEVELS[level], **where)
        before = _image(gen)
        _write(gen.pipeline)
        gen.weights_changed()
        after = _image(gen)
        reference = FewStepGenerator.from_preset("sd15", optimize="none", **where)
        _write(reference.pipeline)
        expected = _image(reference)
    assert gen.weights.provenance is None  # an unknown change: the disk cache hashes the weights from now on
    assert np.abs(expected - before).mean() > 3
    assert np.abs(after - expected).max() <= MAX_STEPS[level], f"{level}: ran the weights as loaded"


def test_load_lora_unfused_is_diffusers_adapter(where: dict[str, Any], tmp_path: Path) -> None:
    lora = tiny_lora(presets.get("sd15").family, tmp_path / "lora.safetensors", seed=3)
    gen = FewStepGenerator.from_preset("sd15", optimize="none", **where)
    gen.load_lora(lora, scale=SCALE, fuse=False)
    reference = FewStepGenerator.from_preset("sd15", optimize="none", **where)
    reference.pipeline.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="user")
    reference.pipeline.set_adapters(["user"], adapter_weights=[SCALE])
    assert np.array_equal(_image(gen), _image(reference))


def test_load_checkpoint_replaces_the_unet(where: dict[str, Any], tmp_path: Path) -> None:
    gen = FewStepGenerator.from_preset("sd-turbo", optimize="none", **where)
    before = _image(gen)
    state = {k: v * 1.5 if k.endswith("weight") else v for k, v in gen.pipeline.unet.state_dict().items()}
    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    gen.load_checkpoint(path)
    assert gen.weights.version == 1 and gen.weights.provenance is not None
    assert gen.weights.provenance[-1].startswith("checkpoint=")
    assert np.abs(_image(gen) - before).mean() > 3
    save_file({"conv_in.weight": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(FastDiffError):
        gen.load_checkpoint(tmp_path / "wrong.safetensors")  # checked first: the weights stay as they were
    assert gen.weights.version == 1


def test_a_lora_that_is_not_there(where: dict[str, Any], tmp_path: Path) -> None:
    gen = FewStepGenerator.from_preset("sd-turbo", optimize="none", **where)
    with pytest.raises(FastDiffError, match="does not exist"):
        gen.load_lora(tmp_path / "missing.safetensors")
    with pytest.raises(FastDiffError, match="weight_name="):
        gen.load_lora(tmp_path)


def test_provenance_names_the_files_and_each_change(where: dict[str, Any], tmp_path: Path) -> None:
    gen = FewStepGenerator.from_preset("sd-turbo", optimize="none", **where)
    again = FewStepGenerator.from_preset("sd-turbo", optimize="none", **where)
    assert gen.weights.provenance is not None and gen.weights == again.weights  # the same files, the same name
    assert "stabilityai/sd-turbo@" in gen.weights.provenance[2]
    lora = tiny_lora(presets.get("sd-turbo").family, tmp_path / "lora.safetensors", seed=3)
    gen.load_lora(lora, scale=0.5)
    assert gen.weights.module_key("unet") != again.weights.module_key("unet")
    assert gen.weights.module_key("unet") != gen.weights.module_key("vae")
    assert WeightsIdentity(None).module_key("unet") is None
