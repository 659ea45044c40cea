"""optimize=: the torch engine's "default" (the CPU kernels: what runs without OpenVINO) stays within a stated
tolerance of "none"; warm-up means no recompilation later. The OpenVINO engine, which "default" picks on the CPU
where it is installed, is tested in test_openvino_engine.py."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations
from fastdiff.devices import bf16_pays_on
from fastdiff.optimize import cpu_bf16_pays, cpu_has_native_bf16
from fastdiff.testing import tiny_autoencoder_tiny

from .images import psnr

PROMPT = "a watercolor fox in the snow"
TORCH = {"engine": "torch"}  # "default" without OpenVINO installed
# Bound for "default" (torch engine) vs "none" on the same weights, on the CPU: both compute in float32;
# "default" only changes the order of the sums (oneDNN instead of MKL, packed weights, the sub-pixel
# upsampler's pre-added taps), which moves the latents by ~1e-6 relative. Through the VAE and the rounding to
# uint8 that can flip a pixel by one step and no more: so at most 1/255 per channel (and PSNR ≥ 45 dB). A wrong
# kernel, scheduler or dtype is off by far more (the sub-pixel upsampler with one tap misplaced: 255/255 on the
# tiny SDXL).
MAX_PIXEL_STEPS = 1
MIN_PSNR_DB = 45.0


def test_bf16_opt_in_follows_the_cpu(load: Any, hub_cache: Path, small_sizes: None) -> None:
    opts = Optimizations.preset("default", compute_dtype="auto", **TORCH)
    gen = FewStepGenerator.from_preset(
        "sd-turbo", device="cpu", cache_dir=hub_cache, local_files_only=True, optimize=opts
    )
    assert gen.dtype == (torch.bfloat16 if cpu_bf16_pays() else torch.float32)
    exact = load("sd-turbo")(PROMPT, seed=0, height=128, width=128).images[0]
    assert psnr(gen(PROMPT, seed=0, height=128, width=128).images[0], exact) >= 20.0  # bf16: a looser bound


@pytest.mark.parametrize("name", ["sd-turbo", "sdxl-turbo", "lcm-lora-sd15", "sdxl-lightning-4step-lora"])
def test_torch_default_is_the_image_of_none(name: str, hub_cache: Path, load: Any, small_sizes: None) -> None:
    exact = load(name)
    kernels = Optimizations.preset("default", **TORCH)
    fast = FewStepGenerator.from_preset(
        name, device="cpu", cache_dir=hub_cache, local_files_only=True, optimize=kernels
    )
    # bf16 on the CPU is opt-in: measured slower here (docs/notes/performance-history.md)
    assert fast.dtype == torch.float32
    for seed in (0, 1):
        for _ in range(2):  # the second call reuses the cached embeddings
            a = np.asarray(exact(PROMPT, seed=seed, height=128, width=128).images[0], np.int16)
            b = np.asarray(fast(PROMPT, seed=seed, height=128, width=128).images[0], np.int16)
            # Without OpenVINO "default" on the CPU runs diffusers' own modules in fp32: the image of "none".
            assert np.array_equal(a, b), f"{name}: default drifted from none (seed {seed})"


def test_embedding_cache_hits(load: Any, small_sizes: None) -> None:
    gen = load("sdxl-turbo")
    gen.embedding_cache.clear()
    hits, misses = gen.embedding_cache.hits, gen.embedding_cache.misses
    first = gen(PROMPT, seed=3, height=64, width=64)
    again = gen(PROMPT, seed=3, height=64, width=64)
    assert (gen.embedding_cache.hits - hits, gen.embedding_cache.misses - misses) == (1, 1)
    assert again.timings["encode"] < first.timings["encode"]
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))


def test_warmup_then_no_recompilation(load: Any, small_sizes: None) -> None:
    import torch._dynamo

    base = load("sd-turbo").pipeline
    opts = Optimizations.preset("none", compile=True, compile_backend="eager")
    gen = FewStepGenerator.from_pipeline("sd-turbo", base, optimize=opts)
    torch._dynamo.reset()
    seconds = gen.warmup(height=64, width=64)
    assert seconds > 0 and torch._dynamo.utils.counters["frames"]["ok"] > 0  # it did compile
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    with torch._dynamo.config.patch(error_on_recompile=True), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torch.compile", category=FastDiffWarning)  # warmed: no warning
        gen("another prompt", seed=5, height=64, width=64)
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames
    with pytest.warns(FastDiffWarning, match="torch.compile compiles for this shape"):
        gen("another prompt", seed=5, height=64, width=128)


def test_max_uses_the_tiny_autoencoder(load: Any, small_sizes: None) -> None:
    from diffusers import AutoencoderTiny

    tiny = tiny_autoencoder_tiny()
    opts = Optimizations.preset("max", tiny_vae=tiny, compute_dtype=torch.float32, **TORCH)
    gen = FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline, optimize=opts)
    assert isinstance(gen.pipeline.vae, AutoencoderTiny)
    result = gen(PROMPT, seed=0, height=128, width=128)
    # The same tiny autoencoder on diffusers' own modules ("none"): the CPU kernels' 1/255 tolerance holds.
    plain = FewStepGenerator.from_pipeline(
        "sdxl-turbo", load("sdxl-turbo").pipeline, optimize=Optimizations.preset("none", tiny_vae=tiny)
    )
    expected = np.asarray(plain(PROMPT, seed=0, height=128, width=128).images[0], np.int16)
    assert result.images[0].size == (128, 128) and expected.std() > 5
    assert np.abs(np.asarray(result.images[0], np.int16) - expected).max() <= MAX_PIXEL_STEPS
    full_vae = np.asarray(load("sdxl-turbo")(PROMPT, seed=0, height=128, width=128).images[0], np.int16)
    assert np.abs(full_vae - expected).mean() > 5  # and it is the tiny decoder's image, not the full VAE's


@pytest.mark.parametrize("engine", ["torch", "auto"])  # "auto": OpenVINO where installed
def test_from_pipeline_default_leaves_the_users_pipeline_as_it_was(
    engine: str, load: Any, small_sizes: None, cpu_engine_default: None
) -> None:
    user = load("sdxl-turbo").pipeline

    def snapshot() -> list[tuple[str, type, int, tuple[int, ...], torch.dtype]]:
        return [
            (name, type(module), p.data_ptr(), p.stride(), p.dtype)
            for name, module in user.unet.named_modules()
            for p in module.parameters(recurse=False)
        ]

    def image() -> Any:
        generator = torch.Generator().manual_seed(0)
        out = user("a cat", num_inference_steps=1, guidance_scale=0.0, height=64, width=64, generator=generator)
        return np.asarray(out.images[0])

    before, first = snapshot(), image()
    tiny = tiny_autoencoder_tiny()
    opts = Optimizations.preset("max", tiny_vae=tiny, engine=engine)  # every CPU swap, and a new VAE
    gen = FewStepGenerator.from_pipeline("sdxl-turbo", user, optimize=opts)
    gen.warmup(height=64, width=64)
    gen("a cat", seed=0, height=64, width=64)
    assert gen.pipeline is not user and gen.pipeline.unet is not user.unet
    assert gen.dtype == user.unet.dtype  # from_pipeline never changes the dtype
    ours = {p.data_ptr() for p in gen.pipeline.unet.parameters()}
    assert ours <= {p.data_ptr() for p in user.unet.parameters()}  # the same weight tensors: no second copy
    assert snapshot() == before  # same classes, same tensors, same layout
    assert np.array_equal(image(), first)  # and bit-identical images


@pytest.mark.parametrize(
    ("optimize", "hint"),
    [("fastest", "choose one of: default, max, none"), ("defualt", "did you mean 'default'"), (3, "optimize must be")],
)
def test_bad_optimize(optimize: Any, hint: str) -> None:
    with pytest.raises(FastDiffError) as info:
        FewStepGenerator.from_preset("sdxl-turbo", optimize=optimize)
    assert hint in str(info.value)


def test_unknown_optimization_field() -> None:
    with pytest.raises(FastDiffError, match="fields of fastdiff.Optimizations"):
        Optimizations.preset("default", turbo_mode=True)


def test_auto_switches_follow_the_device() -> None:
    opts = Optimizations.preset("default", **TORCH)
    cpu, cuda = opts.resolved(torch.device("cpu")), opts.resolved(torch.device("cuda"))
    assert (cpu.channels_last, cpu.fuse_qkv, cpu.compile) == (False, False, False)
    assert (cuda.channels_last, cuda.fuse_qkv, cuda.compile) == (True, True, True)
    assert cuda.compile_mode == "reduce-overhead" and cpu.compile_mode is None
    forced = Optimizations.preset("default", compile=True, compile_mode="max-autotune").resolved(torch.device("cpu"))
    assert forced.compile is True and forced.compile_mode == "max-autotune"


# lscpu's flags of the CPUs measured (docs/notes/performance-history.md), trimmed to the ones that decide
ZEN3 = {"avx2", "fma"}
ZEN4 = {"avx2", "fma", "avx512f", "avx512_bf16"}
ZEN5 = ZEN4 | {"avx512_vnni", "avx_vnni", "avx512_vp2intersect"}  # family 26 model 2: full-width 512-bit f32 FMAs
XEON_NO_AMX = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16"}  # family 6 model 207, AMX hidden by KVM
XEON_AMX = XEON_NO_AMX | {"amx_bf16", "amx_tile", "amx_int8"}


@pytest.mark.parametrize(
    ("vendor", "flags", "pays"),
    [
        ("AuthenticAMD", ZEN3, False),
        ("AuthenticAMD", ZEN4, True),  # measured: bf16 2.4-3.0x plain fp32 diffusers there, f32 OpenVINO ~1.3x
        ("AuthenticAMD", ZEN5, True),  # measured: a 4096^2 matmul in OpenVINO at 655 GFLOP/s in bf16, 325 in f32
        ("GenuineIntel", XEON_NO_AMX, False),  # measured: the SDXL UNet 1.55x slower in bf16 than in f32
        ("GenuineIntel", XEON_AMX, True),
    ],
)
def test_bf16_is_chosen_only_where_it_is_faster(vendor: str, flags: set[str], pays: bool) -> None:
    assert bf16_pays_on(vendor, flags) is pays


@pytest.mark.parametrize("pays", [True, False])
def test_the_levels_openvino_precision_follows_the_cpu(pays: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fastdiff.optimize.cpu_bf16_pays", lambda: pays)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for level in ("default", "max"):
        assert Optimizations.preset(level).resolved(cpu).openvino_precision == ("bf16" if pays else "f32")
    assert Optimizations.preset("default").resolved(cuda).openvino_precision == "f32"  # no bf16 CPU to pay
    assert Optimizations.preset("default", compute_dtype="auto").resolved(cpu).compute_dtype == (
        torch.bfloat16 if pays else None
    )
    # None is OpenVINO's own default (the bench's peer row); an explicit precision is kept
    for given in (None, "f32", "bf16"):
        assert Optimizations.preset("default", openvino_precision=given).resolved(cpu).openvino_precision == given
    with pytest.raises(FastDiffError, match="openvino_precision must be one of"):
        Optimizations.preset("default", openvino_precision="fp8").resolved(cpu)


def test_this_cpu_reads_its_own_flags() -> None:
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        pytest.skip("no /proc/cpuinfo: native bf16 support decides")
    text = info.read_text()
    vendor = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("vendor_id"))
    flags = set(next(line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")).split())
    assert cpu_bf16_pays() is (bf16_pays_on(vendor, flags) and cpu_has_native_bf16())
