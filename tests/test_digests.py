"""weights_digest (the OpenVINO disk cache's key): a weight that lies unwritten in a mapped safetensors file is
named by the file instead of hashed, and anything else (a written page, another file, private memory) is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn

from fastdiff import digests, presets, stamps
from fastdiff.digests import FileMappings, weights_digest
from fastdiff.testing import tiny_unet

pytestmark = pytest.mark.skipif(
    not (Path("/proc/self/maps").is_file() and Path("/proc/self/pagemap").is_file()),
    reason="reads Linux's /proc/self/maps and /proc/self/pagemap",
)


def _module(weights: dict[str, torch.Tensor] | None = None) -> nn.Module:
    module = nn.Sequential(nn.Linear(300, 400), nn.Linear(400, 200))
    if weights is not None:
        module.load_state_dict(weights, assign=True)  # the tensors themselves become the parameters
    return module


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.safetensors"
    save_file(_module().state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def no_remembered_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "_digests", {})  # each digest below is computed, not recalled


def test_a_mapped_weight_is_named_by_its_file(weights_file: Path) -> None:
    first, second = _module(load_file(weights_file)), _module(load_file(weights_file))
    weight = first[0].weight
    assert weight.data_ptr() != second[0].weight.data_ptr()  # two mappings of one file
    identity = FileMappings().identity(weight)
    assert identity is not None and f":{os.stat(weights_file).st_ino}:" in identity
    assert weights_digest(first) == weights_digest(second)
    private = _module({k: v.clone() for k, v in load_file(weights_file).items()})  # the same values, hashed
    assert FileMappings().identity(private[0].weight) is None
    assert weights_digest(private) != weights_digest(first)


def test_a_written_page_is_hashed_even_without_a_version_bump(weights_file: Path) -> None:
    module = _module(load_file(weights_file))
    mapped = weights_digest(module)  # remembered for these tensors, but not past a write to them:
    module[1].weight.data[3, 5] += 1.0  # `.data` writes leave `_version` alone (peft's merge does this)
    assert stamps.version(module[1].weight) == 0
    assert FileMappings().identity(module[1].weight) is None  # its page is a private copy now
    assert FileMappings().identity(module[0].weight) is not None  # the untouched weight still is the file's
    written = weights_digest(module)
    assert written != mapped
    private = _module({k: v.clone() for k, v in module.state_dict().items()})
    assert FileMappings().identity(private[1].weight) is None
    mixed = weights_digest(private)  # all hashed, where `written` named the first Linear by its file
    assert mixed != written and mixed != mapped


def test_a_replaced_or_rewritten_file_gives_another_digest(weights_file: Path) -> None:
    before = weights_digest(_module(load_file(weights_file)))
    weights = load_file(weights_file)
    replacement = weights_file.with_suffix(".new")
    save_file({k: v.clone() for k, v in weights.items()}, replacement)
    old = _module(weights)
    os.replace(replacement, weights_file)  # the same bytes under the same name, another inode
    assert FileMappings().identity(old[0].weight) is None  # the path names another file than the mapped one
    assert weights_digest(_module(load_file(weights_file))) != before  # a new file: converted again, never stale
    assert weights_digest(_module(load_file(weights_file))) == weights_digest(_module(load_file(weights_file)))


def test_from_pretrained_weights_are_named_by_their_files(tmp_path: Path) -> None:
    """The path users take: diffusers' `from_pretrained` of a safetensors folder maps the file."""
    unet = tiny_unet(presets.get("sdxl-turbo").family)
    unet.save_pretrained(tmp_path / "unet")
    loaded = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    files = FileMappings()
    named = [files.identity(p) for p in loaded.parameters()]
    assert sum(i is not None for i in named) >= 0.9 * len(named)
    copy = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    assert weights_digest(loaded) == weights_digest(copy)
    assert weights_digest(loaded) != weights_digest(unet)  # the same values in private memory are hashed


def test_a_mapping_split_in_pieces_still_names_its_weights(weights_file: Path) -> None:
    """An madvise on part of a mapping (OpenVINO's and oneDNN's allocators do this) splits it into several
    entries of /proc/self/maps; a tensor across the split still lies in one file mapping."""
    import ctypes

    module = _module(load_file(weights_file))
    weight = module[0].weight  # 480 KB: many pages
    page = os.sysconf("SC_PAGE_SIZE")
    middle = (weight.data_ptr() + weight.numel() * 2) // page * page
    libc = ctypes.CDLL(None, use_errno=True)
    madv_dontdump = 16
    assert libc.madvise(ctypes.c_void_p(middle), ctypes.c_size_t(page), madv_dontdump) == 0
    pieces = [line for line in Path("/proc/self/maps").read_text().splitlines() if line.endswith(str(weights_file))]
    assert len(pieces) >= 3  # before, the advised page, after
    assert FileMappings().identity(weight) is not None
    assert FileMappings().unwritten([weight, module[1].weight]) == [True, True]
