"""Loading through the real code path: hub ids and file names, from a cache snapshot, with no network call."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import fastdiff.hub
from fastdiff import FastDiffError, FewStepGenerator, presets
from fastdiff.testing import save_tiny_pipeline, tiny_unet_checkpoint


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("name", ["sdxl-turbo", "sdxl-lightning-4step", "sdxl-lightning-2step-lora"])
def test_offline_load_by_real_repo_id_makes_no_network_call(
    name: str, hub_cache: Path, no_network: None, monkeypatch: pytest.MonkeyPatch, small_sizes: None
) -> None:
    monkeypatch.setattr(fastdiff.hub.constants, "HF_HUB_OFFLINE", True)
    gen = FewStepGenerator.from_preset(name, device="cpu", cache_dir=hub_cache)  # local_files_only=None
    preset = presets.get(name)
    result = gen("a lighthouse", seed=0, height=128, width=128) if preset.height == 512 else None
    if result is not None:
        assert result.images[0].size == (128, 128)


def test_cached_load_without_offline_flag_makes_no_network_call(hub_cache: Path, no_network: None) -> None:
    gen = FewStepGenerator.from_preset("sd-turbo", device="cpu", cache_dir=hub_cache)
    assert gen.preset.name == "sd-turbo"


def test_not_cached_offline_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastdiff.hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FastDiffError) as info:
        FewStepGenerator.from_preset("sdxl-lightning-4step", device="cpu", cache_dir=tmp_path)
    message = str(info.value)
    assert "ByteDance/SDXL-Lightning/sdxl_lightning_4step_unet.safetensors" in message
    assert "fastdiff download sdxl-lightning-4step" in message


def test_local_files_only_true_never_goes_online(tmp_path: Path, no_network: None) -> None:
    with pytest.raises(FastDiffError, match="stabilityai/sdxl-turbo \\(pipeline\\)"):
        FewStepGenerator.from_preset("sdxl-turbo", device="cpu", cache_dir=tmp_path, local_files_only=True)


def test_local_diffusers_folder(tmp_path: Path) -> None:
    folder = save_tiny_pipeline("sd2", tmp_path / "sd2")
    gen = FewStepGenerator.from_preset("sd-turbo", source=folder, device="cpu")
    assert gen.pipeline.scheduler.config.timestep_spacing == "trailing"
    assert gen("a boat", seed=1, steps=2).images[0].size == (512, 512)


def test_pickle_checkpoint_needs_opt_in(hub_cache: Path) -> None:
    with pytest.raises(FastDiffError, match="allow_pickle=True"):
        FewStepGenerator.from_preset("dmd2-sdxl-4step", device="cpu", cache_dir=hub_cache, local_files_only=True)
    gen = FewStepGenerator.from_preset(
        "dmd2-sdxl-4step", device="cpu", cache_dir=hub_cache, local_files_only=True, allow_pickle=True
    )
    assert gen.preset.timesteps == (999, 749, 499, 249)


def test_checkpoint_of_another_step_count_is_refused(hub_cache: Path) -> None:
    two_step = presets.get("sdxl-lightning-2step").checkpoint
    assert two_step is not None
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(two_step.repo_id, two_step.filename, cache_dir=hub_cache, local_files_only=True)
    with pytest.raises(FastDiffError, match="checkpoint of preset 'sdxl-lightning-2step'"):
        FewStepGenerator.from_preset("sdxl-lightning-4step", checkpoint=path, cache_dir=hub_cache, device="cpu")


def test_user_unet_checkpoint_is_loaded(hub_cache: Path, tmp_path: Path) -> None:
    mine = tiny_unet_checkpoint("sdxl", tmp_path / "my_unet.safetensors", seed=42)
    gen = FewStepGenerator.from_preset(
        "sdxl-lightning-4step", checkpoint=mine, cache_dir=hub_cache, local_files_only=True, device="cpu"
    )
    from safetensors.torch import load_file

    expected = load_file(str(mine))
    key = next(iter(expected))
    assert torch.equal(gen.pipeline.unet.state_dict()[key], expected[key])


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "wrong-shape", "missing-key"])
def test_bad_unet_checkpoint_leaves_weights_unchanged(damage: str, hub_cache: Path, tmp_path: Path) -> None:
    gen = FewStepGenerator.from_preset("sdxl-lightning-4step", cache_dir=hub_cache, local_files_only=True, device="cpu")
    good = tiny_unet_checkpoint("sdxl", tmp_path / "good.safetensors", seed=5)
    bad = tmp_path / "bad.safetensors"
    if damage == "corrupt":
        bad.write_bytes(b"\x00" * 64)
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:
        from safetensors.torch import load_file

        state = load_file(str(good))
        key = sorted(state)[0]
        if damage == "wrong-shape":
            state[key] = torch.zeros(3, 3)
        else:
            del state[key]
        save_file(state, str(bad))
    before = _digest(gen.pipeline.unet)
    with pytest.raises(FastDiffError, match="corrupt|does not fit"):
        FewStepGenerator.from_pipeline("sdxl-lightning-4step", gen.pipeline, checkpoint=bad)
    assert _digest(gen.pipeline.unet) == before


def test_bad_lora_leaves_weights_unchanged(hub_cache: Path, tmp_path: Path) -> None:
    gen = FewStepGenerator.from_preset("sdxl-turbo", cache_dir=hub_cache, local_files_only=True, device="cpu")
    lora_preset = presets.get("sdxl-lightning-4step-lora")
    sd_lora = presets.get("lcm-lora-sd15").checkpoint
    assert sd_lora is not None
    from huggingface_hub import hf_hub_download

    src = hf_hub_download(sd_lora.repo_id, sd_lora.filename, cache_dir=hub_cache, local_files_only=True)
    assert lora_preset.checkpoint is not None
    wrong = tmp_path / lora_preset.checkpoint.filename  # an SD 1.5 LoRA under the SDXL file name
    shutil.copy(src, wrong)
    before = _digest(gen.pipeline.unet)
    with pytest.raises(FastDiffError, match="does not fit this pipeline"):
        FewStepGenerator.from_pipeline(lora_preset, gen.pipeline, checkpoint=wrong)
    assert _digest(gen.pipeline.unet) == before


def test_from_pipeline_leaves_the_users_pipeline_usable(load: Any) -> None:
    user_pipe = load("sdxl-turbo").pipeline
    before = type(user_pipe.scheduler).__name__, dict(user_pipe.scheduler.config)

    def card_image() -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(0)
        out = user_pipe("a cat", num_inference_steps=1, guidance_scale=0.0, height=64, width=64, generator=generator)
        return np.asarray(out.images[0])

    expected = card_image()
    gen = FewStepGenerator.from_pipeline("sdxl-lightning-1step", user_pipe)
    assert gen.pipeline.scheduler.config.prediction_type == "sample"
    assert (type(user_pipe.scheduler).__name__, dict(user_pipe.scheduler.config)) == before
    assert np.array_equal(card_image(), expected)  # the user's pipeline gives the very same image after wrapping


def test_from_pipeline_keeps_each_modules_dtype() -> None:
    """Wrapping shares the user's modules as they are: diffusers' own `from_pipe` would cast them all to float32."""
    from fastdiff.testing import tiny_pipeline

    user_pipe = tiny_pipeline("sd2").to(torch.bfloat16)
    gen = FewStepGenerator.from_pipeline("sd-turbo", user_pipe)
    gen("a cat", image=np.zeros((64, 64, 3), dtype=np.float32), strength=0.5)  # through the img2img twin
    assert gen.pipeline.unet is user_pipe.unet and gen.dtype == torch.bfloat16
    assert {user_pipe.unet.dtype, user_pipe.vae.dtype, user_pipe.text_encoder.dtype} == {torch.bfloat16}


def test_from_pipeline_refuses_another_family(load: Any) -> None:
    with pytest.raises(
        FastDiffError, match=r"needs a StableDiffusionXLPipeline \(or its img2img twin\), got StableDiff"
    ):
        FewStepGenerator.from_pipeline("sdxl-turbo", load("sd-turbo").pipeline)


def test_single_file_turbo_gives_trailing_turbo(hub_cache: Path, tmp_path: Path, load: Any, small_sizes: None) -> None:
    from fastdiff.testing import save_single_file

    reference = load("sdxl-turbo")
    path = save_single_file(reference.pipeline, tmp_path / "sd_xl_turbo_1.0_fp16.safetensors")
    gen = FewStepGenerator.from_preset(
        "sdxl-turbo", source=path, cache_dir=hub_cache, local_files_only=True, device="cpu"
    )
    assert type(gen.pipeline.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert gen.pipeline.scheduler.config.timestep_spacing == "trailing"
    a = gen("a fox", seed=4, height=128, width=128).images[0]
    b = reference("a fox", seed=4, height=128, width=128).images[0]
    assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1
