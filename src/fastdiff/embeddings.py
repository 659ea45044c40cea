"""The encode stage: the family adapter's text encoders behind an LRU cache, so that re-running a prompt (a live
session, a seed sweep) skips them, and the warning about what the model will not read of a prompt."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .adapters import Embeddings, ModelAdapter
from .adapters.base import clip_truncation
from .errors import warn
from .presets import SHIPPED_MODELS

__all__ = ["EmbeddingCache"]

Key = tuple[str, str | None, bool]


class EmbeddingCache:
    """Prompt embeddings by (prompt, negative prompt, guidance on), least recently used first out, with hit counters.

    The generator clears it whenever its weights change. Encoding runs under the generator's lock; the tokenizer lock
    keeps `warn_if_unread` (run in the caller's thread) from interleaving with an encode: a fast tokenizer keeps its
    truncation and padding settings between calls.
    """

    def __init__(
        self,
        maxsize: int = 32,
        *,
        max_sequence_length: int | None = None,
        warn_if_truncated: Callable[[Any, str, int | None], None] = clip_truncation,
    ) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be ≥ 0")
        self.maxsize = maxsize
        self.max_sequence_length = max_sequence_length  # the preset's T5 prompt length (None: CLIP only)
        self.warn_if_truncated = warn_if_truncated  # the family's prompt-length check
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, Embeddings] = OrderedDict()
        self._tokenizer_lock = threading.Lock()

    def encode(self, pipe: Any, adapter: ModelAdapter, prompt: str, negative: str | None, guidance: bool) -> Embeddings:
        """The embeddings of one image's prompt: from the cache, else encoded by `adapter` (and stored)."""
        key = (prompt, negative if guidance else None, guidance)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        length = {} if self.max_sequence_length is None else {"max_sequence_length": self.max_sequence_length}
        with torch.no_grad(), self._tokenizer_lock:
            value = adapter.encode(pipe, prompt, negative, guidance=guidance, **length)
        if self.maxsize:
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def warn_if_unread(self, pipe: Any, prompt: str, negative: str | None, guidance: bool) -> None:
        """On a cache miss only (no per-call tokenizing): warn when the text encoders will cut the prompt, or when a
        shipped toy model is given words it never saw (it knows only its `shapes` caption grammar)."""
        if (prompt, negative if guidance else None, guidance) in self._entries:
            return
        folder = Path(getattr(pipe, "name_or_path", None) or ".")
        if folder.parent == SHIPPED_MODELS:
            from .distill.shapes import EXAMPLE_CAPTION, unknown_words

            if unknown := unknown_words(prompt):
                warn(
                    f"{folder.name} is a toy model that knows only the words of its shapes captions "
                    f"('a [small|large] COLOR SHAPE [in the POSITION] on a COLOR background'), not "
                    f"{', '.join(map(repr, unknown))}. Try e.g. {EXAMPLE_CAPTION!r}."
                )
            return
        with self._tokenizer_lock:
            self.warn_if_truncated(pipe, prompt, self.max_sequence_length)

    def clear(self) -> None:
        """Forget every entry (the counters stay)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
