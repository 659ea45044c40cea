"""One generator, many threads: each call gets the images it would get alone; where they coalesce (`max_batch` > 1,
`fastdiff.serving.coalesced.CoalescingGenerator`) concurrent calls share pipeline calls, elsewhere they take turns."""

from __future__ import annotations

import importlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff import FastDiffError, FastDiffWarning, FewStepGenerator
from fastdiff.serving.coalesced import CoalescingGenerator, batching

SIZE = {"height": 64, "width": 64}


@pytest.fixture
def gen(load: Any, small_sizes: None) -> FewStepGenerator:
    """A generator of its own (own queue and counters) over the session's tiny sdxl-turbo modules."""
    return FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline, max_batch=4)


def _pixels(result: Any, i: int = 0) -> np.ndarray:
    return np.asarray(result.images[i], np.int16)


def _solo(gen: FewStepGenerator, prompt: str, **kwargs: Any) -> np.ndarray:
    return _pixels(gen(prompt, **SIZE, **kwargs))


@contextmanager
def _unet_batches(gen: FewStepGenerator, *, hold_until: Callable[[], bool] | None = None) -> Iterator[list[int]]:
    """The UNet batch of every call; with `hold_until`, the first UNet call waits until it is true (the model is
    busy meanwhile, so that calls queue up behind it)."""
    sizes: list[int] = []

    def hook(module: Any, args: Any) -> None:
        if not sizes and hold_until is not None:
            deadline = time.monotonic() + 20
            while not hold_until() and time.monotonic() < deadline:
                time.sleep(0.002)
        sizes.append(int(args[0].shape[0]))

    handle = gen.pipeline.unet.register_forward_pre_hook(hook)
    try:
        yield sizes
    finally:
        handle.remove()


def _behind_a_busy_model(gen: FewStepGenerator, calls: list[dict[str, Any]]) -> tuple[list[Any], list[int]]:
    """Start a first call, queue `calls` behind it from threads of their own; their outcomes and the UNet batches."""
    queued = lambda: gen.stats.calls >= 1 + len(calls)  # noqa: E731
    with _unet_batches(gen, hold_until=queued) as sizes, ThreadPoolExecutor(len(calls) + 1) as pool:
        first = pool.submit(gen, "the first prompt", seed=0, **SIZE)
        while gen.stats.calls < 1:
            time.sleep(0.001)
        futures = [pool.submit(gen, call.pop("prompt"), **SIZE, **call) for call in calls]
        first.result()
        outcomes = [f.exception() or f.result() for f in futures]
    return outcomes, sizes


@pytest.mark.parametrize(
    ("preset", "max_batch", "calls"),
    [
        ("sdxl-turbo", 4, 50),
        ("sdxl-turbo", 1, 20),
        ("flux-schnell", 4, 20),
        ("flux-schnell", 1, 20),
        ("sana-sprint-0.6b", 4, 20),  # each call decodes a 1024² bin (its resolution binning): ~40 s on 2 cores
    ],
)
def test_many_threads_get_their_own_images(
    load: Any, small_sizes: None, preset: str, max_batch: int, calls: int
) -> None:
    """8 threads × `calls` calls on one generator, 0 wrong images, for a UNet family and transformer ones."""
    gen = FewStepGenerator.from_pipeline(preset, load(preset).pipeline, max_batch=max_batch)
    prompts = [f"a {c} bird" for c in ("red", "blue", "green", "white")]
    cases = [(p, seed, steps, n) for p in prompts for seed in (0, 1) for steps, n in ((1, 1), (2, 1), (1, 2))]
    expected = {case: gen(case[0], seed=case[1], steps=case[2], num_images=case[3], **SIZE) for case in cases}
    errors: list[BaseException] = []
    wrong: list[tuple[Any, ...]] = []

    def worker(k: int) -> None:
        rng = np.random.default_rng(k)
        for _ in range(calls):
            case = cases[int(rng.integers(len(cases)))]
            try:
                got = gen(case[0], seed=case[1], steps=case[2], num_images=case[3], **SIZE)
            except BaseException as err:  # any exception at all is a failure of thread safety
                errors.append(err)
                continue
            for i in range(case[3]):
                if np.abs(_pixels(got, i) - _pixels(expected[case], i)).max() > 1:
                    wrong.append(case)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wrong == []
    if max_batch > 1:
        stats = gen.stats
        assert stats.calls == len(cases) + 8 * calls and stats.batches < stats.calls  # some calls did share a batch


