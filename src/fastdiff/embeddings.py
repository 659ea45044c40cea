"""An LRU cache of prompt embeddings: re-running a prompt (a live session, a seed sweep) skips the text encoders."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .adapters import Embeddings, ModelAdapter
from .stamps import TensorStamp, stamp_all, stamps_match

__all__ = ["EmbeddingCache", "PromptEncoder"]

Key = tuple[str, str | None, bool]


class EmbeddingCache:
    """Least-recently-used cache from (prompt, negative prompt, guidance on) to embeddings, with hit counters.

    Given the text encoders, it forgets every entry once their weights change (a fused LoRA, a loaded state dict,
    a new tensor): checked on every `get` by comparing stamps of the weights (a few hundred pointer and counter
    comparisons, no tensor read).
    """

    def __init__(self, maxsize: int = 32, encoders: Sequence[nn.Module] = ()) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be ≥ 0")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, Embeddings] = OrderedDict()
        self._encoders = list(encoders)
        self._stamps = self._stamp()

    @classmethod
    def for_pipeline(cls, pipe: Any, maxsize: int = 32) -> EmbeddingCache:
        """A cache over the pipeline's text encoders (one for SD, two for SDXL)."""
        encoders = [m for m in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None]
        return cls(maxsize, encoders)

    def _weights(self) -> list[nn.Parameter]:
        return [p for encoder in self._encoders for p in encoder.parameters()]

    def _stamp(self) -> list[TensorStamp]:
        return stamp_all(self._weights())

    def get(self, key: Key, compute: Callable[[], Embeddings]) -> Embeddings:
        """The cached embeddings of `key`, computing (and storing) them on a miss."""
        if self._encoders and not stamps_match(self._stamps, self._weights()):
            self.clear()
            self._stamps = self._stamp()
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        value = compute()
        if self.maxsize:
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class PromptEncoder:
    """The encode stage: the family adapter's text encoders behind the cache, and the prompt-length warning.

    Call it with the model lock held. `warn_if_truncated` runs in the caller's own thread (its batch may run on
    another), and shares a lock with the encoders: a fast tokenizer keeps its truncation and padding settings
    between calls, so counting one prompt's tokens must not interleave with encoding another.
    """

    def __init__(self, pipe: Any, adapter: ModelAdapter, cache: EmbeddingCache) -> None:
        self.pipe, self.adapter, self.cache = pipe, adapter, cache
        self._tokenizer_lock = threading.Lock()

    def warn_if_truncated(self, prompt: str, negative_prompt: str | None, guidance: bool) -> None:
        """On a cache miss only (no per-call tokenizing): warn when CLIP will cut the prompt."""
        from .validation import warn_truncation

        if (prompt, negative_prompt if guidance else None, guidance) not in self.cache:
            with self._tokenizer_lock:
                warn_truncation(self.pipe.tokenizer, prompt)

    def __call__(self, prompt: str, negative_prompt: str | None, guidance: bool) -> Embeddings:
        """The embeddings of one image's prompt, cached."""

        def compute() -> Embeddings:
            with torch.no_grad(), self._tokenizer_lock:
                return self.adapter.encode(self.pipe, prompt, negative_prompt, guidance=guidance)

        return self.cache.get((prompt, negative_prompt if guidance else None, guidance), compute)
