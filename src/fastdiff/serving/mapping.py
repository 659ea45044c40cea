"""`gen.map`. Its batches go straight to the generator's pipeline call (under its lock, between other threads' calls),
not through a coalescer's queue: they are full already."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Future
from itertools import count, islice, repeat
from typing import Any, TypeVar

from ..conventions import diffusers_hint
from ..errors import FastDiffError
from .coalescing import check_batching, run_each

__all__ = ["map_prompts"]

R = TypeVar("R")
T = TypeVar("T")
# The arguments of a call that `map` passes on, the same for every prompt (seed aside, which counts up).
CALL_ARGUMENTS = ("steps", "guidance_scale", "negative_prompt", "height", "width", "image", "strength")


def map_prompts(
    make: Callable[..., R],
    run: Callable[[Sequence[R]], Sequence[T]],
    prompts: Iterable[str],
    *,
    seeds: Iterable[int] | None,
    batch_size: int,
    call_kwargs: dict[str, Any],
    desc: str,
    progress: bool,
) -> Iterator[T]:
    """One result per prompt, in order: `make(prompt, seed=..., **call_kwargs)` checks each prompt's request (lazily:
    a stream of prompts is never read ahead further than a batch), `run(requests)` makes `batch_size` of them at once
    (one result each). Prompt *i* gets `seeds[i]`, else `seed + i` when `seed=` is among `call_kwargs`, else a random
    seed. The first failure is raised where it stands, after the results before it."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]

    size = check_batching(batch_size, 0)[0]
    kwargs = dict(call_kwargs)
    base = kwargs.pop("seed", None)
    unknown = sorted(set(kwargs) - set(CALL_ARGUMENTS))
    if unknown:
        hints = [hint for name in unknown if (hint := diffusers_hint(name))]
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise FastDiffError(f"map() got unknown arguments {unknown}{hint}; it takes those of a call: {CALL_ARGUMENTS}")
    defaults = {name: kwargs.get(name) for name in CALL_ARGUMENTS} | {"num_images": 1}
    seed_stream = iter(seeds) if seeds is not None else repeat(None) if base is None else count(base)
    items, total = iter(prompts), len(prompts) if isinstance(prompts, Sized) else None
    with tqdm(total=total, disable=not progress, desc=desc, unit="image") as bar:
        while chunk := list(islice(items, size)):
            calls: list[tuple[list[R], Future[list[T]]]] = []
            for prompt in chunk:
                if (seed := next(seed_stream, StopIteration)) is StopIteration:
                    raise FastDiffError("map() got fewer seeds than prompts; pass one seed per prompt")
                calls.append(([make(prompt, seed=seed, **defaults)], Future()))
            run_each(run, calls)  # a bad prompt fails alone
            for _, future in calls:
                result = future.result()[0]
                bar.update(1)
                yield result
