"""Serving a generator, which itself makes one pipeline call at a time: `coalescing` (concurrent calls batched,
`max_batch`), `mapping` (`gen.map`), `live` (`LiveSession`) and `bulk` (`fastdiff batch`). None imports torch."""

from .coalescing import BatchStats, Coalescer
from .live import UNSET, Frame, LiveSession, LiveState, LiveStats

__all__ = ["UNSET", "BatchStats", "Coalescer", "Frame", "LiveSession", "LiveState", "LiveStats"]
