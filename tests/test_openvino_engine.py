"""engine="openvino": fastdiff's module copies compiled by OpenVINO at static shapes, cached on disk, within a
stated tolerance of fp32 "none"; a new shape warns once and warm-up covers it; the bench's openvino: peer row."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="the OpenVINO engine needs `pip install openvino`")

from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations, openvino_cache
from fastdiff.bench.runner import RunConfig, run_scenarios
from fastdiff.bench.scenarios import parse_scenario, parse_scenarios
from fastdiff.bench.sources import RandomSource, openvino_pipeline
from fastdiff.bench.timing import make_clock
from fastdiff.openvino_cache import conversions
from fastdiff.openvino_engine import OpenVINOForward, torch_forwards
from fastdiff.testing import tiny_autoencoder_tiny

from .images import psnr

pytestmark = pytest.mark.usefixtures("cpu_engine_default")  # the engine users get by default

PROMPT = "a watercolor fox in the snow"
SIZE = {"height": 64, "width": 64}
# Bound for OpenVINO in f32 against fp32 "none" on the same weights. Both compute in float32; OpenVINO fuses
# and reorders the sums (its own GEMM and convolution kernels, fused bias/activation/normalization), which moves
# the latents by ~1e-6 relative, as the CPU kernels of "default" do (tests/test_optimize.py): through the VAE and
# the rounding to uint8 that flips a pixel by a step. CFG (sd15, guidance 7.5) scales the difference of two
# predictions by 7.5. Measured on these tiny models: max 0-1 steps. Allowed: 2 steps and PSNR ≥ 45 dB (CFG: 4 and
# 40 dB). A wrong wiring is far off: the UNet's time ids dropped or a text encoder's hidden state taken from the
# wrong layer changes the image by tens of steps.
MAX_STEPS, MIN_PSNR = {False: 2, True: 4}, {False: 45.0, True: 40.0}
# OpenVINO's default precision is bf16 on CPUs with native bf16, f32 elsewhere. bf16 keeps 8 significant bits
# (one rounding moves a value by up to 2^-9 ≈ 0.2 %), in every module here, text encoders included, and the VAE's
# last convolution maps [-1, 1] onto 255 steps: a few steps of noise per pixel. Measured on the tiny sd-turbo at
# bf16 (AMD EPYC with avx512_bf16): max 7 steps, PSNR 50 dB. Allowed: 24 steps and 35 dB (an f32 CPU gives ~0).
MAX_STEPS_DEFAULT_PRECISION, MIN_PSNR_DEFAULT_PRECISION = 24, 35.0
CASES = [("sd15", 2, 7.5), ("sd-turbo", 1, None), ("sdxl-turbo", 1, None)]  # (preset, steps, guidance)


_GENERATORS: dict[str, FewStepGenerator] = {}


@pytest.fixture
def ov_load(hub_cache: Path, ov_cache: Path) -> Any:
    """`ov_load(name)`: the preset's tiny weights with engine="openvino" in f32, loaded once per module."""

    def _load(name: str, *, again: bool = False) -> FewStepGenerator:
        if again or name not in _GENERATORS:
            opts = Optimizations.level("default", engine="openvino", precision="fp32")
            gen = FewStepGenerator.from_preset(
                name, device="cpu", cache_dir=hub_cache, local_files_only=True, optimize=opts
            )
            if again:
                return gen
            _GENERATORS[name] = gen
        return _GENERATORS[name]

    return _load


def _image(gen: FewStepGenerator, **kwargs: Any) -> np.ndarray:
    return np.asarray(gen(PROMPT, seed=0, **SIZE, **kwargs).images[0], np.int16)


@pytest.mark.parametrize(("name", "steps", "guidance"), CASES)
def test_within_tolerance_of_none(name: str, steps: int, guidance: float | None, load: Any, ov_load: Any) -> None:
    exact, fast = load(name), ov_load(name)
    assert fast.recipe.engine == "openvino" and fast.recipe.openvino_precision == "f32"
    assert isinstance(fast.pipeline.unet.forward, OpenVINOForward) and fast.pipeline.unet.forward.precision == "f32"
    assert not isinstance(exact.pipeline.unet.forward, OpenVINOForward)  # "none" is diffusers' own modules
    call = {"steps": steps, "guidance_scale": guidance}
    cfg = bool(guidance and guidance > 1)
    openvino_cache._live.clear()  # models another module's test holds are not this module's (empty) disk cache's
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
        reference = _image(exact, **call)
        with pytest.warns(FastDiffWarning, match="OpenVINO converted the"):
            txt2img = _image(fast, **call)
        source = exact(PROMPT, seed=0, **SIZE, **call).images[0]
        # img2img at the same size: the UNet and the decoder run at shapes compiled already, so no warning
        img2img = [_image(g, image=source, strength=0.6, **call) for g in (exact, fast)]
    for a, b in ((reference, txt2img), tuple(img2img)):
        assert np.abs(a - b).max() <= MAX_STEPS[cfg], f"{name}: openvino drifted from none"
        assert psnr(a, b) >= MIN_PSNR[cfg]


