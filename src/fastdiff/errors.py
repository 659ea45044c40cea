"""The two ways fastdiff talks back: an error that names the fix, a warning that names the risk."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["FastDiffError", "FastDiffWarning", "did_you_mean"]


class FastDiffError(ValueError):
    """Raised for input fastdiff refuses; the message always says what to do instead."""


class FastDiffWarning(UserWarning):
    """Emitted when input is valid but likely not what the user meant (ignored negative prompt, odd size…)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a "; did you mean 'x'?" suffix for the closest choice, or a list of choices when none is close."""
    options = sorted(choices)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    return "; choose one of: " + ", ".join(options)
