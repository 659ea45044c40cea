"""The CPU kernels compute what the stock modules compute (to fp32 rounding) and fall back where they cannot."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers.models.upsampling import Upsample2D
from torch import nn
from torch.nn import functional as F

from fastdiff.cpu_kernels import (
    PACK_MAX_PIXELS,
    CachedKVLinear,
    OneDNNConv2d,
    OneDNNLinear,
    SubpixelUpsample2D,
    use_cpu_kernels,
)

# oneDNN sums in another order than MKL/aten: fp32 rounding differences, ~1e-6 of the output's scale.
ATOL = 1e-5


def swapped(module: nn.Module) -> nn.Module:
    fast = copy.deepcopy(module)
    use_cpu_kernels(fast)
    return fast


@pytest.mark.parametrize("shape", [(5, 32), (2, 7, 32), (2, 3, 4, 32)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_stock(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    stock = nn.Linear(32, 48, bias=bias)
    fast = swapped(stock)
    assert type(fast) is OneDNNLinear
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), stock(x), atol=ATOL, rtol=0)
        torch.testing.assert_close(fast(x.transpose(0, -1).contiguous().transpose(0, -1)), stock(x), atol=ATOL, rtol=0)


def test_autograd_and_other_dtypes_take_the_stock_path() -> None:
    stock = nn.Linear(8, 4)
    fast = swapped(stock)
    x = torch.randn(3, 8, requires_grad=True)
    fast(x).sum().backward()  # the oneDNN op has no backward: with grad on, F.linear runs
    assert x.grad is not None
    torch.testing.assert_close(x.grad, stock.weight.sum(0).expand(3, 8))  # d(sum of x Wᵀ + b)/dx: W's column sums
    with torch.no_grad():
        half = fast.to(torch.float64)(torch.randn(3, 8, dtype=torch.float64))
    assert half.dtype == torch.float64


@pytest.mark.parametrize(
    ("channels", "size", "kwargs"),
    [
        (16, 8, {"padding": 1}),  # small input: packed weight
        (16, 40, {"padding": 1}),  # above PACK_MAX_PIXELS: stock conv on NHWC
        (16, 9, {"padding": 1, "stride": 2}),
        (16, 8, {"kernel_size": 1}),
        (16, 8, {"padding": 1, "groups": 4}),
    ],
)
def test_conv_matches_stock(channels: int, size: int, kwargs: dict[str, int]) -> None:
    torch.manual_seed(0)
    stock = nn.Conv2d(channels, 24, **{"kernel_size": 3, **kwargs})
    fast = swapped(stock)
    assert type(fast) is OneDNNConv2d
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        out = fast(x)
        torch.testing.assert_close(out, stock(x), atol=ATOL, rtol=0)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert (fast._packed is not None) == (size * size <= PACK_MAX_PIXELS)


def test_conv_with_reflect_padding_is_stock() -> None:
    stock = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
    fast = swapped(stock)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), stock(x), atol=ATOL, rtol=0)
    assert fast._packed is None


def test_packed_weight_follows_weight_changes() -> None:
    torch.manual_seed(0)
    fast = swapped(nn.Conv2d(8, 8, 3, padding=1))
    x = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        before = fast(x)
        fast.weight.mul_(2)  # in place, like a fused LoRA
        torch.testing.assert_close(fast(x) - fast.bias[:, None, None], 2 * (before - fast.bias[:, None, None]))
        fast.load_state_dict({"weight": torch.zeros(8, 8, 3, 3), "bias": torch.ones(8)})
        assert torch.equal(fast(x), torch.ones(1, 8, 8, 8))


@pytest.mark.parametrize(("size", "out_channels"), [(4, 8), (5, 6), (7, 8), (40, 8)])
def test_subpixel_upsample_matches_the_stock_module(size: int, out_channels: int) -> None:
    torch.manual_seed(0)
    stock = Upsample2D(8, use_conv=True, out_channels=out_channels)
    fast = swapped(stock)  # a deep copy: the same weights, the class swapped
    assert type(fast) is SubpixelUpsample2D and type(stock) is Upsample2D
    x = torch.randn(2, 8, size, size + 3)  # odd heights and widths, not square
    with torch.no_grad():
        torch.testing.assert_close(fast(x), stock(x), atol=ATOL, rtol=0)
        assert fast._phases is not None  # the sub-pixel path ran (not the stock fallback)
        doubled = (2 * size, 2 * size + 6)  # output_size of a plain 2x: the sub-pixel path as well
        torch.testing.assert_close(fast(x, doubled), stock(x, doubled), atol=ATOL, rtol=0)
        odd = (2 * size + 1, 2 * size + 7)  # not a plain 2x: diffusers' own path
        torch.testing.assert_close(fast(x, odd), stock(x, odd), atol=ATOL, rtol=0)
    assert "_phases" not in dict(fast.named_buffers())
    assert set(fast.state_dict()) == set(stock.state_dict())


def test_cross_attention_projection_reuses_its_last_output() -> None:
    from diffusers.models.attention_processor import Attention

    attn = swapped(Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8))
    assert type(attn.to_k) is CachedKVLinear and type(attn.to_v) is CachedKVLinear
    assert type(attn.to_q) is OneDNNLinear  # the query reads the image tokens: never reused
    text = torch.randn(1, 5, 12)
    with torch.no_grad():
        first = attn.to_k(text)
        assert attn.to_k(text.clone()) is first  # an equal tensor: the same output object, no projection
        other = attn.to_k(text + 1)
        assert other is not first
        torch.testing.assert_close(other, F.linear(text + 1, attn.to_k.weight), atol=ATOL, rtol=0)
        assert attn.to_k((text + 1).clone()) is other
        stored = text + 2
        kept = attn.to_k(stored)
        stored.mul_(3)  # the very tensor it kept, written in place: its version changed, so no reuse
        fresh = attn.to_k(stored)
        assert fresh is not kept
        torch.testing.assert_close(fresh, F.linear(stored, attn.to_k.weight), atol=ATOL, rtol=0)


def test_swap_keeps_state_dict_and_leaves_subclasses_alone() -> None:
    class Custom(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(4, 4, 1), Custom(4, 4))
    keys = set(model.state_dict())
    assert use_cpu_kernels(model) == 2
    assert set(model.state_dict()) == keys
    assert type(model[2]) is Custom


def test_traced_subpixel_upsampler_is_diffusers_upsampler() -> None:
    """What OpenVINO converts for the decoder's upsamplers: plain conv + interleave ops, equal to diffusers'."""
    torch.manual_seed(0)
    up = Upsample2D(8, use_conv=True).eval()
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        expected = up(x)
        sub = copy.deepcopy(up)
        sub.__class__ = SubpixelUpsample2D
        sub.derive_taps()
        traced = torch.jit.trace(sub, (x,))
    ops = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "aten::upsample_nearest2d" not in ops  # the sub-pixel graph, not nearest-then-3x3
    assert torch.allclose(traced(x), expected, atol=1e-5)
    with torch.no_grad():
        sub.conv.weight.mul_(2.0)  # taps derived from old weights are not used: the plain graph is traced
        retraced = torch.jit.trace(sub, (x,))
    assert "aten::upsample_nearest2d" in {node.kind() for node in retraced.inlined_graph.nodes()}
