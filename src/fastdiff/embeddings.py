"""An LRU cache of prompt embeddings: re-running a prompt (a live session, a seed sweep) skips the text encoders."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .adapters import Embeddings

__all__ = ["EmbeddingCache"]

Key = tuple[str, str | None, bool]


class EmbeddingCache:
    """Least-recently-used cache from (prompt, negative prompt, guidance on) to embeddings, with hit counters."""

    def __init__(self, maxsize: int = 32) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be ≥ 0")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, Embeddings] = OrderedDict()

    def get(self, key: Key, compute: Callable[[], Embeddings]) -> Embeddings:
        """The cached embeddings of `key`, computing (and storing) them on a miss."""
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

    def clear(self) -> None:
        """Forget every entry (needed after the text encoders' weights change)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