def test_a_fused_lora_is_not_taken_for_its_base(load: Any, ov_load: Any, small_sizes: None) -> None:
    """The disk cache names weights by their provenance: the LoRA preset's UNet is sd15's files plus the fused
    LoRA file, so it must not be given the compiled UNet converted from sd15's files alone."""
    call = {"steps": 4, "guidance_scale": 1.0}  # LCM-LoRA's (no CFG); sd15 runs them too
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FastDiffWarning)
        base = _image(ov_load("sd15"), **call)  # sd15's UNet converted and saved under its file's name
        fused, reference = _image(ov_load("lcm-lora-sd15"), **call), _image(load("lcm-lora-sd15"), **call)
    assert np.abs(fused - base).mean() > 5  # not the base's compiled UNet...
    assert np.abs(fused - reference).max() <= MAX_STEPS[False] and psnr(fused, reference) >= MIN_PSNR[False]


def test_max_runs_the_tiny_decoder(hub_cache: Path, small_sizes: None, ov_cache: Path) -> None:
    tiny = tiny_autoencoder_tiny()
    where: dict[str, Any] = {"device": "cpu", "cache_dir": hub_cache, "local_files_only": True}
    torch_max = Optimizations.level("max", tiny_vae=tiny, engine="torch")
    plain = FewStepGenerator.from_preset("sdxl-turbo", optimize=torch_max, **where)
    opts = Optimizations.level("max", tiny_vae=tiny, engine="openvino", precision="fp32")
    fast = FewStepGenerator.from_preset("sdxl-turbo", optimize=opts, **where)
    assert isinstance(fast.pipeline.vae.decoder.forward, OpenVINOForward)
    openvino_cache._live.clear()  # as in a new process: this module's disk cache is the one read
    with pytest.warns(FastDiffWarning, match="OpenVINO converted the .*VAE decoder for 64x64"):
        ours = _image(fast)
    theirs = _image(plain)
    assert np.abs(ours - theirs).max() <= MAX_STEPS[False] and psnr(ours, theirs) >= MIN_PSNR[False]


def test_warmup_covers_a_new_shape(ov_load: Any, small_sizes: None) -> None:
    gen = ov_load("sd-turbo")
    gen(PROMPT, seed=0, **SIZE)  # the text encoder is compiled (shared by all sizes)
    converted = conversions()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="OpenVINO", category=FastDiffWarning)
        gen.warmup(height=96, width=96)  # converts the new shape, quietly
    before = conversions()
    assert before != converted  # the warm-up did convert (or load) the shape
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="OpenVINO", category=FastDiffWarning)
        gen(PROMPT, seed=1, height=96, width=96)  # no warning: the shape was warmed up
    assert conversions() == before


def test_second_load_reads_the_disk_cache(ov_load: Any, ov_cache: Path, small_sizes: None) -> None:
    # Other modules' generators may hold compiled models of these very weights at this precision (on an f32 CPU
    # "default" is f32 too), saved in another disk cache: drop them, so this module's cache is the one read.
    openvino_cache._live.clear()
    first = ov_load("sdxl-turbo", again=True)  # held to the end: the process shares its models while it lives
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpenVINO converted", category=FastDiffWarning)
        image = _image(first)  # read from this module's disk cache, or converted into it
    before = conversions()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="OpenVINO", category=FastDiffWarning)  # nothing converted: silent
        assert np.array_equal(_image(ov_load("sdxl-turbo", again=True)), image)  # new to this generator...
    assert conversions() == before  # ...but the compiled models of the same weights are shared in a process
    openvino_cache._live.clear()  # as in a new process
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="OpenVINO", category=FastDiffWarning)  # a disk-cache hit: silent
        same = _image(ov_load("sdxl-turbo", again=True))
    seconds = time.perf_counter() - start
    after = conversions()
    assert after["conversions"] == before["conversions"]  # nothing converted again...
    assert after["cache_loads"] - before["cache_loads"] == 4  # ...both text encoders, the UNet and the decoder
    assert np.array_equal(image, same) and seconds < 10
    assert len(list(ov_cache.glob("openvino/*/model.xml"))) >= 4