def test_new_prompts_from_many_threads(gen: FewStepGenerator) -> None:
    """Every call a cache miss: the prompt-length check in each caller's thread and the text encoders in the
    leader's share one tokenizer, whose truncation settings a fast tokenizer keeps between calls."""
    prompts = [f"a small {w} house by the sea, number {i}" for i in range(12) for w in ("red", "blue", "tall", "old")]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: gen(p, seed=1, **SIZE), prompts))
    for prompt, got in zip(prompts[::7], results[::7], strict=True):
        assert np.abs(_pixels(got) - _solo(gen, prompt, seed=1)).max() <= 1


def test_compatible_calls_queued_behind_a_busy_model_run_as_one_batch(gen: FewStepGenerator) -> None:
    calls = [{"prompt": f"a cat number {i}", "seed": 10 + i} for i in range(3)]
    solo = [_solo(gen, c["prompt"], seed=c["seed"]) for c in calls]
    outcomes, sizes = _behind_a_busy_model(gen, [dict(c) for c in calls])
    assert sizes == [1, 3]  # the first call alone, then the three queued ones in one UNet call
    for got, expected in zip(outcomes, solo, strict=True):
        assert np.abs(_pixels(got) - expected).max() <= 1
    stats = gen.stats
    assert stats.batches == 3 + 2 and stats.queue_wait_p95 >= stats.queue_wait_p50 > 0  # 3 solo runs, then 2


def test_incompatible_calls_form_separate_batches(gen: FewStepGenerator) -> None:
    calls = [
        {"prompt": "a", "steps": 1},
        {"prompt": "b", "steps": 2},
        {"prompt": "c", "steps": 1, "num_images": 2},
        {"prompt": "d", "steps": 2},
    ]
    _, sizes = _behind_a_busy_model(gen, calls)
    # The first call alone; then steps=1 (a, and c's two images: one UNet call of 3) and steps=2 (b and d: two
    # UNet calls of 2), in the order their threads happened to queue.
    assert sizes[0] == 1 and sorted(sizes[1:]) == [2, 2, 3] and sizes[1:] in ([3, 2, 2], [2, 2, 3])


def test_a_bad_call_in_a_batch_fails_alone(gen: FewStepGenerator, monkeypatch: pytest.MonkeyPatch) -> None:
    encode = gen.adapter.encode

    def explode_on_bad(pipe: Any, prompt: str, *args: Any, **kwargs: Any) -> Any:
        if prompt == "bad":
            raise FastDiffError("this prompt breaks the text encoder")
        return encode(pipe, prompt, *args, **kwargs)

    monkeypatch.setattr(gen.adapter, "encode", explode_on_bad)
    calls = [{"prompt": "good one", "seed": 1}, {"prompt": "bad"}, {"prompt": "good two", "seed": 2}]
    solo = {c["prompt"]: _solo(gen, c["prompt"], seed=c["seed"]) for c in calls if c["prompt"] != "bad"}
    outcomes, _ = _behind_a_busy_model(gen, [dict(c) for c in calls])
    assert isinstance(outcomes[1], FastDiffError) and "breaks the text encoder" in str(outcomes[1])
    assert np.abs(_pixels(outcomes[0]) - solo["good one"]).max() <= 1
    assert np.abs(_pixels(outcomes[2]) - solo["good two"]).max() <= 1
    with pytest.raises(FastDiffError, match="runs 1-4 steps"):  # refused before it queues: nothing else waits
        gen("a cat", steps=7, **SIZE)


def test_max_batch_one_turns_coalescing_off(load: Any, small_sizes: None, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline, max_batch=1)
    assert type(gen) is FewStepGenerator and gen.max_batch == 1  # no queue: calls take turns on the generator's lock
    entered: list[int] = []  # calls that reached the pipeline call (and its lock)
    generate = gen._generate

    def counted(requests: Any) -> Any:
        entered.append(len(requests))
        return generate(requests)

    monkeypatch.setattr(gen, "_generate", counted)
    with _unet_batches(gen, hold_until=lambda: len(entered) >= 4) as sizes, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(gen, f"p{i}", seed=i, **SIZE) for i in range(4)]
        results = [f.result() for f in futures]
    assert sizes == [1, 1, 1, 1]  # the first call held the model until the three others waited: still one by one
    assert np.abs(_pixels(results[2]) - _solo(gen, "p2", seed=2)).max() <= 1
    with pytest.raises(FastDiffError, match="does not coalesce calls.*max_batch=4"):
        gen.stats  # noqa: B018


