"""optimize=: the torch engine's "default" (the CPU kernels: what runs without OpenVINO) stays within a stated
tolerance of "none"; warm-up means no recompilation later. The OpenVINO engine, which "default" picks on the CPU
where it is installed, is tested in test_openvino_engine.py."""

from __future__ import annotations

import re
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


def test_bf16_precision_casts_the_torch_engine(load: Any, hub_cache: Path, small_sizes: None) -> None:
    opts = Optimizations.level("default", precision="bf16", **TORCH)
    where: dict[str, Any] = {"device": "cpu", "cache_dir": hub_cache, "local_files_only": True}
    gen = FewStepGenerator.from_preset("sd-turbo", optimize=opts, **where)
    assert gen.dtype == torch.bfloat16 and gen.recipe.dtype == torch.bfloat16
    exact = load("sd-turbo")(PROMPT, seed=0, height=128, width=128).images[0]
    assert psnr(gen(PROMPT, seed=0, height=128, width=128).images[0], exact) >= 20.0  # bf16: a looser bound
    # `dtype` is what the weights load in, `precision` what the optimized modules compute in
    loaded_fp32 = FewStepGenerator.from_preset("sd-turbo", dtype="float32", optimize=opts, **where)
    assert loaded_fp32.dtype == torch.bfloat16
    as_loaded = FewStepGenerator.from_preset(
        "sd-turbo", dtype="bfloat16", optimize=Optimizations.level("default", **TORCH), **where
    )
    assert as_loaded.dtype == torch.bfloat16 and as_loaded.recipe.dtype is None  # "auto": the loaded dtype


