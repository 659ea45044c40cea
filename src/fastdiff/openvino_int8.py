"""int8 forms of a converted OpenVINO model by NNCF (`pip install 'fastdiff[int8]'`), OpenVINO's compression tool.

- "int8": `compress_weights`, weights only (optimum-intel's `--weight-format int8`), decompressed to f32 in the
  kernels: less memory; slower on CPUs without VNNI.
- "int8-full": `quantize_fully`, weights and activations of every convolution and linear layer, calibrated.
  Another image (18-23 dB against f32 on the trained shipped model), so no level turns it on.
Measurements: docs/performance.md and docs/notes/performance-history.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from typing import Any

import numpy as np
import torch

__all__ = ["KEPT_F32", "compress_weights", "linears_as_convolutions", "nncf_usable", "quantize_fully"]

# Layers both formats leave f32: the first and last convolutions and the time and added embeddings' layers (a few
# MB, one token each). A one-step model carries their error into the image most directly: on the trained shipped
# model int8 weights with them f32 took the median from 38.2 to 44.4 dB against f32.
KEPT_F32 = r".*(conv_in|conv_out|time_embedding|add_embedding|time_emb_proj)[./].*"
_CALIBRATION_DRAWS = 3


def nncf_usable() -> bool:
    """True when NNCF is installed (the `fastdiff[int8]` extra)."""
    return find_spec("nncf") is not None


def _nncf() -> Any:  # installed: the recipe refuses the int8 formats where it is not
    # NNCF sends usage telemetry unless it believes it runs in CI; fastdiff makes no network call of its own accord.
    os.environ.setdefault("NNCF_CI", "1")
    import nncf

    nncf.set_log_level(logging.ERROR)  # its INFO lines and progress bars on every conversion
    return nncf


def compress_weights(model: Any) -> Any:
    """`model` with int8 weights (INT8_ASYM: per output channel, with a zero point), `KEPT_F32` left f32."""
    nncf = _nncf()
    kept = nncf.IgnoredScope(patterns=[KEPT_F32], validate=False)
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=kept)


def linears_as_convolutions(model: Any) -> int:
    """Rewrite in place every MatMul of `model` by a 2-D constant (a linear layer) as the same sums in a 1×1
    convolution, the input (..., C) viewed as (1, C, T, 1); returns how many. The CPU plugin has int8 kernels for
    AVX2 convolutions (1.6-1.9× its f32 ones on a Zen 3) and none faster than f32 for matrix products."""
    import openvino.opset13 as ops

    def shape(values: Sequence[int]) -> Any:
        return ops.constant(np.array(values, np.int64))

    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul" or node.get_attributes()["transpose_a"]:
            continue
        weight, x = node.input_value(1), node.input_value(0)
        constant = weight.get_node().get_type_name() == "Constant" and len(weight.get_shape()) == 2
        if not constant or not x.get_partial_shape().is_static:
            continue
        if not node.get_attributes()["transpose_b"]:  # (C, O) → (O, C), folded when compiled
            weight = ops.transpose(weight, shape([1, 0])).output(0)
        out_channels, in_channels = weight.get_shape()
        dims = list(x.get_shape())
        tokens = int(np.prod(dims[:-1]))
        image = ops.transpose(ops.reshape(x, shape([1, tokens, 1, in_channels]), False), shape([0, 3, 1, 2]))
        kernel = ops.reshape(weight, shape([out_channels, in_channels, 1, 1]), False)
        y = ops.convolution(image, kernel, [1, 1], [0, 0], [0, 0], [1, 1])
        y = ops.reshape(ops.transpose(y, shape([0, 2, 3, 1])), shape([*dims[:-1], out_channels]), False)
        y.set_friendly_name(node.get_friendly_name())
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(y.output(0))
        count += 1
    model.validate_nodes_and_infer_types()
    return count


def quantize_fully(model: Any, example: Mapping[str, torch.Tensor]) -> Any:
    """`model` with its convolutions and linear layers in int8, weights and activations (NNCF's `quantize`,
    MIXED: asymmetric activations suit SiLU's outputs), the ranges measured on the `example` inputs and on
    `_CALIBRATION_DRAWS` redraws of its latents. Attention's products of two activations and `KEPT_F32` stay f32:
    int8 does not pay there on AVX2, and they are the most range-sensitive (the tiny models: 27-31 → 33-38 dB)."""
    from openvino import passes

    nncf = _nncf()
    linears_as_convolutions(model)
    # Folded, the 1×1 kernels (Reshapes of the linears' weights) are Constants again, which NNCF stores as int8;
    # unfolded, the SDXL UNet's IR kept 2.2 G of its 2.6 G weights f32.
    folding = passes.Manager()
    folding.register_pass(passes.ConstantFolding())
    folding.run_passes(model)
    generator = torch.Generator().manual_seed(0)  # seeded: a conversion is reproducible

    def redrawn(name: str, t: torch.Tensor) -> np.ndarray:
        if name == "sample":  # the latents, at their scale; the conditioning is kept
            t = torch.randn(t.shape, generator=generator, dtype=t.dtype) * t.std() + t.mean()
        return t.numpy()

    samples = [[t.numpy() for t in example.values()]]
    samples += [[redrawn(n, t) for n, t in example.items()] for _ in range(_CALIBRATION_DRAWS)]
    ignored = nncf.IgnoredScope(types=["MatMul"], patterns=[KEPT_F32], validate=False)
    preset = nncf.QuantizationPreset.MIXED
    return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples), ignored_scope=ignored, preset=preset)
