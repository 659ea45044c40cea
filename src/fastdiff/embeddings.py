"""An LRU cache of prompt embeddings: re-running a prompt (a live session, a seed sweep) skips the text encoders."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch

from .adapters import Embeddings, ModelAdapter
from .adapters.base import clip_truncation

__all__ = ["EmbeddingCache", "PromptEncoder"]

Key = tuple[str, str | None, bool]


class EmbeddingCache:
    """Least-recently-used cache from (prompt, negative prompt, guidance on) to embeddings, with hit counters.

    Its entries are of one weights version (`weights.WeightsIdentity.version`): `weights_changed(version)`, which
    the generator calls after every weight change, forgets them, and an entry computed from older weights is not
    stored.
    """

    def __init__(self, maxsize: int = 32) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be ≥ 0")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self.weights_version = 0
        self._entries: OrderedDict[Key, Embeddings] = OrderedDict()

    def weights_changed(self, version: int) -> None:
        """The text encoders' weights are now those of `version`: forget every entry."""
        self.weights_version = version
        self.clear()

    def get(self, key: Key, compute: Callable[[], Embeddings]) -> Embeddings:
        """The cached embeddings of `key`, computing (and storing) them on a miss."""
        version = self.weights_version
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        value = compute()
        if self.maxsize and version == self.weights_version:
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

    def __init__(
        self,
        pipe: Any,
        adapter: ModelAdapter,
        cache: EmbeddingCache,
        *,
        max_sequence_length: int | None = None,
        check_prompt: Callable[[Any, str, int | None], None] = clip_truncation,
    ) -> None:
        self.pipe, self.adapter, self.cache = pipe, adapter, cache
        self.max_sequence_length = max_sequence_length  # the preset's T5 prompt length (None: CLIP only)
        self.check_prompt = check_prompt  # the family's `warn_if_truncated`
        self._tokenizer_lock = threading.Lock()

    def warn_if_truncated(self, prompt: str, negative_prompt: str | None, guidance: bool) -> None:
        """On a cache miss only (no per-call tokenizing): warn when the text encoders will cut the prompt (or, on a
        shipped toy model, when it names words the model never saw)."""
        if (prompt, negative_prompt if guidance else None, guidance) not in self.cache:
            with self._tokenizer_lock:
                self.check_prompt(self.pipe, prompt, self.max_sequence_length)

    def __call__(self, prompt: str, negative_prompt: str | None, guidance: bool) -> Embeddings:
        """The embeddings of one image's prompt, cached."""

        def compute() -> Embeddings:
            with torch.no_grad(), self._tokenizer_lock:
                length = {} if self.max_sequence_length is None else {"max_sequence_length": self.max_sequence_length}
                return self.adapter.encode(self.pipe, prompt, negative_prompt, guidance=guidance, **length)

        return self.cache.get((prompt, negative_prompt if guidance else None, guidance), compute)
