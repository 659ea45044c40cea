"""`fastdiff batch --ray` on a local 2-CPU Ray cluster: the images of a local run, and an actor killed mid-run."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastdiff import FastDiffWarning
from fastdiff.serving.bulk.ray_runner import ACTOR_PREFIX

from .test_bulk import assert_complete, pixels, run, write_txt

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "fastdiff[ray]")')


COUNT = 24


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray instance with 2 CPUs for this module (starting one takes seconds); `--ray` runs join it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory, hub_cache: Path, ray_cluster: None) -> tuple[Path, int]:
    """One `--ray --workers 2` run (2 actors) during which one actor is killed; (its folder, lines at the kill).

    Both tests read this one run: an actor start costs a model load, the slowest part of these tests."""
    tmp = tmp_path_factory.mktemp("ray")
    prompts = write_txt(tmp / "p.txt", [f"a windmill, number {i}" for i in range(COUNT)])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*was trained at", category=FastDiffWarning)
        assert run(prompts, tmp / "local", hub_cache) == 0
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(run, prompts, tmp / "ray", hub_cache, "--ray", "--workers", "2")
            written = _kill_an_actor_once_images_appear(tmp / "ray" / "manifest.jsonl")
            assert done.result(timeout=240) == 0
    return tmp, written


def test_an_actor_killed_mid_run_loses_nothing(killed_run: tuple[Path, int]) -> None:
    tmp, written = killed_run
    assert 1 <= written < COUNT
    assert_complete(tmp / "ray", COUNT)


def test_ray_makes_the_images_of_a_local_run(killed_run: tuple[Path, int]) -> None:
    tmp, _ = killed_run
    for entry in assert_complete(tmp / "ray", COUNT):
        local = pixels(tmp / "local" / entry["file"])
        assert np.abs(pixels(tmp / "ray" / entry["file"]) - local).max() <= 1


def _kill_an_actor_once_images_appear(manifest: Path) -> int:
    """Wait for the first manifest line, then kill one batch actor (Ray restarts it and retries its chunk)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = manifest.read_bytes().count(b"\n") if manifest.exists() else 0
        if lines:
            name = next(n for n in ray.util.list_named_actors() if n.startswith(ACTOR_PREFIX))
            actor: Any = ray.get_actor(name)
            ray.kill(actor, no_restart=False)
            return lines
        time.sleep(0.002)
    raise AssertionError("the Ray batch never wrote an image")


def test_ray_runs_a_flow_transformer_family(tmp_path: Path, hub_cache: Path, ray_cluster: None) -> None:
    """SANA-Sprint (a flow-matching transformer with its own timesteps and resolution bins) goes through the same
    Ray actors as the UNets: the images of a local run. One family: an actor's start is most of the test's time."""
    prompts = write_txt(tmp_path / "p.txt", [f"a lighthouse, number {i}" for i in range(3)])
    preset = "sana-sprint-0.6b"
    assert run(prompts, tmp_path / "local", hub_cache, preset=preset) == 0
    assert run(prompts, tmp_path / "ray", hub_cache, "--ray", "--workers", "1", preset=preset) == 0
    for entry in assert_complete(tmp_path / "ray", 3):
        local = pixels(tmp_path / "local" / entry["file"])
        assert np.abs(pixels(tmp_path / "ray" / entry["file"]) - local).max() <= 1