@pytest.mark.parametrize("name", ["sd-turbo", "sdxl-turbo", "lcm-lora-sd15", "sdxl-lightning-4step-lora"])
def test_torch_default_is_the_image_of_none(name: str, hub_cache: Path, load: Any, small_sizes: None) -> None:
    exact = load(name)
    kernels = Optimizations.level("default", **TORCH)
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
    opts = Optimizations.level("none", compile=True, compile_backend="eager")
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
    opts = Optimizations.level("max", tiny_vae=tiny, precision="fp32", **TORCH)
    gen = FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline, optimize=opts)
    assert isinstance(gen.pipeline.vae, AutoencoderTiny)
    result = gen(PROMPT, seed=0, height=128, width=128)
    # The same tiny autoencoder on diffusers' own modules ("none"): the CPU kernels' 1/255 tolerance holds.
    plain = FewStepGenerator.from_pipeline(
        "sdxl-turbo", load("sdxl-turbo").pipeline, optimize=Optimizations.level("none", tiny_vae=tiny)
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
    opts = Optimizations.level("max", tiny_vae=tiny, engine=engine)  # every CPU swap, and a new VAE
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
        Optimizations.level("default", turbo_mode=True)
    with pytest.raises(FastDiffError, match="did you mean 'openvino'"):
        Optimizations(engine="openvn")  # type: ignore[arg-type]


def test_auto_switches_follow_the_device() -> None:
    opts = Optimizations.level("default", **TORCH)
    cpu, cuda, mps = opts.recipe_for("cpu"), opts.recipe_for("cuda"), opts.recipe_for("mps")
    assert (cpu.channels_last, cpu.fuse_qkv, cpu.compile, cpu.bf16_vae) == (False, False, False, False)
    assert (cuda.channels_last, cuda.fuse_qkv, cuda.compile, cuda.bf16_vae) == (True, True, True, True)
    assert (mps.channels_last, mps.fuse_qkv, mps.compile, mps.bf16_vae) == (False, False, False, False)
    assert cuda.compile_mode == "reduce-overhead" and cpu.compile_mode is None and mps.compile_mode is None
    assert cpu.dtype is cuda.dtype is mps.dtype is None  # "auto": the torch engine computes as loaded
    forced = Optimizations.level("default", compile=True, compile_mode="max-autotune").recipe_for("cpu")
    assert forced.compile is True and forced.compile_mode == "max-autotune"
    assert Optimizations.level("none") == Optimizations()  # every field defaults to off
    none = Optimizations().recipe_for("cuda")
    assert not none.changes_modules and none.dtype is None and not none.bf16_vae  # bit-parity: no bf16 VAE


def test_a_load_decides_its_recipe_once(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdiff import recipe

    pipe = load("sd-turbo").pipeline  # loaded (and decided) before counting
    decided: list[Optimizations] = []
    cpu = recipe._cpu
    monkeypatch.setattr(recipe, "_cpu", lambda opts, **family: decided.append(opts) or cpu(opts, **family))
    gen = FewStepGenerator.from_pipeline("sd-turbo", pipe, optimize="default")
    assert decided == [Optimizations.level("default")] and gen.optimizations == Optimizations.level("default")
    assert gen.recipe == cpu(Optimizations.level("default"), unet=True) and gen.recipe.device == "cpu"


def test_precision_is_one_knob_in_any_spelling() -> None:
    for spelling in ("bf16", "bfloat16", torch.bfloat16):
        assert Optimizations(precision=spelling).precision == "bf16"
    assert Optimizations(precision=torch.float16) == Optimizations(precision="half") == Optimizations(precision="fp16")
    for spelling in ("f32", "float32", torch.float32):
        assert Optimizations(precision=spelling).precision == "fp32"
    with pytest.raises(FastDiffError, match="precision must be 'auto', 'fp32', 'bf16', 'fp16'"):
        Optimizations(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(FastDiffError, match="precision must be"):
        Optimizations(precision=torch.int8)
    cuda = {p: Optimizations.level("default", precision=p).recipe_for("cuda") for p in (None, "auto", "fp16", "fp32")}
    assert [(r.dtype, r.bf16_vae) for r in cuda.values()] == [
        (None, False),  # as loaded: diffusers' fp32 upcast of an fp16 VAE
        (None, True),
        (torch.float16, True),  # an fp16 VAE in bf16: fp32's range, no upcast
        (torch.float32, False),
    ]


def test_preset_is_a_deprecated_name_of_level() -> None:
    with pytest.warns(DeprecationWarning, match=r"Optimizations\.preset is now Optimizations\.level"):
        old = Optimizations.preset("max", engine="torch")
    assert old == Optimizations.level("max", engine="torch")


def test_the_precision_fields_before_precision_map_onto_it() -> None:
    with pytest.warns(DeprecationWarning, match="compute_dtype= is now precision="):
        assert Optimizations.level("default", compute_dtype=torch.bfloat16).precision == "bf16"
    with pytest.warns(DeprecationWarning, match="leave it out"):
        assert Optimizations.level("default", compute_dtype=None) == Optimizations.level("default")
    with pytest.warns(DeprecationWarning, match="openvino_precision= is now precision="):
        assert Optimizations.level("default", openvino_precision="f32").precision == "fp32"
    refused = {
        "bf16_vae": (True, "decided by precision"),
        "compute_dtype": ("auto", "precision='bf16'"),
        "openvino_precision": (None, "cpu_has_native_bf16"),
    }
    for old, (value, fix) in refused.items():
        with pytest.raises(FastDiffError, match=re.escape(fix)):
            Optimizations.level("default", **{old: value})
    with pytest.raises(FastDiffError, match="pass precision= alone"), pytest.warns(DeprecationWarning):
        Optimizations.level("default", compute_dtype=torch.float32, openvino_precision="f32")


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
def test_the_levels_openvino_precision_follows_the_cpu(
    pays: bool, monkeypatch: pytest.MonkeyPatch, cpu_engine_default: None
) -> None:
    monkeypatch.setattr("fastdiff.recipe.cpu_bf16_pays", lambda: pays)
    for level in ("default", "max"):
        recipe = Optimizations.level(level).recipe_for("cpu")
        assert (recipe.engine, recipe.openvino_precision) == ("openvino", "bf16" if pays else "f32")
        assert recipe.dtype is None  # OpenVINO takes the precision as its hint; the torch modules stay as loaded
    cuda = Optimizations.level("default").recipe_for("cuda")
    assert (cuda.engine, cuda.openvino_precision) == ("torch", None)  # no OpenVINO on CUDA
    # the torch engine's "auto" on the CPU is the loaded dtype wherever bf16 pays: bf16 is opt-in there
    assert Optimizations.level("default", engine="torch").recipe_for("cpu").dtype is None
    # an explicit precision is kept; None is as loaded: OpenVINO computes f32, the dtype it converts from
    for given, hint in ((None, "f32"), ("fp32", "f32"), ("bf16", "bf16")):
        assert Optimizations.level("default", precision=given).recipe_for("cpu").openvino_precision == hint
    with pytest.raises(FastDiffError, match="engine='torch' for fp16"):
        Optimizations.level("default", precision="fp16").recipe_for("cpu")


def test_this_cpu_reads_its_own_flags() -> None:
    """torch's reading of the CPU (`torch.cpu.get_capabilities`, what fastdiff asks) agrees with the kernel's."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        pytest.skip("no /proc/cpuinfo to check torch's reading against")
    text = info.read_text()
    vendor = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("vendor_id"))
    flags = set(next(line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")).split())
    assert cpu_bf16_pays() is (bf16_pays_on(vendor, flags) and cpu_has_native_bf16())


@pytest.mark.filterwarnings("ignore:`torch\\.jit\\.trace:DeprecationWarning")  # the trace OpenVINO's converter takes
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the phase taps, constants of the trace on purpose
def test_the_subpixel_upsampler_traces_the_same_sums() -> None:
    """`"default"` under OpenVINO converts the VAE decoder's upsamplers as sub-pixel convolutions: the trace computes
    diffusers' nearest-2x + 3x3 conv, and eager calls stay diffusers' own."""
    from diffusers.models.upsampling import Upsample2D

    from fastdiff.optimize import _use_subpixel_upsampling

    plain = Upsample2D(6, use_conv=True, out_channels=5).eval()
    swapped = Upsample2D(6, use_conv=True, out_channels=5).eval()
    swapped.load_state_dict(plain.state_dict())
    _use_subpixel_upsampling(swapped)
    assert type(swapped).__name__ == "SubpixelUpsample2D"
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        expected = plain(x)
        assert torch.equal(swapped(x), expected)  # eager: diffusers' forward, bit for bit
        traced = torch.jit.trace(swapped, x)
        assert "upsample" not in str(traced.graph)  # the sub-pixel form: no 2x image is made
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)
    transposed = Upsample2D(6, use_conv_transpose=True)
    _use_subpixel_upsampling(transposed)
    assert type(transposed) is Upsample2D  # only nearest 2x then a 3x3 conv is rewritten
