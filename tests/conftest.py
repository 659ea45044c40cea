"""Shared fixtures: a Hugging Face cache holding tiny random-weight models under the real repo ids and file names."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fastdiff import FastDiffWarning, FewStepGenerator, presets
from fastdiff.testing import make_hf_cache

# Tiny models spend more time synchronizing two threads than computing; one thread is faster and steadier.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def fastdiff_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """fastdiff's own disk cache (the OpenVINO engine's converted models, which `optimize="default"` makes on
    the CPU) in a folder of this test session's, never the user's ~/.cache; tests may point it elsewhere."""
    root = tmp_path_factory.mktemp("fastdiff-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTDIFF_CACHE", str(root))
        # Tests about other things run the torch engine: converting every tiny model for OpenVINO took the suite
        # from 7 to 9.5 minutes. The engine's own tests (`cpu_engine_default`) restore the real default.
        patch.setenv("FASTDIFF_CPU_ENGINE", "torch")
        yield root


@pytest.fixture
def cpu_engine_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`optimize="default"` resolves its CPU engine as it does for users (OpenVINO where installed)."""
    monkeypatch.delenv("FASTDIFF_CPU_ENGINE", raising=False)


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh OpenVINO disk cache (FASTDIFF_CACHE) for one test module's tests."""
    root = tmp_path_factory.mktemp("fastdiff-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTDIFF_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every preset's repo and checkpoint, laid out as a hub cache snapshot (built once per test session)."""
    cache = tmp_path_factory.mktemp("hf-cache")
    make_hf_cache(cache, presets.names())
    return cache


@pytest.fixture
def fresh_accelerator_state() -> Iterator[None]:
    """accelerate keeps one process-wide state (mixed precision, device): a trainer test leaves none behind."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any attempt to open a network connection (the weights are cached: none is needed)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network call attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


_GENERATORS: dict[tuple[str, Path], FewStepGenerator] = {}


@pytest.fixture
def load(hub_cache: Path) -> Any:
    """`load(name)`: a CPU float32 generator for a preset, from the test cache, loaded once per session."""

    def _load(name: str) -> FewStepGenerator:
        key = (name, hub_cache)
        if key not in _GENERATORS:
            _GENERATORS[key] = FewStepGenerator.from_preset(
                name,
                device="cpu",
                cache_dir=hub_cache,
                local_files_only=True,
                allow_pickle=name.startswith("dmd2"),
                optimize="none",
            )
        return _GENERATORS[key]

    return _load


@pytest.fixture
def small_sizes() -> Iterator[None]:
    """Tiny models at 1024² are slow on 2 cores; tests that run below native size silence only that warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
        yield