def test_coalescing_is_on_by_default_where_it_pays(load: Any, small_sizes: None) -> None:
    """CUDA batches up to 8 images per pipeline call; the CPU does not (1.01x measured on the real SDXL-Turbo)."""
    gen = FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline)
    assert gen.device.type == "cpu" and type(gen) is FewStepGenerator and gen.max_batch == 1
    with pytest.raises(FastDiffError, match="pass max_batch=4 with it"):  # a wait for a batch that never forms
        FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline, max_wait_ms=5)
    assert batching(torch.device("cuda"), max_batch=None, max_wait_ms=0.0) == (8, 0.0)
    assert batching(torch.device("cuda"), max_batch=1, max_wait_ms=0.0) == (1, 0.0)
    coalescing = FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline, max_batch=4)
    assert isinstance(coalescing, CoalescingGenerator) and coalescing.max_batch == 4


def test_max_wait_lets_a_lone_call_wait_for_company(load: Any, small_sizes: None) -> None:
    gen = FewStepGenerator.from_pipeline("sdxl-turbo", load("sdxl-turbo").pipeline, max_batch=2, max_wait_ms=2000)
    with _unet_batches(gen) as sizes, ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        first = pool.submit(gen, "one", seed=0, **SIZE)  # the model is idle: without max_wait_ms it runs at once
        time.sleep(0.2)
        second = pool.submit(gen, "two", seed=1, **SIZE)
        first.result(), second.result()
        waited = time.perf_counter() - started
    assert sizes == [2] and waited < 1.5  # the second arrival woke the waiting leader: no full 2 s wait


@pytest.mark.parametrize(("max_batch", "max_wait_ms"), [(0, 0), (2.5, 0), (2, -1), (True, 0)])
def test_bad_batching_settings(max_batch: Any, max_wait_ms: Any, load: Any) -> None:
    with pytest.raises(FastDiffError, match="max_batch must be|max_wait_ms must be"):
        FewStepGenerator.from_pipeline(
            "sdxl-turbo", load("sdxl-turbo").pipeline, max_batch=max_batch, max_wait_ms=max_wait_ms
        )


def test_map_yields_in_order_with_counted_seeds(gen: FewStepGenerator) -> None:
    prompts = [f"a boat, picture {i}" for i in range(5)]
    with _unet_batches(gen) as sizes:
        results = list(gen.map(prompts, batch_size=2, progress=False, seed=100, steps=1, **SIZE))
    assert sizes == [2, 2, 1]
    assert [r.seed for r in results] == [100, 101, 102, 103, 104]
    for prompt, result in zip(prompts, results, strict=True):
        assert np.abs(_pixels(result) - _solo(gen, prompt, seed=result.seed, steps=1)).max() <= 1
    chosen = list(gen.map(iter(prompts[:2]), seeds=[7, 3], progress=False, **SIZE))  # a stream works too
    assert [r.seed for r in chosen] == [7, 3]
    with pytest.raises(FastDiffError, match="unknown arguments"):
        list(gen.map(prompts, progress=False, num_inference_steps=2))
    with pytest.raises(FastDiffError, match="fewer seeds than prompts"):
        list(gen.map(prompts, seeds=[1], progress=False, **SIZE))


def test_live_session_works_beside_other_callers(gen: FewStepGenerator) -> None:
    from fastdiff.serving import LiveSession

    stop = threading.Event()
    others: list[Any] = []

    def other_caller() -> None:
        while not stop.is_set():
            others.append(gen("someone else's prompt", seed=5, **SIZE))

    thread = threading.Thread(target=other_caller)
    thread.start()
    try:
        with LiveSession(gen, seed=3, **SIZE) as live:
            for text in ("a fox", "a fox in", "a fox in snow"):
                live.update(prompt=text)
            frame = live.wait(timeout=60)
    finally:
        stop.set()
        thread.join()
    assert frame.state.prompt == "a fox in snow" and others
    assert np.abs(np.asarray(frame.image, np.int16) - _solo(gen, "a fox in snow", seed=3)).max() <= 1
    assert np.abs(_pixels(others[-1]) - _solo(gen, "someone else's prompt", seed=5)).max() <= 1


def test_the_old_realtime_module_still_imports_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastdiff.serving import LiveSession

    monkeypatch.delitem(sys.modules, "fastdiff.realtime", raising=False)
    monkeypatch.delattr(fastdiff, "realtime", raising=False)
    with pytest.warns(FastDiffWarning, match="moved to fastdiff.serving"):
        old = importlib.import_module("fastdiff.realtime")
    assert old.LiveSession is LiveSession
