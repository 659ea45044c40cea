"""Serving a generator, which itself makes one pipeline call at a time: `coalescing` (the queue that batches
concurrent calls) and `coalesced` (`CoalescingGenerator`, a generator whose calls go through it: `max_batch`),
`mapping` (`gen.map`), `live` (`LiveSession`) and `bulk` (`fastdiff batch`). Only `coalesced` imports torch."""

from .coalescing import BatchStats, Coalescer
from .live import UNSET, Frame, LiveSession, LiveState, LiveStats

__all__ = ["UNSET", "BatchStats", "Coalescer", "Frame", "LiveSession", "LiveState", "LiveStats"]
