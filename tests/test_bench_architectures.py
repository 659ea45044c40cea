"""The real architectures (checked by parameter count, built on meta: no memory) and the random-weight builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fastdiff.bench import random_weights
from fastdiff.bench.architectures import ARCHITECTURES, tiny_architecture
from fastdiff.bench.random_weights import (
    NotEnoughMemory,
    _materialize,
    _parameters_on_meta,
    pipeline_from,
    random_components,
)
from fastdiff.configs.tokenizer import byte_level_tokenizer
from fastdiff.presets import SD15_REPO, SD_TURBO_REPO, SDXL_BASE_REPO, SDXL_TURBO_REPO


def _count(module: torch.nn.Module) -> int:
    assert all(p.is_meta for p in module.parameters())
    return sum(p.numel() for p in module.parameters())


# Parameter counts of the published checkpoints (diffusers / transformers layouts).
@pytest.mark.parametrize(
    ("repo", "unet", "encoders"),
    [
        (SD15_REPO, 859_520_964, (123_060_480,)),
        (SDXL_BASE_REPO, 2_567_463_684, (123_060_480, 694_659_840)),
        (SD_TURBO_REPO, 865_910_724, (340_387_840,)),
    ],
)
def test_architectures_have_the_real_parameter_counts(repo: str, unet: int, encoders: tuple[int, ...]) -> None:
    arch = ARCHITECTURES[repo]
    classes = (CLIPTextModel, CLIPTextModelWithProjection)
    with _parameters_on_meta():
        assert _count(UNet2DConditionModel.from_config(arch.unet)) == unet
        assert _count(AutoencoderKL.from_config(arch.vae)) == 83_653_863
        counts = tuple(
            _count(cls(CLIPTextConfig(**cfg))) for cls, cfg in zip(classes, arch.text_encoders, strict=False)
        )
    assert counts == encoders


def test_turbo_and_base_share_modules() -> None:
    """The bench builds one family's modules once and shares them: SDXL-Turbo's and SDXL base's have one shape."""

    def shapes(repo: str) -> dict[str, tuple[int, ...]]:
        with _parameters_on_meta():
            unet = UNet2DConditionModel.from_config(ARCHITECTURES[repo].unet)
        return {name: tuple(p.shape) for name, p in unet.named_parameters()}

    assert shapes(SDXL_TURBO_REPO) == shapes(SDXL_BASE_REPO)
    assert shapes(SD15_REPO) != shapes(SD_TURBO_REPO)
    assert ARCHITECTURES[SDXL_TURBO_REPO].unet["sample_size"] == 64  # 512 px
    assert ARCHITECTURES[SDXL_BASE_REPO].unet["sample_size"] == 128  # 1024 px


def _small_clip() -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408
    )


def test_materialize_fills_every_parameter_and_keeps_buffers() -> None:
    with _parameters_on_meta():
        first, second = CLIPTextModel(_small_clip()), CLIPTextModel(_small_clip())
    _materialize([first], device=torch.device("cpu"), dtype=torch.float32, seed=0)
    _materialize([second], device=torch.device("cpu"), dtype=torch.float32, seed=0)
    params = list(first.parameters())
    assert params and not any(p.is_meta for p in params)
    # The promise: every weight N(0, 0.02²), the std of a GPT-2/CLIP init (the token embedding: 49408 × 32 values).
    weights = torch.cat([p.flatten() for p in params])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.01)
    for p in params:
        if p.numel() >= 1024:  # per layer too: a tensor of 1024 draws has its std within ±10 % at 4 sigma
            assert abs(p.mean().item()) < 0.003 and p.std().item() == pytest.approx(0.02, rel=0.1), p.shape
    assert all(torch.equal(a, b) for a, b in zip(params, second.parameters(), strict=True))  # deterministic in the seed
    heads = [tuple(p.flatten()[:8].tolist()) for p in params if p.numel() >= 8]
    assert len(set(heads)) == len(heads)  # no two tensors share values: each starts at its own place in the pool
    with _parameters_on_meta():
        other = CLIPTextModel(_small_clip())
    _materialize([other], device=torch.device("cpu"), dtype=torch.float32, seed=1)
    assert not torch.equal(next(other.parameters()), params[0])  # another seed, other weights
    position_ids = next(b for name, b in first.named_buffers() if name.endswith("position_ids"))
    assert torch.equal(position_ids, torch.arange(77).unsqueeze(0))


