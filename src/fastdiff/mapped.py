"""Tensors whose bytes lie in a memory-mapped file (what diffusers' `from_pretrained` makes of safetensors: the
file's pages, not a copy): which file and offset, and whether any of their pages was written since (Linux's
/proc/self/maps and /proc/self/pagemap; elsewhere no tensor counts as mapped)."""

from __future__ import annotations

import bisect
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["FileMappings", "pages_unwritten", "span"]

# /proc/self/pagemap: one little-endian u64 per page; bit 63 present, 62 swapped, 61 a file page (or shared).
_PRESENT, _SWAPPED, _FILE = (np.uint64(1 << bit) for bit in (63, 62, 61))


def span(t: Tensor) -> tuple[int, int]:
    """The (address, size in bytes) of contiguous tensor `t`'s data."""
    return t.data_ptr(), t.numel() * t.element_size()


class _Mapping(NamedTuple):
    start: int
    end: int
    offset: int  # of `start` in the file
    device: int
    inode: int
    path: str
    private: bool  # MAP_PRIVATE: a write makes the page a private copy (a shared mapping's writes reach the file)


class FileMappings:
    """The files mapped into this process when it was made (Linux's /proc/self/maps; none elsewhere)."""

    def __init__(self) -> None:
        try:
            lines = Path("/proc/self/maps").read_text().splitlines()
        except OSError:
            lines = []
        found = []
        for line in lines:  # start-end perms offset major:minor inode path
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/") and int(fields[4]) != 0:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                major, minor = (int(x, 16) for x in fields[3].split(":"))
                device = os.makedev(major, minor)
                private = fields[1].endswith("p")
                found.append(_Mapping(start, end, int(fields[2], 16), device, int(fields[4]), fields[5], private))
        merged: list[_Mapping] = []
        for m in sorted(found):  # one file's mapping split in pieces (an madvise on part of it) is one span again
            last = merged[-1] if merged else None
            if last and (m.start, m.offset, m[3:]) == (last.end, last.offset + last.end - last.start, last[3:]):
                merged[-1] = last._replace(end=m.end)
            else:
                merged.append(m)
        self._mappings = merged
        self._starts = [m.start for m in merged]

    def _index(self, t: Tensor) -> int | None:
        """Which private mapping holds all of contiguous CPU tensor `t`, if one does."""
        if t.device.type != "cpu" or t.layout != torch.strided or not t.is_contiguous() or t.numel() == 0:
            return None
        address, size = span(t)
        at = bisect.bisect_right(self._starts, address) - 1
        if at < 0 or address + size > self._mappings[at].end or not self._mappings[at].private:
            return None
        return at

    def unwritten(self, tensors: list[Tensor]) -> list[bool]:
        """For each tensor: True when it lies in a private file mapping and none of its pages was written since
        (`pages_unwritten`)."""
        inside = [i for i, t in enumerate(tensors) if self._index(t) is not None]
        out = [False] * len(tensors)
        for i, clean in zip(inside, pages_unwritten([span(tensors[i]) for i in inside]), strict=True):
            out[i] = clean
        return out

    def identity(self, t: Tensor, *, unwritten: bool | None = None) -> str | None:
        """Where `t`'s bytes lie in a file that is still the one mapped (device, inode, size, modification time,
        offset), for a contiguous CPU tensor inside one mapping, none of whose pages was written (what
        `from_pretrained` makes of a safetensors file: its pages, not a copy); else None. It names the bytes as
        surely as hashing them would, without reading them. Written pages are seen in /proc/self/pagemap, not
        by the write counter, which `weight.data += delta` (peft's merge) leaves alone. `unwritten`: what
        `unwritten` said of `t` already (its pages are then not read again)."""
        at = self._index(t)
        if at is None or not (self.unwritten([t])[0] if unwritten is None else unwritten):
            return None
        mapped, (address, size) = self._mappings[at], span(t)
        try:
            stat = os.stat(mapped.path)
        except OSError:  # deleted or renamed since it was mapped
            return None
        if (stat.st_dev, stat.st_ino) != (mapped.device, mapped.inode):  # another file at that path now
            return None
        offset = mapped.offset + address - mapped.start
        return f"file:{stat.st_dev}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{offset}:{size}"


def pages_unwritten(spans: list[tuple[int, int]]) -> list[bool]:
    """For each (address, size) span of a private file mapping: True when none of its pages was written (each is
    still the file's, or was never read in; a written page is a private copy, present or swapped), read from the
    page table without touching the pages, so weights that only OpenVINO's copy reads stay on disk. False where
    the table cannot be read. Nearby spans share one read: ~15 ms for the 2.5 million pages of SDXL's UNet."""
    out = [False] * len(spans)
    if not spans:
        return out
    page = os.sysconf("SC_PAGE_SIZE")
    groups: list[list[tuple[int, int, int]]] = []  # runs of (first page, last page, span index)
    for first, last, i in sorted((a // page, (a + n - 1) // page, i) for i, (a, n) in enumerate(spans)):
        if groups and first - groups[-1][-1][1] < (1 << 17):  # less than 1 MiB of table apart: one read
            groups[-1].append((first, max(last, groups[-1][-1][1]), i))
        else:
            groups.append([(first, last, i)])
    try:  # this process's own table, opened now (an inherited descriptor would read its parent's)
        table = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return out
    try:
        for group in groups:
            low, high = group[0][0], group[-1][1]
            entries = np.frombuffer(os.pread(table, (high - low + 1) * 8, low * 8), dtype=np.uint64)
            if len(entries) != high - low + 1:
                continue
            written = ((entries & (_PRESENT | _FILE)) == _PRESENT) | ((entries & _SWAPPED) != 0)
            for first, last, i in group:
                out[i] = not written[first - low : last + 1 - low].any()
    finally:
        os.close(table)
    return out