def _compiled_inputs(module: Any) -> list[Any]:
    return [port.get_partial_shape() for shared in module.forward._entries.values() for port in shared.model.inputs]


def test_compiled_at_static_shapes(ov_load: Any, small_sizes: None) -> None:
    """The CPU plugin gets every input's shape fixed (the frontend leaves batch and spatial sizes dynamic,
    which runs the real SDXL UNet ~9 % slower), whether the model was converted now or read from disk."""
    for again in (False, True):
        if again:
            openvino_cache._live.clear()  # as in a new process: the IRs come from the disk cache
        gen = ov_load("sdxl-turbo", again=again)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FastDiffWarning)
            _image(gen)
        pipe = gen.pipeline
        shapes = [
            s
            for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2, pipe.vae.decoder)
            for s in _compiled_inputs(m)
        ]
        assert shapes and all(s.is_static for s in shapes), shapes
        assert list(_compiled_inputs(pipe.unet)[0].to_shape())[-2:] == [8, 8]  # 64² image: 8² latents


def test_torch_forwards_run_torch(ov_load: Any, load: Any) -> None:
    unet = ov_load("sd-turbo").pipeline.unet
    sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad(), torch_forwards():  # FLOP counting (fastdiff.bench.flops) sees torch's own ops
        ours = unet(sample, torch.tensor(999.0), text, return_dict=False)[0]
        theirs = load("sd-turbo").pipeline.unet(sample, torch.tensor(999.0), text, return_dict=False)[0]
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_engine_resolution() -> None:
    assert Optimizations(engine="auto").recipe_for("cpu").engine == "openvino"
    assert Optimizations(engine="auto").recipe_for("cuda").engine == "torch"
    assert Optimizations.level("default").recipe_for("cpu").engine == "openvino"


def test_the_engine_can_be_kept_torch_process_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTDIFF_CPU_ENGINE", "torch")
    assert Optimizations.level("default").recipe_for("cpu").engine == "torch"
    assert Optimizations(engine="openvino").recipe_for("cpu").engine == "openvino"  # asked by name
    monkeypatch.setenv("FASTDIFF_CPU_ENGINE", "openvino")
    with pytest.raises(FastDiffError, match="FASTDIFF_CPU_ENGINE must be 'auto' or 'torch'"):
        Optimizations.level("default").recipe_for("cpu")
    assert Optimizations.level("none").recipe_for("cpu").engine == "torch"
    with pytest.raises(FastDiffError, match="runs on the CPU"):
        Optimizations(engine="openvino").recipe_for("cuda")


def test_peer_row(ov_cache: Path, load: Any, small_sizes: None) -> None:
    assert parse_scenario("openvino:sd-turbo@1").runner == "openvino"
    with pytest.raises(FastDiffError, match="drop 'openvino:'"):
        parse_scenario("openvino:sdxl-lightning-4step@4")
    # The peer: plain OpenVINO in its default precision (bf16 where the CPU has it) on the same weights.
    exact = load("sd-turbo").pipeline
    peer = openvino_pipeline(exact)
    images = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpenVINO converted", category=FastDiffWarning)
        for pipe in (exact, peer):
            run = pipe(PROMPT, num_inference_steps=1, guidance_scale=0.0, generator=torch.Generator().manual_seed(0))
            images.append(np.asarray(run.images[0], np.int16))
    assert np.abs(images[0] - images[1]).max() <= MAX_STEPS_DEFAULT_PRECISION
    assert psnr(*images) >= MIN_PSNR_DEFAULT_PRECISION
    assert not isinstance(exact.unet.forward, OpenVINOForward)  # the given pipeline is left as it was
    clock = make_clock(torch.device("cpu"))
    source = RandomSource(device=torch.device("cpu"), dtype=torch.float32, clock=clock, tiny=True)
    config = RunConfig(device=torch.device("cpu"), dtype=torch.float32, repeats=1, threads=1, **SIZE)
    rows = run_scenarios(parse_scenarios(["diffusers:sd-turbo@1", "openvino:sd-turbo@1"]), source, config)
    row = rows[1]
    assert (row.scenario, row.runner, row.unet_calls) == ("openvino:sd-turbo@1", "openvino", 1)
    assert row.gflops > 0 and row.speedup_vs_diffusers is not None  # FLOPs counted on torch's ops, ratio set
