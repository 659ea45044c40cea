"""Stamps of tensors: has this weight changed since something was derived from it (packed, cached, encoded)?"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

__all__ = ["TensorStamp", "stamps_match", "version"]


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
