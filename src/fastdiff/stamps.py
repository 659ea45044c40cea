"""Stamps of tensors: has this weight changed since something was derived from it (packed, cached, encoded)?
And digests of a module's weights: which weights are these, in any process (the OpenVINO disk cache's key)?"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TensorStamp", "stamps_match", "version", "weights_digest"]

_lock = threading.Lock()
_digests: dict[tuple[Any, ...], tuple[list[weakref.ref[torch.Tensor]], str]] = {}


def version(t: Tensor) -> int:
    """The in-place write counter of `t`; inference-mode tensors have none (and diffusers never writes to a
    projection's output or a weight during inference)."""
    return 0 if t.is_inference() else t._version


class TensorStamp:
    """What a tensor was when something was derived from it: the same tensor, unwritten since, has the same stamp.

    It holds the tensor (a detached alias: same storage, same write counter), so its memory cannot be freed and
    reused by a new weight at the same address: a new tensor (`.to()`, `param.data = ...`) never passes for the
    old one, and an in-place write (`load_state_dict`, `fuse_lora`) bumps the counter.
    """

    __slots__ = ("_tensor", "_version")

    def __init__(self, t: Tensor | None) -> None:
        self._tensor = None if t is None else t.detach()
        self._version = None if t is None else version(t)

    @property
    def tensor(self) -> Tensor | None:
        """The stamped tensor (an alias of it)."""
        return self._tensor

    def matches(self, t: Tensor | None) -> bool:
        """True when `t` is the stamped tensor, not written in place since."""
        if t is None or self._tensor is None:
            return t is None and self._tensor is None
        same = self._tensor.data_ptr() == t.data_ptr() and self._tensor.shape == t.shape
        return same and self._tensor.dtype == t.dtype and self._version == version(t)


def stamps_match(stamps: list[TensorStamp], tensors: Iterable[Tensor]) -> bool:
    """True when every tensor still matches its stamp, in order (and there are as many of each)."""
    tensors = list(tensors)
    return len(stamps) == len(tensors) and all(s.matches(t) for s, t in zip(stamps, tensors, strict=True))


def _tensor_digest(t: torch.Tensor) -> bytes:
    head = f"{tuple(t.shape)}:{t.dtype};".encode()
    return hashlib.sha256(head + t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data).digest()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, shape, dtype, bytes): equal weights give equal digests in
    any process. Remembered for as long as the very same tensors live (weak references: the digest of module
    copies sharing them is not computed again, and a freed tensor's address reused by another never matches)."""
    named = [*module.named_parameters(), *module.named_buffers()]
    ident = (type(module).__qualname__, *((n, t.data_ptr(), t.shape, t.dtype, version(t)) for n, t in named))
    with _lock:
        known = _digests.get(ident)
    if known is not None and all(ref() is not None for ref in known[0]):
        return known[1]
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:  # hashlib releases the GIL
        parts = list(pool.map(_tensor_digest, [t for _, t in named]))
    h = hashlib.sha256(type(module).__qualname__.encode())
    for (name, _), part in zip(named, parts, strict=True):
        h.update(name.encode() + part)
    digest = h.hexdigest()
    with _lock:
        for key in [k for k, (refs, _) in _digests.items() if any(ref() is None for ref in refs)]:
            del _digests[key]
        _digests[ident] = ([weakref.ref(t) for _, t in named], digest)
    return digest
