"""`gen.map`: many prompts in one process, in order, in batches, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from itertools import count, islice
from typing import Any, TypeVar

from .conventions import diffusers_hint
from .errors import FastDiffError

__all__ = ["map_requests", "run_in_order", "sized"]

R = TypeVar("R")
T = TypeVar("T")
# The arguments of a call that `map` passes on, the same for every prompt (seed aside, which counts up).
CALL_ARGUMENTS = ("steps", "guidance_scale", "negative_prompt", "height", "width", "image", "strength")


def sized(items: Iterable[Any]) -> int | None:
    """`len(items)` when it has one (a list), None for a stream."""
    return len(items) if isinstance(items, Sized) else None


def _seed_stream(seeds: Iterable[int] | None, base: int | None) -> Iterator[int | None]:
    """seeds[i]; else base, base + 1, …; else None forever (a random seed each)."""
    if seeds is not None:
        return iter(seeds)
    return count(base) if base is not None else iter(lambda: None, 0)


def map_requests(
    make: Callable[..., R],
    prompts: Iterable[str],
    *,
    seeds: Iterable[int] | None,
    batch_size: int,
    call_kwargs: dict[str, Any],
) -> Iterator[list[R]]:
    """Checked requests, `batch_size` at a time, lazily (a stream of prompts is never read ahead further)."""
    kwargs = dict(call_kwargs)
    base = kwargs.pop("seed", None)
    unknown = sorted(set(kwargs) - set(CALL_ARGUMENTS))
    if unknown:
        hints = [hint for name in unknown if (hint := diffusers_hint(name))]
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise FastDiffError(f"map() got unknown arguments {unknown}{hint}; it takes those of a call: {CALL_ARGUMENTS}")
    defaults = {name: kwargs.get(name) for name in CALL_ARGUMENTS} | {"num_images": 1}
    stream, items = _seed_stream(seeds, base), iter(prompts)
    while chunk := list(islice(items, batch_size)):
        batch = []
        for prompt in chunk:
            seed = next(stream, StopIteration)
            if seed is StopIteration:
                raise FastDiffError("map() got fewer seeds than prompts; pass one seed per prompt")
            batch.append(make(prompt, seed=seed, **defaults))
        yield batch


def run_in_order(
    run: Callable[[Sequence[R]], list[tuple[T | None, BaseException | None]]],
    batches: Iterator[list[R]],
    *,
    total: int | None,
    desc: str,
    progress: bool,
) -> Iterator[T]:
    """Each batch's results in order; the first failure is raised where it stands (after the results before it)."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped, unused-ignore]

    with tqdm(total=total, disable=not progress, desc=desc, unit="image") as bar:
        for batch in batches:
            for result, error in run(batch):
                if error is not None:
                    raise error
                bar.update(1)
                yield result  # type: ignore[misc]
