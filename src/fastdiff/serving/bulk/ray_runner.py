"""Batch runs on a Ray cluster: one `Worker` actor per GPU, or on CPU-only clusters one per `--workers` share of
a node's cores, fed through `ray.util.ActorPool`. The actors return PNG bytes and the driver writes them, as in a
local run. A worker that dies is Ray's to bring back (`max_restarts`, `max_task_retries`)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ...errors import FastDiffError
from .prompts import Job
from .worker import LoadSpec, Made, Worker

__all__ = ["ACTOR_PREFIX", "RETRIES", "run_on_ray"]

RETRIES = 3
ACTOR_PREFIX = "fastdiff-batch"  # actors are named, so `ray list actors` shows whose they are


def _start_actors(ray: Any, spec: LoadSpec, *, workers: int, chunks: int) -> list[Any]:
    """A GPU per actor, else `node cores // workers` CPUs (and as many torch threads) per actor."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    gpus = int(sum(node.get("GPU", 0) for node in nodes))
    cores = [int(node.get("CPU", 0)) for node in nodes if node.get("CPU", 0) >= 1]
    if gpus and spec.options.get("device") != "cpu":
        count, resources = gpus, {"num_gpus": 1, "num_cpus": 1}
    elif cores:
        per_actor = max(1, min(cores) // workers)
        count, resources = sum(n // per_actor for n in cores), {"num_cpus": per_actor}
        spec = replace(spec, threads=spec.threads or per_actor)
    else:
        raise FastDiffError("the Ray cluster has no CPU or GPU to run on; check `ray status`")
    actor_class = ray.remote(Worker)
    return [
        actor_class.options(
            **resources, max_restarts=RETRIES, max_task_retries=RETRIES, name=f"{ACTOR_PREFIX}-{os.getpid()}-{i}"
        ).remote(spec)
        for i in range(min(count, chunks))
    ]


def run_on_ray(spec: LoadSpec, chunks: list[list[Job]], *, address: str | None, workers: int) -> Iterator[Made]:
    """Make `chunks` on Ray: a new local cluster when `address` is None (or RAY_ADDRESS's when set), else the
    cluster at `address` ("auto": the one started on this machine by `ray start`). A process that already joined a
    cluster (`ray.init()` beforehand) keeps it."""
    try:
        ray = importlib.import_module("ray")
    except ImportError:
        raise FastDiffError('--ray needs Ray: pip install "fastdiff[ray]" (or run without --ray)') from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address)
        except ConnectionError as err:
            raise FastDiffError(
                f"no Ray cluster to join at --ray {address or ''} ({err}); start one with `ray start --head`, "
                "or pass --ray alone for a local one"
            ) from None
    actors: list[Any] = []
    try:
        actors = _start_actors(ray, spec, workers=workers, chunks=len(chunks))
        pool = importlib.import_module("ray.util").ActorPool(actors)
        yield from pool.map_unordered(lambda actor, chunk: actor.make.remote(chunk), chunks)
    except ray.exceptions.RayError as err:
        raise FastDiffError(
            f"a Ray worker failed past its {RETRIES} restarts ({type(err).__name__}: {str(err)[:300]}); re-run the "
            "same command to resume (what is written is kept)"
        ) from None
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
