"""Every refusal names its fix; every warning names its risk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, presets

IMAGE = Image.new("RGB", (512, 512), (120, 80, 40))

# (call arguments for the sdxl-turbo generator, the hint the message must contain)
BAD_CALLS: list[tuple[dict[str, Any], str]] = [
    ({"steps": 8}, "runs 1-4 steps"),
    ({"steps": 0}, "runs 1-4 steps"),
    ({"steps": 2.0}, "steps must be an int"),
    ({"steps": True}, "steps must be an int"),
    ({"steps": "1"}, "steps must be an int"),
    ({"height": 500}, "use 496 or 504"),
    ({"width": 4}, "use 8"),
    ({"height": 0}, "positive int"),
    ({"width": -512}, "positive int"),
    ({"height": 100_000}, "larger than 4096"),
    ({"height": 512.0}, "positive int"),
    ({"guidance_scale": math.nan}, "finite number"),
    ({"guidance_scale": math.inf}, "finite number"),
    ({"guidance_scale": -1.0}, "≥ 0"),
    ({"guidance_scale": "high"}, "finite number"),
    ({"strength": 0.5}, "pass image="),
    ({"image": IMAGE, "strength": 0.0}, "(0, 1]"),
    ({"image": IMAGE, "strength": 1.5}, "(0, 1]"),
    ({"image": IMAGE, "strength": -0.2}, "(0, 1]"),
    ({"image": "photo.png"}, "PIL.Image.open"),
    ({"seed": -1}, "[0, 2**63)"),
    ({"seed": 2**64}, "[0, 2**63)"),
    ({"seed": 1.5}, "[0, 2**63)"),
    ({"num_images": 0}, "num_images must be"),
    ({"num_images": 1000}, "num_images must be"),
    ({"negative_prompt": 3}, "negative_prompt must be a str"),
]


def _call_id(kwargs: dict[str, Any]) -> str:
    """A test id that is the same in every process (an image's repr holds its address)."""
    return str({k: f"<image {v.size[0]}x{v.size[1]}>" if isinstance(v, Image.Image) else v for k, v in kwargs.items()})


@pytest.mark.parametrize(("kwargs", "hint"), BAD_CALLS, ids=[_call_id(k) for k, _ in BAD_CALLS])
def test_bad_call_names_the_fix(kwargs: dict[str, Any], hint: str, load: Any) -> None:
    gen = load("sdxl-turbo")
    ran: list[str] = []
    pipe = gen.pipeline
    modules = {"text encoder": pipe.text_encoder, "unet": pipe.unet, "vae encoder": pipe.vae.encoder}
    modules["vae decoder"] = pipe.vae.decoder
    hooks = [m.register_forward_pre_hook(lambda *_, n=n: ran.append(n)) for n, m in modules.items()]
    try:
        with pytest.raises(FastDiffError) as info:
            gen("a cat", **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    assert hint in str(info.value)
    assert ran == [], f"refused only after running {ran}: a bad call must be refused before any work"


@pytest.mark.parametrize("prompt", [None, 42, ["a", 3]])  # a list of str is a batch of prompts, as in diffusers
def test_bad_prompt(prompt: Any, load: Any) -> None:
    with pytest.raises(FastDiffError, match="prompt must be a str.*num_images"):
        load("sdxl-turbo")(prompt)


def test_checkpoint_step_count_names_the_sibling(load: Any, small_sizes: None) -> None:
    with pytest.raises(FastDiffError, match="runs exactly 4 steps.*for 2 steps use sdxl-lightning-2step"):
        load("sdxl-lightning-4step")("a cat", steps=2)
    with pytest.raises(FastDiffError, match="for 4 steps use hyper-sdxl-4step-lora"):
        load("hyper-sdxl-2step-lora")("a cat", steps=4)
    with pytest.raises(FastDiffError, match="for 1 step use dmd2-sdxl-1step"):
        load("dmd2-sdxl-4step")("a cat", steps=1)


@pytest.mark.parametrize(
    ("name", "hint"),
    [("sdxl_turbo", "did you mean 'sdxl-turbo'?"), ("lightning-4", "did you mean"), ("zzz", "choose one of")],
)
def test_unknown_preset(name: str, hint: str) -> None:
    with pytest.raises(FastDiffError) as info:
        FewStepGenerator.from_preset(name)
    assert hint in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"device": "tpu"}, "use 'auto', 'cpu'"),
        ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "tpu:0"}, "device"),
        ({"device": 3}, "device must be a str"),
        ({"dtype": "float8"}, "use 'float32', 'float16' or 'bfloat16'"),
        ({"dtype": torch.int8}, "not supported"),
        ({"source": "/nonexistent/folder"}, "does not exist"),
        ({"source": 5}, "source must be a path"),
        ({"checkpoint": "/nonexistent/x.safetensors"}, "does not exist"),
        ({"local_files_only": "yes"}, "local_files_only must be"),
        ({"allow_pickle": 1}, "allow_pickle must be"),
    ],
)
def test_bad_load_arguments(kwargs: dict[str, Any], hint: str, hub_cache: Path) -> None:
    arguments: dict[str, Any] = {"cache_dir": hub_cache, "local_files_only": True, **kwargs}
    with pytest.raises(FastDiffError) as info:
        FewStepGenerator.from_preset("sdxl-lightning-4step", **arguments)
    assert hint in str(info.value)


def test_source_folder_without_model_index(tmp_path: Path) -> None:
    with pytest.raises(FastDiffError, match="no model_index.json"):
        FewStepGenerator.from_preset("sdxl-turbo", source=tmp_path, device="cpu")


def test_source_file_of_wrong_kind(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"x")
    with pytest.raises(FastDiffError, match=r"ends in \.safetensors"):
        FewStepGenerator.from_preset("sdxl-turbo", source=bad, device="cpu")


def test_register_refuses_duplicates_and_unknown_recipes() -> None:
    turbo = presets.get("sdxl-turbo")
    with pytest.raises(FastDiffError, match="overwrite=True"):
        presets.register(turbo)
    with pytest.raises(FastDiffError, match="did you mean 'euler-trailing'"):
        presets.register(presets.replace(turbo, name="my-turbo", scheduler="euler-trailin"))
    with pytest.raises(FastDiffError, match="default_steps 8 not in steps"):
        presets.replace(turbo, default_steps=8)


# --- warnings -------------------------------------------------------------------------------------------


def test_negative_prompt_ignored_without_guidance(load: Any) -> None:
    with pytest.warns(FastDiffWarning, match="negative_prompt is ignored at guidance_scale=0.0"):
        load("sdxl-turbo")("a cat", negative_prompt="blurry")


def test_guidance_on_guidance_free_preset(load: Any) -> None:
    with pytest.warns(FastDiffWarning, match="distilled to run without guidance.*guidance_scale=0.0"):
        load("sdxl-turbo")("a cat", guidance_scale=3.0)


def test_size_far_from_native(load: Any) -> None:
    with pytest.warns(FastDiffWarning, match="trained at 512x512; at 1024x1024"):
        load("sd-turbo")("a cat", height=1024, width=1024)


def test_prompt_cut_at_77_tokens(load: Any) -> None:
    with pytest.warns(FastDiffWarning, match="only the first 77"):
        load("sdxl-turbo")("word " * 100)


def test_guided_preset_uses_negative_prompt_quietly(load: Any, recwarn: pytest.WarningsRecorder) -> None:
    load("sd15")("a cat", negative_prompt="blurry", steps=1)
    assert not [w for w in recwarn if issubclass(w.category, FastDiffWarning)]
