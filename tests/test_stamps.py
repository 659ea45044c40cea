"""TensorStamp: a tensor written since it was stamped no longer matches, whether the write bumped its counter
(`add_`, `load_state_dict`) or went through `.data` (peft's LoRA merge), which bumps none."""

from __future__ import annotations

import pytest
import torch

from fastdiff.stamps import SAMPLES, TensorStamp, gathered, samples, stamps_match


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_a_write_through_data_is_seen(dtype: torch.dtype) -> None:
    weight = torch.nn.Parameter(torch.randn(64, 48, dtype=dtype), requires_grad=False)
    stamp = TensorStamp(weight)
    assert stamp.matches(weight) and stamps_match([stamp], [weight])
    weight.data += 0.25  # a dense change, as a fused LoRA's delta is
    assert weight._version == 0  # the counter did not see it...
    assert not stamp.matches(weight) and not stamps_match([stamp], [weight])  # ...the stamp does


def test_a_counted_write_and_a_new_tensor_are_seen() -> None:
    weight = torch.randn(32, 32)
    stamp = TensorStamp(weight)
    weight.mul_(1.0)  # the same values, written: the counter moves
    assert not stamp.matches(weight)
    assert not TensorStamp(weight).matches(weight.clone())  # equal values at another address
    assert stamps_match([], []) and not stamps_match([TensorStamp(weight)], [])


def test_samples_cover_every_layout() -> None:
    full = torch.arange(1000, dtype=torch.float32)
    tensors = [
        full,
        full[::3],
        full.reshape(40, 25).t(),
        torch.tensor(2.0),
        torch.empty(0),
        torch.empty(5, device="meta"),
    ]
    sizes = [len(b) for b in samples(tensors)]
    assert sizes == [4 * SAMPLES, 4 * SAMPLES, 4 * SAMPLES, 4, 0, 0]
    assert samples([full[::3]]) == samples([full[::3].contiguous()])  # the same elements, read either way
    picked = torch.frombuffer(bytearray(samples([full])[0]), dtype=torch.float32)
    assert picked[0] == 0 and picked[-1] >= 999 - 999 // (SAMPLES - 1)  # spread from end to end


def test_the_accelerator_path_takes_the_same_samples() -> None:
    """`gathered` (tensors on a GPU: one copy to the host for all) runs on CPU tensors too: the same bytes."""
    full = torch.arange(1000, dtype=torch.float32)
    tensors = [full, full[::3], torch.randn(7, 9, dtype=torch.bfloat16), torch.tensor(2.0), torch.empty(0)]
    assert gathered(tensors) == samples(tensors)
    assert gathered([]) == []
