"""int8 forms of a converted OpenVINO model, by NNCF (OpenVINO's own compression tool): the two weight formats
of `openvino_cache.WEIGHT_FORMATS` other than f32.

- `"int8"`: `compress_weights`, weights only (per output channel, with a zero point), `KEPT_F32` left f32; the
  kernels decompress them to f32 and compute in f32. Less memory; on CPUs without VNNI more work, so slower
  (docs/performance.md; the runs: docs/notes/performance-history.md).
- `"int8-full"`: `quantize_fully`, weights and activations (what optimum-intel calls full quantization): every
  convolution and every linear layer computes in int8 from ranges measured on calibration inputs. Linear layers
  become 1×1 convolutions first (`linears_as_convolutions`): OpenVINO's CPU plugin has int8 kernels for AVX2
  convolutions (1.6-1.9× its f32 ones on an AVX2-only AMD EPYC) and none faster than f32 for matrix products
  there, which stay f32 (attention's products of two activations). Its image is another one: on the trained
  shipped model 18-23 dB against f32 (a one-step model multiplies the UNet's error by 14.6), so no level turns
  it on (docs/notes/performance-history.md, "On a trained model").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import FastDiffError

__all__ = [
    "CALIBRATION_DRAWS",
    "KEPT_F32",
    "REVISIONS",
    "compress_weights",
    "latent_redraws",
    "linears_as_convolutions",
    "nncf_usable",
    "quantize_fully",
]


def _import_nncf() -> Any:
    # NNCF sends usage telemetry over the network unless its consent file says no or it believes it runs in CI;
    # fastdiff makes no network call of its own accord, so it says CI (NNCF reads it once, at its first import).
    os.environ.setdefault("NNCF_CI", "1")
    import nncf

    nncf.set_log_level(logging.ERROR)  # its INFO lines and progress bars on every conversion
    return nncf


def nncf_usable() -> bool:
    """True when `import nncf` works (the `fastdiff[int8]` extra: OpenVINO's weight compression)."""
    try:
        _import_nncf()
    except ImportError:
        return False
    return True


def _nncf(weights: str) -> Any:
    if not nncf_usable():
        raise FastDiffError(f"openvino_weights={weights!r} needs NNCF: pip install 'fastdiff[int8]'")
    return _import_nncf()


# Layers both int8 formats leave f32: the first and last convolutions and the time and added embeddings' layers.
# They hold a few MB of SDXL's 10 GB and one token each (no time to save), and a one-step model carries their
# error into the image most directly: on the trained shipped model (docs/notes/performance-history.md) int8
# weights with them f32 took the image from 38.2 to 44.4 dB median (worst 25.6 to 33.4 dB) against f32.
KEPT_F32 = r".*(conv_in|conv_out|time_embedding|add_embedding|time_emb_proj)[./].*"


def compress_weights(model: Any) -> Any:
    """`model` with int8 weights (NNCF's `compress_weights`, INT8_ASYM: per output channel, with a zero point),
    the layers `KEPT_F32` matches left f32."""
    nncf = _nncf("int8")
    kept = nncf.IgnoredScope(patterns=[KEPT_F32], validate=False)
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=kept)


def linears_as_convolutions(model: Any) -> int:
    """Rewrite in place every MatMul of `model` by a 2-D constant (a linear layer's weight) as the same sums in
    a 1×1 convolution over the tokens laid out as one image column; returns how many. The result is the same
    (f32 rounding aside). The input (..., C) is viewed as (1, C, T, 1), whose channels-last layout, the one the
    CPU plugin's int8 convolutions use, is the input's own memory; the weight is a reshape of the same constant."""
    import openvino.opset13 as ops

    def shape(values: Sequence[int]) -> Any:
        return ops.constant(np.array(values, np.int64))

    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul" or node.get_attributes()["transpose_a"]:
            continue
        weight, x = node.input_value(1), node.input_value(0)
        if weight.get_node().get_type_name() != "Constant" or len(weight.get_shape()) != 2:
            continue
        if not x.get_partial_shape().is_static:
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


# Part of an int8 IR's cache key, per format: raised when `compress_weights` or `quantize_fully` makes another
# model, so that IRs saved by an earlier one are converted again instead of read back. "int8" 2: `KEPT_F32` left
# f32; "int8-full" 2: the linears' weights stored as int8 too.
REVISIONS = {"int8": 2, "int8-full": 2}


def quantize_fully(model: Any, samples: Sequence[Sequence[np.ndarray]]) -> Any:
    """`model` with its convolutions and linear layers in int8, weights and activations: NNCF's `quantize`
    (MIXED: asymmetric per-tensor activations, symmetric per-channel weights) with activation ranges from
    `samples` (each one value per model input, in order), the weights then stored as int8 constants."""
    from openvino import passes
    from openvino._offline_transformations import compress_quantize_weights_transformation

    nncf = _nncf("int8-full")
    linears_as_convolutions(model)
    # The 1×1 kernels are Reshapes of the linears' weights; folded, they are Constants again (sharing the same
    # memory: a Reshape folds without a copy), which is the form NNCF's weight FakeQuantizes need to be stored as
    # int8 below. Unfolded, the SDXL UNet's IR kept 2.2 G of its 2.6 G weights as f32 (8.7 GB).
    folding = passes.Manager()
    folding.register_pass(passes.ConstantFolding())
    folding.run_passes(model)
    data = nncf.Dataset([list(sample) for sample in samples])
    # The products left as MatMul are of two activations (attention): int8 does not pay there on AVX2 kernels,
    # and attention's softmax inputs are the most range-sensitive values of the network.
    # The first and last convolutions and the time and added embeddings' layers (one token each: no time to
    # save) stay f32; asymmetric activation ranges (MIXED) suit SiLU's outputs. On the tiny test models these
    # two choices took the image from 27-31 to 33-38 dB against f32.
    ignored = nncf.IgnoredScope(types=["MatMul"], patterns=[KEPT_F32], validate=False)
    preset = nncf.QuantizationPreset.MIXED
    quantized = nncf.quantize(model, data, subset_size=len(samples), ignored_scope=ignored, preset=preset)
    compress_quantize_weights_transformation(quantized)  # f32 weights behind FakeQuantize → int8 constants
    return quantized


CALIBRATION_DRAWS = 3


def latent_redraws(names: list[str], tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Inputs to measure activation ranges on besides the first call's own: its latents drawn again
    (`CALIBRATION_DRAWS` times, at their scale; seeded, so a conversion is reproducible), the conditioning kept."""
    generator = torch.Generator().manual_seed(0)

    def redrawn(name: str, t: torch.Tensor) -> torch.Tensor:
        if name != "sample":
            return t
        return torch.randn(t.shape, generator=generator, dtype=t.dtype) * t.std() + t.mean()

    return [[redrawn(n, t) for n, t in zip(names, tensors, strict=True)] for _ in range(CALIBRATION_DRAWS)]
