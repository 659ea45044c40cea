"""ONNX export: each family's tiny model and the shipped fastdiff-shapes, checked against torch with onnxruntime.

Tolerances (measured here before they were written down): every exported file is within 3e-6 of its torch
module (largest |difference| over max(1, max |torch|); the bound is `TOLERANCE`: 1e-4 for float32, 1e-3 for
float16 storage against the half-rounded torch weights). The whole ONNX pipeline run with the manifest (what the
page does, here in numpy) gives fastdiff-shapes' `FewStepGenerator` image within 1/255 per pixel.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastdiff import FastDiffError, FewStepGenerator, presets
from fastdiff.testing.tiny import tiny_autoencoder_tiny, tiny_pipeline

MISSING = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (pip install 'fastdiff[web]')"),
    # The tiny models run at 64x64, below the real presets' sizes; fastdiff says so, and that is intended here.
    pytest.mark.filterwarnings("ignore:.* was trained at:fastdiff.FastDiffWarning"),
]

PROMPT = "a large red circle on a blue background"
SIZE = {"height": 64, "width": 64}
# Each family once: SD 1.x is fastdiff-shapes itself (float16, as the page ships it; its weights are float16
# already); SD 2.x a tiny SD-Turbo made to run DDIM with CFG (a UNet batch of 2), float16 storage with real
# rounding and TAESD's layout as its decoder; SDXL a tiny SDXL-Turbo made to run Euler (as Lightning does) in
# float32, which the browser test also runs.
FAMILIES = ("sd1", "sd2", "sdxl")


@functools.cache
def shapes_export(root: Path) -> Path:
    """fastdiff-shapes exported for real by the CLI, float16 as the web page ships it; once per test session
    (the browser test builds its site from this folder)."""
    from fastdiff.cli import main

    out = root / "fastdiff-shapes-onnx"
    assert main(["export", "onnx", "--preset", "fastdiff-shapes", "--out", str(out), "--dtype", "float16"]) == 0
    return out


def shapes_generator() -> FewStepGenerator:
    return FewStepGenerator.from_preset("fastdiff-shapes", device="cpu", dtype="float32", optimize="none")


@functools.cache
def family_export(name: str, root: Path) -> dict[str, Any]:
    """A generator of `name`'s family, the folder its export went to, the manifest, the dtype and the decoder
    given (if any); once per test session."""
    from fastdiff.export import export_onnx

    if name == "sd1":
        folder = shapes_export(root)
        manifest = json.loads((folder / "manifest.json").read_text())
        return {"gen": shapes_generator(), "folder": folder, "manifest": manifest, "dtype": "float16", "decoder": None}
    if name == "sd2":
        preset = presets.replace(presets.get("sd-turbo"), name="sd-turbo-cfg", scheduler="ddim-trailing")
        preset = presets.replace(preset, guidance_scale=4.0)
    else:
        preset = presets.replace(presets.get("sdxl-turbo"), name="sdxl-euler", scheduler="euler-trailing")
    gen = FewStepGenerator.from_pipeline(preset, tiny_pipeline(name))
    dtype, decoder = ("float16", tiny_autoencoder_tiny()) if name == "sd2" else ("float32", None)
    done = export_onnx(gen, root / f"{name}-onnx", dtype=dtype, tiny_vae=decoder, **SIZE)
    assert [m.name for m in done.models] == ["text_encoder", "unet", "vae_decoder"]
    return {"gen": gen, "folder": done.folder, "manifest": done.manifest, "dtype": dtype, "decoder": decoder}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return family_export(request.param, tmp_path_factory.getbasetemp())


def session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_every_file_matches_torch_on_new_random_inputs(family: dict[str, Any]) -> None:
    from fastdiff.export.modules import components
    from fastdiff.export.onnx import TOLERANCE, check_onnx, half_rounded

    gen, folder, dtype = family["gen"], family["folder"], family["dtype"]
    for part in components(gen.pipeline, gen.preset, decoder=family["decoder"], seed=1, **SIZE):  # new inputs
        reference = half_rounded(part.module) if dtype == "float16" else part.module
        path = folder / f"{part.name}.onnx"
        assert check_onnx(path, reference, part.inputs, tolerance=TOLERANCE[dtype]) <= TOLERANCE[dtype]
    if dtype == "float16":  # half the bytes of float32 weights, and little else: no debug info in the files
        params = sum(p.numel() for p in gen.pipeline.unet.parameters())
        assert family["manifest"]["models"]["unet"]["bytes"] < 0.6 * 4 * params


def test_the_text_encoder_gives_the_pipelines_embeddings(family: dict[str, Any]) -> None:
    from fastdiff.export.modules import tokenizers

    gen, manifest = family["gen"], family["manifest"]
    feeds = {
        spec["input"]: np.array([tok(PROMPT, padding="max_length", max_length=spec["max_length"]).input_ids])
        for spec, tok in zip(manifest["tokenizers"], tokenizers(gen.pipeline), strict=True)
    }
    encoder = session(family["folder"] / "text_encoder.onnx")
    got = dict(zip([o.name for o in encoder.get_outputs()], encoder.run(None, feeds), strict=True))
    want = gen.encode(PROMPT)
    atol = 1e-5 if family["dtype"] == "float32" else 5e-3  # float16 storage: the tiny models' weights rounded
    np.testing.assert_allclose(got["encoder_hidden_states"], want["prompt_embeds"].numpy(), atol=atol)
    if gen.preset.family == "sdxl":
        np.testing.assert_allclose(got["text_embeds"], want["pooled_prompt_embeds"].numpy(), atol=atol)


def test_the_manifest_holds_the_schedules_the_pipeline_runs(family: dict[str, Any]) -> None:
    from fastdiff.export.modules import tokenizers

    gen, manifest = family["gen"], family["manifest"]
    calls: list[tuple[int, float]] = []
    hook = gen.pipeline.unet.register_forward_pre_hook(
        lambda _m, args: calls.append((args[0].shape[0], float(args[1].flatten()[0])))
    )
    try:
        for steps in (1, 2):
            calls.clear()
            gen(PROMPT, steps=steps, seed=0, **SIZE)
            assert [t for _, t in calls] == manifest["scheduler"]["schedules"][str(steps)]["timesteps"]
            assert {b for b, _ in calls} == {manifest["unet_batch"]}
    finally:
        hook.remove()
    assert manifest["unet_batch"] == (2 if gen.preset.name == "sd-turbo-cfg" else 1)
    assert manifest["latent_shape"] == [1, 4, 8, 8] and manifest["dtype"] == family["dtype"]
    decoder = family["decoder"] if family["decoder"] is not None else gen.pipeline.vae  # fastdiff-shapes' own is tiny
    assert manifest["vae"]["tiny"] == (type(decoder).__name__ == "AutoencoderTiny")
    assert ("time_ids" in manifest["unet_constants"]) == (gen.preset.family == "sdxl")
    assert [t["pad"] for t in manifest["tokenizers"]] == [t.pad_token_id for t in tokenizers(gen.pipeline)]


def test_fastdiff_shapes_exports_and_the_onnx_pipeline_gives_the_generators_image(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from fastdiff.export import torch_noise

    folder = shapes_export(tmp_path_factory.getbasetemp())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["preset"] == "fastdiff-shapes" and manifest["scheduler"]["class"] == "EulerDiscreteScheduler"
    sizes = {name: spec["bytes"] for name, spec in manifest["models"].items()}
    assert sum(sizes.values()) < 11e6, sizes  # 9.7 MB measured: float16 UNet, text encoder, VAE decoder
    gen = shapes_generator()
    sessions = {name: session(folder / spec["file"]) for name, spec in manifest["models"].items()}
    for steps, seed in ((1, 0), (4, 1)):
        want = np.asarray(gen(PROMPT, steps=steps, seed=seed).image).astype(int)
        got = onnx_pipeline(
            sessions, manifest, gen.pipeline.tokenizer, torch_noise(manifest["latent_shape"], seed), steps
        )
        assert np.abs(got.astype(int) - want).max() <= 1, (steps, seed)


def onnx_pipeline(sessions: dict[str, Any], manifest: dict[str, Any], tokenizer: Any, noise: Any, steps: int) -> Any:
    """The page's arithmetic in numpy (Euler on an ε or x̂0 prediction): tokens → embeddings → steps → decode → uint8."""
    ids = tokenizer(PROMPT, padding="max_length", max_length=manifest["tokenizers"][0]["max_length"]).input_ids
    (hidden,) = sessions["text_encoder"].run(None, {"input_ids": np.array([ids])})
    schedule = manifest["scheduler"]["schedules"][str(steps)]
    x = noise * np.float32(schedule["init_noise_sigma"])
    for i, t in enumerate(schedule["timesteps"]):
        sigma, after = np.float32(schedule["sigmas"][i]), np.float32(schedule["sigmas"][i + 1])
        feeds = {"sample": x / np.sqrt(sigma * sigma + 1), "timestep": np.array([t], np.float32)}
        (out,) = sessions["unet"].run(None, {**feeds, "encoder_hidden_states": hidden})
        x0 = out if manifest["scheduler"]["prediction_type"] == "sample" else x - sigma * out
        x = x + (x - x0) / sigma * (after - sigma)
    (image,) = sessions["vae_decoder"].run(None, {"latents": x / np.float32(manifest["vae"]["scaling_factor"])})
    return np.round(np.clip(image[0] / 2 + 0.5, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def test_export_refuses_a_cast_generator_a_bad_size_and_a_bad_dtype(tmp_path: Path) -> None:
    from fastdiff.export import export_onnx
    from fastdiff.export.modules import components
    from fastdiff.export.onnx import export_component

    half = FewStepGenerator.from_pipeline("sd-turbo", tiny_pipeline("sd2").to(torch.float16))
    with pytest.raises(FastDiffError, match="float32 CPU generator"):
        export_onnx(half, tmp_path)
    gen = FewStepGenerator.from_pipeline("sd-turbo", tiny_pipeline("sd2"))
    with pytest.raises(FastDiffError, match="multiples of 8"):
        export_onnx(gen, tmp_path, height=60, width=64)
    part = components(gen.pipeline, gen.preset, **SIZE)[0]
    with pytest.raises(FastDiffError, match="dtype must be"):
        export_component(part, tmp_path, dtype="bfloat16")  # type: ignore[arg-type]


def test_the_check_catches_a_file_that_is_not_its_module(tmp_path_factory: pytest.TempPathFactory) -> None:
    from fastdiff.export.modules import components
    from fastdiff.export.onnx import check_onnx

    folder = shapes_export(tmp_path_factory.getbasetemp())
    gen = shapes_generator()
    decoder = copy.deepcopy(gen.pipeline.vae)
    with torch.no_grad():
        decoder.decoder.layers[-1].bias += 0.1  # a small change of the image, which the file does not have
    part = components(gen.pipeline, gen.preset, decoder=decoder, **SIZE)[2]
    with pytest.raises(FastDiffError, match="is off torch by"):
        check_onnx(folder / "vae_decoder.onnx", part.module, part.inputs, tolerance=1e-3)


def test_large_weights_go_to_an_external_data_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fastdiff.export import onnx
    from fastdiff.export.modules import components

    monkeypatch.setattr(onnx, "EXTERNAL_DATA_BYTES", 10_000)  # as if the text encoder were over the 1 GiB line
    gen = FewStepGenerator.from_pipeline("sd-turbo", tiny_pipeline("sd2"))
    part = components(gen.pipeline, gen.preset, **SIZE)[0]
    done = onnx.export_component(part, tmp_path)
    assert done.external_data == "text_encoder.onnx.data" and (tmp_path / done.external_data).is_file()
    assert done.bytes == sum(p.stat().st_size for p in tmp_path.iterdir())  # the graph and its weights
    assert done.max_error <= onnx.TOLERANCE["float32"]  # onnxruntime found the weights beside the graph
