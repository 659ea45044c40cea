"""The defects an audit of the device recipes found, each shown by a test that failed before it was fixed."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import fastdiff.hub
from fastdiff import FastDiffError, FewStepGenerator, Optimizations, presets
from fastdiff.testing import tiny_unet_checkpoint

PROMPT = "a lighthouse at dusk"


def _pixels(gen: FewStepGenerator, prompt: str = PROMPT, **kwargs: Any) -> np.ndarray:
    return np.asarray(gen(prompt, seed=0, height=64, width=64, **kwargs).images[0], np.int16)


def _fresh(name: str, hub_cache: Path, **kwargs: Any) -> FewStepGenerator:
    return FewStepGenerator.from_preset(name, device="cpu", cache_dir=hub_cache, local_files_only=True, **kwargs)


def test_embedding_cache_forgets_after_weights_changed(load: Any, small_sizes: None) -> None:
    gen = FewStepGenerator.from_pipeline("sd-turbo", copy.deepcopy(load("sd-turbo").pipeline))
    first = gen.encode("a cat")["prompt_embeds"].clone()
    with torch.no_grad():
        for p in gen.pipeline.text_encoder.parameters():
            p.mul_(1.5)  # in place, as load_state_dict or fuse_lora write
    assert torch.equal(gen.encode("a cat")["prompt_embeds"], first)  # no per-call weight scan: told, not detected
    gen.weights_changed()
    again = gen.encode("a cat")["prompt_embeds"]
    assert not torch.allclose(first, again) and gen.embedding_cache.misses == 2


def test_from_pipeline_takes_a_compiled_pipeline(load: Any, tmp_path: Path, small_sizes: None) -> None:
    recipe = Optimizations.level("none", compile=True, compile_backend="eager")
    mine_to_change = copy.deepcopy(
        load("sdxl-turbo").pipeline
    )  # the checkpoint goes into this UNet, not the shared one
    compiled = FewStepGenerator.from_pipeline("sdxl-lightning-4step", mine_to_change, optimize=recipe)
    assert hasattr(compiled.pipeline.unet, "_orig_mod")
    mine = tiny_unet_checkpoint("sdxl", tmp_path / "mine.safetensors", seed=3, base_seed=1)
    again = FewStepGenerator.from_pipeline("sdxl-lightning-4step", compiled.pipeline, checkpoint=mine, optimize=recipe)
    unet = again.pipeline.unet
    assert hasattr(unet, "_orig_mod") and not hasattr(unet._orig_mod, "_orig_mod")  # compiled once, not twice
    assert not hasattr(again.pipeline.vae.decoder._orig_mod, "_orig_mod")


def test_warmup_and_optimize_touch_no_process_wide_state(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other threads must not see warning filters or torch's parameter-conversion flag flipped."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("process-wide state changed")

    monkeypatch.setattr(torch.__future__, "set_overwrite_module_params_on_conversion", refuse)
    recipe = Optimizations.level("default", compile=False, precision="bf16", engine="torch")
    gen = FewStepGenerator.from_pipeline("sd-turbo", load("sd-turbo").pipeline, optimize=recipe)
    assert gen.dtype == torch.bfloat16 and load("sd-turbo").dtype == torch.float32
    filters = list(warnings.filters)
    monkeypatch.setattr(warnings, "catch_warnings", refuse)
    monkeypatch.setattr(warnings, "simplefilter", refuse)
    gen.warmup(height=512, width=512)
    assert warnings.filters == filters


def test_max_loads_the_tiny_vae_from_the_cache_offline(
    hub_cache: Path, no_network: None, monkeypatch: pytest.MonkeyPatch, small_sizes: None
) -> None:
    from diffusers import AutoencoderTiny

    monkeypatch.setattr(fastdiff.hub.constants, "HF_HUB_OFFLINE", True)
    gen = FewStepGenerator.from_preset("sdxl-turbo", device="cpu", cache_dir=hub_cache, optimize="max")
    assert isinstance(gen.pipeline.vae, AutoencoderTiny)
    assert _pixels(gen).std() > 1


def test_download_fetches_only_what_runs(monkeypatch: pytest.MonkeyPatch, hub_cache: Path) -> None:
    """fp16 variant files when asked for float16, the model_index modules only (not vae_1_0/), the tiny VAE."""
    from fastdiff.cli import main

    snapshots: list[tuple[str, list[str]]] = []
    index = '{"_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "U"], "vae": ["diffusers", "A"]}'
    (hub_cache / "model_index.json").write_text(index)

    def fake_snapshot(repo: str, *, allow_patterns: list[str], **kwargs: Any) -> str:
        snapshots.append((repo, allow_patterns))
        return repo

    monkeypatch.setattr(fastdiff.hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(fastdiff.hub, "hf_hub_download", lambda repo, name, **kw: str(hub_cache / name))
    assert main(["download", "sdxl-lightning-4step-lora", "--dtype", "float16", "--device", "cpu"]) == 0
    (repo, patterns), (tiny, tiny_patterns) = snapshots
    assert repo == presets.get("sdxl-lightning-4step-lora").repo_id and tiny == "madebyollin/taesdxl"
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in patterns and not any("vae_1_0" in p for p in patterns)
    assert "diffusion_pytorch_model.safetensors" in tiny_patterns


def test_offline_error_names_the_dtype_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastdiff.hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FastDiffError, match="fastdiff download sd-turbo --dtype float16"):
        FewStepGenerator.from_preset("sd-turbo", device="cpu", dtype="float16", cache_dir=tmp_path)


def test_sizes_follow_diffusers_multiple_of_8(load: Any) -> None:
    gen = load("sd-turbo")
    monkeypatch_factor = copy.copy(gen)  # a pipeline whose VAE downsamples by 4 still needs multiples of 8
    monkeypatch_factor.pipeline = copy.copy(gen.pipeline)
    monkeypatch_factor.pipeline.vae_scale_factor = 4
    with pytest.raises(FastDiffError, match="height=500 is not a multiple of 8"):
        monkeypatch_factor("a cat", height=500)


@pytest.mark.parametrize("size", [(5000, 64), (4, 64)])
def test_absurd_img2img_input_is_refused(size: tuple[int, int], load: Any) -> None:
    with pytest.raises(FastDiffError, match="img2img takes sides from 8 to 4096"):
        load("sdxl-turbo")("a cat", image=Image.new("RGB", size), strength=0.5)


def test_dmd2_one_step_img2img_does_not_ignore_strength(load: Any, small_sizes: None) -> None:
    gen = load("dmd2-sdxl-1step")
    image = Image.new("RGB", (64, 64), (90, 160, 30))
    with pytest.raises(FastDiffError, match=r"starts img2img only at its timesteps \(399,\).*near 0.4"):
        gen("a cat", image=image, strength=0.9)
    assert gen("a cat", image=image, strength=0.4).images[0].size == (64, 64)


def test_hub_source_without_fp16_files_says_so(tmp_path: Path) -> None:
    from fastdiff.testing import make_hf_cache

    make_hf_cache(tmp_path, ["sd-turbo"], fp16_variant=False)
    with pytest.raises(FastDiffError, match="has no fp16 files.*variant=None"):
        FewStepGenerator.from_preset(
            "sd-turbo", device="cpu", dtype="float16", cache_dir=tmp_path, local_files_only=True
        )


def test_from_pipeline_checks_the_class_not_its_name(load: Any) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    pipe = load("sd-turbo").pipeline
    inpaint = StableDiffusionInpaintPipeline(**{k: v for k, v in pipe.components.items()})
    with pytest.raises(FastDiffError, match="needs a StableDiffusionPipeline .* got StableDiffusionInpaintPipeline"):
        FewStepGenerator.from_pipeline("sd-turbo", inpaint)


def test_offloaded_pipeline_reports_its_execution_device(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = load("sd-turbo").pipeline
    # What accelerate's offload hooks make `_execution_device` say while the weights sit on the CPU.
    monkeypatch.setattr(type(pipe), "_execution_device", property(lambda self: torch.device("meta")))
    gen = FewStepGenerator(presets.get("sd-turbo"), pipe)
    assert gen.device == torch.device("meta") and pipe.device == torch.device("cpu")


def test_diffusers_floor_is_the_version_the_code_needs() -> None:
    from importlib.metadata import requires

    assert "diffusers>=0.42" in (requires("fastdiff") or [])


def test_cli_start_prints_no_library_warning() -> None:
    done = subprocess.run([sys.executable, "-m", "fastdiff.cli", "presets"], capture_output=True, text=True)
    assert done.returncode == 0 and "sdxl-turbo" in done.stdout
    assert done.stderr == ""


def test_bench_warms_a_cuda_graph_row_twice() -> None:
    """reduce-overhead records its CUDA graph on the second call: one warm-up run would time the recording."""
    from types import SimpleNamespace

    from fastdiff.bench.runner import ScenarioRun

    calls: list[str] = []
    run = ScenarioRun.__new__(ScenarioRun)  # the warm-up logic alone, without loading a model
    run.config = SimpleNamespace(warmup=1, repeat_prompt=True)  # type: ignore[assignment]
    run._call = lambda prompt, i: calls.append(prompt)  # type: ignore[assignment, misc]
    run.clock = lambda: 0.0
    run._timed = SimpleNamespace(warmup_s=0.0)  # type: ignore[assignment]
    for generator, expected in ((SimpleNamespace(warmup_runs=2), 2), (None, 1)):
        calls.clear()
        run.loaded = SimpleNamespace(generator=generator)  # type: ignore[assignment]
        run.warm_up()
        assert len(calls) == expected
