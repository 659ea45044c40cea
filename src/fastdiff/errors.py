"""The two ways fastdiff talks back: an error that names the fix, a warning that names the risk."""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

__all__ = ["FastDiffError", "FastDiffWarning", "did_you_mean", "routed_warnings", "warn"]


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


def _package_dir(name: str) -> str | None:
    spec = find_spec(name)
    origin = spec.origin if spec is not None else None
    return str(Path(origin).parent) if origin else None


# Frames in these packages are the machinery between a user's line and the warning (fastdiff's own calls, torch's
# `Module.__call__`, diffusers' pipeline loop, transformers' encoders); the first frame outside them is the user's.
_INTERNAL = tuple(d + os.sep for d in map(_package_dir, ("fastdiff", "torch", "diffusers", "transformers")) if d)


def warn(message: str) -> None:
    """Emit a `FastDiffWarning` attributed to the user's line: the first caller outside fastdiff, torch, diffusers
    and transformers (not `torch/nn/modules/module.py`). The stack level is counted here, once, because
    `warnings.warn(skip_file_prefixes=...)` needs Python 3.12 and fastdiff supports 3.10; without a frame outside
    those packages (a worker thread's), the outermost frame is named."""
    frame, level = sys._getframe(1), 2  # level 2: warn's caller
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, FastDiffWarning, stacklevel=level)


@contextmanager
def routed_warnings(to: Callable[[str], None]) -> Iterator[None]:
    """Give every `FastDiffWarning` (each time, not once) to `to(message)` instead of stderr; other warnings show
    as usual. It sets the process-wide warning state, so it belongs around an application's life (the CLI, the
    demo's server, a bulk worker's jobs), never inside a library call."""
    with warnings.catch_warnings():
        shown = warnings.showwarning
        warnings.simplefilter("always", FastDiffWarning)

        def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
            if issubclass(category, FastDiffWarning):
                to(str(message))
            else:
                shown(message, category, *args, **kwargs)  # type: ignore[arg-type]

        warnings.showwarning = show
        yield
