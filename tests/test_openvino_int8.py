"""Optimizations(openvino_weights="int8" / "int8-full"): the OpenVINO engine's UNet with NNCF's int8 weights (or
weights and activations), within a stated
tolerance of fp32 "none", kept on disk under its own key, and refused with the fix where it cannot run."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="the OpenVINO engine needs `pip install openvino`")
pytest.importorskip("nncf", reason="int8 weights need `pip install 'fastdiff[int8]'`")

import openvino as ov

from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator, Optimizations
from fastdiff.openvino_engine import OpenVINOForward

from .images import psnr

pytestmark = pytest.mark.usefixtures("cpu_engine_default")

PROMPT = "a watercolor fox in the snow"
SIZE = {"height": 64, "width": 64}
# Bound for int8 UNet weights (f32 compute) against fp32 "none" on the same weights. NNCF stores each output
# channel as 8-bit integers with its own scale and zero point: a weight moves by up to half a step of 1/255 of
# its channel's range, ~0.2 % of the largest weight, a relative error like bf16's 2^-9 but in the UNet only. Its
# effect on the image is a few steps per pixel, and CFG (sd15, guidance 7.5) scales the difference of the two
# predictions by 7.5. Measured on these tiny models (AMD EPYC, AVX2, f32): sd15 with CFG 3 steps and 52.3 dB,
# sd-turbo 2 and 57.3 dB, sdxl-turbo 4 and 52.2 dB. Allowed: 12 steps and 40 dB (CFG: 24 and 35 dB). A UNet left
# in f32 (no compression) is 0-1 steps off and fails the check below that the IR holds 8-bit weights; a broken
# compression (a wrong zero point or scale) moves the image by tens of steps.
MAX_STEPS, MIN_PSNR = {False: 12, True: 24}, {False: 40.0, True: 35.0}
CASES = [("sd15", 2, 7.5), ("sd-turbo", 1, None), ("sdxl-turbo", 1, None)]  # (preset, steps, guidance)


def _int8(name: str, hub_cache: Path, weights: str = "int8") -> FewStepGenerator:
    opts = Optimizations.level("default", engine="openvino", precision="fp32", openvino_weights=weights)
    return FewStepGenerator.from_preset(name, device="cpu", cache_dir=hub_cache, local_files_only=True, optimize=opts)


def _image(gen: FewStepGenerator, **kwargs: Any) -> np.ndarray:
    return np.asarray(gen(PROMPT, seed=0, **SIZE, **kwargs).images[0], np.int16)


def _weight_types(xml: Path) -> set[str]:
    """The element types of the IR's weight constants (a MatMul's or convolution's second input, through the
    decompression subgraph NNCF inserts)."""
    model = ov.Core().read_model(str(xml))
    return {op.get_element_type().get_type_name() for op in model.get_ops() if op.get_type_name() == "Constant"}


def _float_weights_behind_fake_quantize(xml: Path) -> int:
    """How many FakeQuantize nodes of the IR quantize a float constant (through reshapes) at run time instead of
    reading weights stored as int8."""
    model = ov.Core().read_model(str(xml))
    count = 0
    for op in model.get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        source = op.input_value(0).get_node()
        while source.get_type_name() in ("Reshape", "Transpose"):
            source = source.input_value(0).get_node()
        count += source.get_type_name() == "Constant" and source.get_element_type().is_real()
    return count


@pytest.mark.parametrize(("name", "steps", "guidance"), CASES)
def test_int8_unet_within_tolerance_of_none(
    name: str, steps: int, guidance: float | None, load: Any, hub_cache: Path, ov_cache: Path
) -> None:
    exact, fast = load(name), _int8(name, hub_cache)
    assert fast.recipe.openvino_weights == fast.optimizations.openvino_weights == "int8"
    assert isinstance(fast.pipeline.unet.forward, OpenVINOForward) and fast.pipeline.unet.forward.weights == "int8"
    assert fast.pipeline.text_encoder.forward.weights is None  # the UNet only
    before = set(ov_cache.glob("openvino/*/model.xml"))
    call = {"steps": steps, "guidance_scale": guidance}
    cfg = bool(guidance and guidance > 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
        warnings.filterwarnings("ignore", message="OpenVINO converted", category=FastDiffWarning)
        reference, ours = _image(exact, **call), _image(fast, **call)
    diff = np.abs(reference - ours)
    print(f"{name}: int8 UNet max {diff.max()}/255, PSNR {psnr(reference, ours):.1f} dB")
    assert diff.max() <= MAX_STEPS[cfg] and psnr(reference, ours) >= MIN_PSNR[cfg], f"{name}: int8 drifted"
    new = set(ov_cache.glob("openvino/*/model.xml")) - before
    assert any({"u8", "i8"} & _weight_types(xml) for xml in new), "no IR with 8-bit weights was saved"


# Bound for "int8-full" (weights and activations of the UNet's convolutions and linear layers in int8,
# calibrated on the first call's inputs) against fp32 "none". Each activation is rounded to one of 256 steps of
# its tensor's measured range, so the error is that of 8-bit weights plus one such rounding per layer input.
# Measured on these tiny random models (AMD EPYC Zen 3, AVX2, f32): sd-turbo 17/255 and 37.6 dB on the
# calibration call, 51 and 34.2 dB on another prompt and seed; sdxl-turbo 36-38 and 33.1-33.3 dB (not run here:
# the suite's time). Allowed: 80 steps and 30 dB. An unquantized UNet passes the image bound and fails the
# checks below that the IR holds int8 weights and the convolutions run int8 kernels.
FULL_MAX_STEPS, FULL_MIN_PSNR = 80, 30.0


def test_int8_full_unet_within_tolerance_of_none(load: Any, hub_cache: Path, ov_cache: Path) -> None:
    name = "sd-turbo"
    exact, fast = load(name), _int8(name, hub_cache, "int8-full")
    assert fast.pipeline.unet.forward.weights == "int8-full" and fast.pipeline.text_encoder.forward.weights is None
    before = set(ov_cache.glob("openvino/*/model.xml"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
        warnings.filterwarnings("ignore", message="OpenVINO converted", category=FastDiffWarning)
        reference, ours = _image(exact), _image(fast)
        other = {"prompt": "a red bicycle", "seed": 5, **SIZE}  # not the calibration's inputs
        reference2 = np.asarray(exact(**other).images[0], np.int16)
        ours2 = np.asarray(fast(**other).images[0], np.int16)
    for ref, got, what in ((reference, ours, "calibration call"), (reference2, ours2, "another prompt and seed")):
        diff = np.abs(ref - got)
        print(f"{name} {what}: int8-full UNet max {diff.max()}/255, PSNR {psnr(ref, got):.1f} dB")
        assert diff.max() <= FULL_MAX_STEPS and psnr(ref, got) >= FULL_MIN_PSNR, f"{name}: {what} drifted"
    new = set(ov_cache.glob("openvino/*/model.xml")) - before
    assert any("i8" in _weight_types(xml) for xml in new), "no IR with int8 weights was saved"
    assert [_float_weights_behind_fake_quantize(xml) for xml in new] == [0] * len(new), "weights left as f32"
    compiled = next(iter(fast.pipeline.unet.forward._entries.values())).model
    kernels = {
        op.get_rt_info()["primitiveType"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    }
    assert any("I8" in k for k in kernels), f"the UNet's convolutions do not run int8 kernels: {kernels}"


@pytest.mark.filterwarnings("ignore:`torch\\.jit\\.trace:DeprecationWarning")  # OpenVINO's converter, called here
def test_linears_as_convolutions_keeps_the_sums() -> None:
    from fastdiff.openvino_int8 import linears_as_convolutions

    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).eval()
    x = torch.randn(2, 5, 16)
    model = ov.convert_model(net, example_input=x, input=[(2, 5, 16)])
    assert linears_as_convolutions(model) == 2
    types = {op.get_type_name() for op in model.get_ops()}
    assert "Convolution" in types and "MatMul" not in types
    got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x.numpy())[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, net(x).numpy(), rtol=1e-4, atol=1e-5)


def test_int8_and_f32_unets_are_cached_apart(load: Any, hub_cache: Path, ov_cache: Path) -> None:
    from fastdiff import openvino_cache

    openvino_cache._live.clear()  # no compiled model of other modules' generators (another disk cache) stands in
    int8 = _int8("sd-turbo", hub_cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FastDiffWarning)
        first = _image(int8)
        opts = Optimizations.level("default", engine="openvino", precision="fp32")
        f32 = FewStepGenerator.from_preset("sd-turbo", device="cpu", cache_dir=hub_cache, local_files_only=True,
                                           optimize=opts)  # fmt: skip
        plain = _image(f32)
        openvino_cache._live.clear()  # as in a new process: the int8 UNet comes back from its own IR
        before = openvino_cache.conversions()
        again = _image(_int8("sd-turbo", hub_cache))
    after = openvino_cache.conversions()
    assert after["conversions"] == before["conversions"] and after["cache_loads"] > before["cache_loads"]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, plain)  # the f32 UNet is another model, not the int8 one read back
    compiled = [{id(shared) for shared in g.pipeline.unet.forward._entries.values()} for g in (f32, int8)]
    assert all(compiled) and not compiled[0] & compiled[1]  # one compiled model each, none shared


def test_int8_is_refused_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(FastDiffError, match="runs torch"):
        Optimizations.level("default", engine="torch", openvino_weights="int8").recipe_for(cpu)
    with pytest.raises(FastDiffError, match="runs torch"):
        Optimizations.level("default", openvino_weights="int8").recipe_for("cuda")
    with pytest.raises(FastDiffError, match="one of"):
        Optimizations.level("default", openvino_weights="int4").recipe_for(cpu)
    from fastdiff import recipe

    monkeypatch.setattr(recipe, "nncf_usable", lambda: False)
    with pytest.raises(FastDiffError, match=r"pip install 'fastdiff\[int8\]'"):
        Optimizations.level("default", openvino_weights="int8").recipe_for(cpu)
    assert Optimizations.level("max").recipe_for(cpu).openvino_weights is None  # an opt-in, never a level's default


def test_nncf_is_imported_with_its_telemetry_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdiff import openvino_int8

    monkeypatch.delenv("NNCF_CI", raising=False)  # NNCF sends usage data unless it sees NNCF_CI (or CI) set
    openvino_int8._nncf()  # as every conversion to int8 imports it
    assert os.environ.get("NNCF_CI") == "1"
