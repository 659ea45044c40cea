"""The CUDA recipes, run on CPU tensors: a `Recipe` is applied exactly as it says on any device.

fp16 weights, the recipe `recipe_for("cuda")` decides (fp16 UNet and text encoders, bf16 VAE, fused
QKV, channels_last; "max" adds the tiny autoencoder), for each family, txt2img and img2img, CFG on for sd15.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fastdiff import FastDiffWarning, FewStepGenerator, Optimizations, presets
from fastdiff.optimize import decide_recipe
from fastdiff.testing import tiny_autoencoder_tiny, tiny_pipeline
from fastdiff.testing.repo_configs import SCHEDULER_CONFIGS

CUDA = torch.device("cuda")
PROMPT = "a red fox in the snow"
# Bound for the CUDA recipe (fp16 UNet and text encoders, bf16 VAE) against fp32 "none" on the same fp16-rounded
# weights. fp16 keeps 11 significant bits and bf16 8: one rounding moves a value by up to 2^-9 ≈ 0.2 % (bf16),
# and the VAE's last convolution maps [-1, 1] onto 255 steps, so each output pixel carries about ±0.5 step of
# rounding noise, accumulated over the decoder's ~20 layers. Measured on these tiny models without CFG: max 1-8
# steps, PSNR 48-57 dB. CFG (sd15, guidance 7.5) extrapolates uncond + 7.5·(cond − uncond), which scales the
# difference of two rounded predictions by 7.5: measured max 7-33 steps, PSNR 37-49 dB. Allowed: 16 steps and
# 40 dB without CFG, 48 steps and 32 dB with it. A wrong recipe is far off: latents in the wrong dtype crash (the
# bf16 VAE fed fp16 latents), the VAE scaling factor applied twice measured 114 steps and 25 dB. (The schedule
# itself is checked exactly, against the model cards, by the parity tests.)
MAX_STEPS, MIN_PSNR = {False: 16, True: 48}, {False: 40.0, True: 32.0}
CASES = [("sd15", 2), ("sd-turbo", 2), ("sdxl-turbo", 2)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _pipelines(name: str) -> tuple[Any, Any]:
    """The same weights twice: rounded to fp16 and kept in fp32 (the reference), and in fp16 (the recipe's)."""
    preset = presets.get(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        full = tiny_pipeline(preset.family, scheduler_config=SCHEDULER_CONFIGS[preset.repo_id])
    for module in (full.unet, full.vae, full.text_encoder, getattr(full, "text_encoder_2", None)):
        if module is not None:
            for p in module.parameters():
                p.data = p.data.half().float()
    half = copy.deepcopy(full)
    for module in (half.unet, half.vae, half.text_encoder, getattr(half, "text_encoder_2", None)):
        if module is not None:
            module.to(torch.float16)
    return full, half


@pytest.fixture(scope="module")
def weights() -> dict[str, tuple[Any, Any]]:
    return {name: _pipelines(name) for name, _ in CASES}


def _image(gen: FewStepGenerator, steps: int, img2img: bool) -> np.ndarray:
    extra: dict[str, Any] = {"image": Image.new("RGB", (64, 64), (200, 40, 30)), "strength": 0.5} if img2img else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*was trained at", category=FastDiffWarning)
        result = gen(PROMPT, seed=0, steps=steps, height=64, width=64, **extra)
    return np.asarray(result.images[0], np.float64)


@pytest.mark.parametrize("img2img", [False, True], ids=["txt2img", "img2img"])
@pytest.mark.parametrize("level", ["default", "max"])
@pytest.mark.parametrize(("name", "steps"), CASES)
def test_cuda_recipe_runs_on_cpu_within_tolerance(
    name: str, steps: int, level: str, img2img: bool, weights: dict[str, tuple[Any, Any]]
) -> None:
    full, half = weights[name]
    tiny = tiny_autoencoder_tiny() if level == "max" else None
    recipe = Optimizations.level(level, compile=False, tiny_vae=tiny).recipe_for(CUDA)
    gen = FewStepGenerator.from_pipeline(name, half, optimize=recipe)
    assert gen.recipe is recipe  # applied as decided for CUDA, though the tensors are on the CPU
    assert gen.pipeline.unet.dtype == torch.float16 and gen.pipeline.vae.dtype == torch.bfloat16
    assert gen.pipeline.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    reference = FewStepGenerator.from_pipeline(name, full, optimize=Optimizations.level("none", tiny_vae=tiny))
    expected, got = _image(reference, steps, img2img), _image(gen, steps, img2img)
    assert np.isfinite(got).all() and got.std() > 5, "a flat image: the comparison would prove nothing"
    cfg = presets.get(name).guidance_scale > 1
    assert np.abs(got - expected).max() <= MAX_STEPS[cfg] and _psnr(got, expected) >= MIN_PSNR[cfg]
    assert gen.pipeline.vae.dtype == torch.bfloat16  # img2img's encode did not turn the VAE back to fp16


def test_cfg_on_runs_the_doubled_batch(weights: dict[str, tuple[Any, Any]]) -> None:
    full, half = weights["sd15"]
    recipe = Optimizations.level("default", compile=False).recipe_for(CUDA)
    gen = FewStepGenerator.from_pipeline("sd15", half, optimize=recipe)
    batches: list[int] = []
    handle = gen.pipeline.unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        got = _image(gen, 2, img2img=False)
    finally:
        handle.remove()
    assert presets.get("sd15").guidance_scale > 1 and set(batches) == {2}  # CFG: both halves in one UNet call
    expected = _image(FewStepGenerator.from_pipeline("sd15", full), 2, img2img=False)
    assert np.abs(got - expected).max() <= MAX_STEPS[True] and _psnr(got, expected) >= MIN_PSNR[True]


def test_recipe_is_decided_once_and_shown() -> None:
    cuda, cpu = Optimizations.level("default").recipe_for(CUDA), Optimizations.level("default").recipe_for("cpu")
    assert (cuda.bf16_vae, cuda.channels_last, cuda.fuse_qkv, cuda.compile) == (True, True, True, True)
    assert cuda.compile_mode == "reduce-overhead" and cuda.cuda_graphs and cuda.device == "cuda"
    assert (cpu.bf16_vae, cpu.compile, cpu.compile_mode, cpu.device) == (False, False, None, "cpu")
    assert decide_recipe(cuda, torch.device("cpu")) is cuda  # a decided recipe stays what it says
    assert Optimizations.level("max").recipe_for(CUDA).tiny_vae == "auto"
    assert cuda.optimizations == Optimizations.level("default")  # and names what it was decided from


def test_from_pipeline_applies_the_recipe_of_from_preset(load: Any) -> None:
    pipe = load("sdxl-turbo").pipeline
    gen = FewStepGenerator.from_pipeline("sdxl-turbo", pipe, optimize="default")
    assert gen.recipe == Optimizations.level("default").recipe_for("cpu")
    assert gen.optimizations == Optimizations.level("default")
    assert gen.recipe.engine == "torch" and gen.recipe.device == "cpu"  # FASTDIFF_CPU_ENGINE=torch in the tests


# Compiled with aot_eager, not inductor: inductor took 247 s to compile ONE tiny UNet and decoder on this 2-core
# machine (aot_eager: 12-24 s), which does not fit the 10-minute suite. aot_eager traces the same dynamo graphs,
# guards and recompilations as inductor; only the code generation is left out. mode="reduce-overhead" (what the
# CUDA recipe says) needs two warm-up runs: the first compiles, the second records the CUDA graph.
@pytest.mark.parametrize(("name", "img2img"), [("sd15", False), ("sd-turbo", False), ("sdxl-turbo", True)])
def test_compiled_recipe_warms_up_then_never_recompiles(
    name: str, img2img: bool, weights: dict[str, tuple[Any, Any]], small_sizes: None
) -> None:
    import torch._dynamo

    recipe = Optimizations.level("default", compile_backend="aot_eager").recipe_for(CUDA)
    gen = FewStepGenerator.from_pipeline(name, weights[name][1], optimize=recipe)
    assert recipe.cuda_graphs and gen.warmup_runs == 2
    torch._dynamo.reset()
    calls: list[int] = []
    handle = gen.pipeline.unet.register_forward_pre_hook(lambda m, args: calls.append(1))
    try:
        gen.warmup(height=64, width=64, img2img=img2img)  # sd15: guidance 7.5, the CFG batch
    finally:
        handle.remove()
    steps = presets.get(name).default_steps if name != "sd15" else 20
    assert len(calls) >= 2 * min(steps, 4)  # two full generations, not one
    with torch._dynamo.config.patch(error_on_recompile=True), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*torch.compile compiles", category=FastDiffWarning)
        got = _image(gen, 2, img2img)
    assert np.isfinite(got).all() and got.std() > 5
    # CFG switched (the UNet batch halves or doubles): a new shape, announced before it compiles. The call is
    # stopped at its first text encoder call, so that the test does not pay for that compilation.
    stop = gen.pipeline.text_encoder.register_forward_pre_hook(lambda m, args: (_ for _ in ()).throw(_Stop()))
    try:
        with warnings.catch_warnings(), pytest.warns(FastDiffWarning, match="compiles for this shape"):
            warnings.filterwarnings("ignore", message=".*distilled to run without guidance", category=FastDiffWarning)
            with pytest.raises(_Stop):
                gen("a new prompt", seed=0, steps=2, guidance_scale=1.0 if name == "sd15" else 2.0, height=64, width=64)
        if img2img:  # img2img at its input image's size, which is new
            with pytest.warns(FastDiffWarning, match="first call at 96x96"), pytest.raises(_Stop):
                gen("another prompt", image=Image.new("RGB", (96, 96)), strength=0.5, steps=2)
    finally:
        stop.remove()


class _Stop(Exception):
    """Raised by a hook to end a call once what the test checks has happened."""