def test_code_made_tokenizer_stays_inside_the_real_vocabulary() -> None:
    ids = byte_level_tokenizer()("ÿ a photo, of ~everything~ ✓", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and max(ids) < 49408


def _small_sdxl() -> Any:
    """SDXL wiring at toy widths, with the real vocabulary size."""
    return tiny_architecture(ARCHITECTURES[SDXL_TURBO_REPO])


def test_random_components_make_a_working_pipeline() -> None:
    arch = _small_sdxl()
    parts = random_components(arch, device=torch.device("cpu"), dtype=torch.float32)
    assert parts["text_encoder"].config.vocab_size == 49408
    pipe = pipeline_from(arch, parts)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    image = pipe("a cat", num_inference_steps=1, guidance_scale=0.0, height=64, width=64).images[0]
    assert image.size == (64, 64)


def _mapped_file(address: int) -> str | None:
    """The file mapped at `address` in this process (/proc/self/maps), if any."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *_, path = line.split(maxsplit=5) if line.count(" ") >= 5 else [*line.split(), ""]
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            return path.strip() or None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
def test_random_weights_in_a_folder_are_written_once_and_memory_mapped(tmp_path: Path) -> None:
    arch, cpu = _small_sdxl(), torch.device("cpu")
    first = random_components(arch, device=cpu, dtype=torch.float32, folder=tmp_path)
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 4 and not list(tmp_path.glob("*.part"))  # UNet, VAE, both text encoders
    written = {f: f.stat().st_mtime_ns for f in files}
    again = random_components(arch, device=cpu, dtype=torch.float32, folder=tmp_path)
    assert {f: f.stat().st_mtime_ns for f in files} == written  # read, not written again
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = first[name].state_dict(), again[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert all(p.device.type == "cpu" and not p.requires_grad for p in again[name].parameters())
    in_memory = random_components(arch, device=cpu, dtype=torch.float32)  # the same weights, not memory-mapped
    assert all(torch.equal(p, q) for p, q in zip(in_memory["vae"].parameters(), again["vae"].parameters(), strict=True))
    weight = again["unet"].conv_in.weight
    assert weight.abs().sum() > 0
    assert _mapped_file(weight.data_ptr()) in {str(f) for f in files}  # the file's pages, not a copy
    pipe = pipeline_from(arch, again)
    pipe.set_progress_bar_config(disable=True)
    assert pipe("a cat", num_inference_steps=1, guidance_scale=0.0, height=64, width=64).images[0].size == (64, 64)


def test_too_large_for_memory_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(random_weights, "available_memory", lambda device: 1000)
    with pytest.raises(NotEnoughMemory, match="GiB free"):
        random_components(_small_sdxl(), device=torch.device("cpu"), dtype=torch.float32)


def test_every_shipped_config_is_package_data() -> None:
    """An installed wheel holds what `fastdiff.configs` reads: pyproject's package-data globs match every file."""
    import glob

    import tomllib

    import fastdiff

    package = Path(fastdiff.__file__).parent
    pyproject = tomllib.loads((package.parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["fastdiff"]
    shipped = {path for pattern in globs for path in glob.glob(pattern, root_dir=package)}
    configs = {str(p.relative_to(package)) for p in (package / "configs").rglob("*") if p.suffix in (".json", ".md")}
    assert len(configs) > 20 and configs <= shipped
