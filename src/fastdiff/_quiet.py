"""The one home of library noise a fastdiff user can do nothing about, silenced narrowly, by its exact text.

Three mechanisms, each where it fits:
- transformers ≥ 5 *logs*, at import, one warning per image processor class that would like torchvision
  (diffusers imports CLIP's and SigLIP's); fastdiff never uses an image processor. A logging filter on that one
  logger drops only those records, installed when fastdiff is imported (it must precede transformers' import).
- Library *warnings* raised inside one of fastdiff's own steps (tracing a module for OpenVINO, a hub load, an
  ONNX export, …) are hidden by `silenced(noise)` around that step only. Nothing changes the process-wide warning
  filters at import: a user's own TracerWarnings, deprecations and pytest's `error` filter are left as they were.
- `quiet_library_logs()`: the command-line tool turns diffusers'/transformers' info logs and progress bars off.

fastdiff's own `FastDiffWarning`s are never silenced here.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["install", "onnx_exporter", "quiet_library_logs", "silenced"]

_IMPORT_LOGGER = "transformers.utils.import_utils"


class _TorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


def install() -> None:
    """Add the filter once (idempotent); done when this module is imported, before transformers is."""
    logger = logging.getLogger(_IMPORT_LOGGER)
    if not any(isinstance(f, _TorchvisionFallback) for f in logger.filters):
        logger.addFilter(_TorchvisionFallback())


def _tracing() -> None:
    # Tracing warns about what a trace cannot see (the graph is specialized to static shapes on purpose: from
    # diffusers', transformers', torch's and fastdiff's own sub-pixel code alike) and about deprecations of the
    # tracer itself and of the transformers attributes it reads.
    from torch.jit import TracerWarning  # type: ignore[attr-defined]

    warnings.filterwarnings("ignore", category=TracerWarning)
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.trace(_method)?` is deprecated", category=DeprecationWarning
    )
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def _hub() -> None:
    # diffusers still passes `local_dir_use_symlinks` to huggingface_hub, which warns on every load.
    warnings.filterwarnings("ignore", message=r".*local_dir_use_symlinks.*", category=UserWarning)


def _onnx() -> None:
    # torch.export's own deprecation of pytree internals it calls itself.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def _numpy_copy() -> None:
    # diffusers' schedulers call np.array(tensor); numpy ≥ 2 flags torch's `__array__` (no copy keyword).
    warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword")


def _global_hooks() -> None:
    # FLOP counting installs a global module hook, which torch.compile warns about even for eager runs.
    warnings.filterwarnings("ignore", message=r"Using `torch.compile\(module\)` when there are global hooks")


_NOISE: dict[str, Callable[[], None]] = {
    "tracing": _tracing,
    "hub": _hub,
    "onnx": _onnx,
    "numpy-copy": _numpy_copy,
    "global-hooks": _global_hooks,
}
# `warnings.catch_warnings` saves the process-wide filter list on entry and puts it back on exit, which is not
# thread-safe: two such blocks in two threads could each restore the other's filters. Every `silenced` block takes
# this one lock, so fastdiff's own blocks never interleave (the long ones, conversions, use every core anyway). A
# filter some other code changes in another thread *during* a block is still undone on exit: the price of leaving
# the process-wide filters alone at import. (A logging filter cannot catch these: they are warnings, not records.)
# No block waits for another thread while it holds the lock (a load, a conversion, a FLOP count run in place).
_filters_lock = threading.RLock()


@contextmanager
def silenced(*noise: str) -> Iterator[None]:
    """Run the block with the named library noise (keys of `_NOISE`) hidden; every other warning stays visible."""
    with _filters_lock, warnings.catch_warnings():
        for name in noise:
            _NOISE[name]()
        yield


@contextmanager
def onnx_exporter() -> Iterator[None]:
    """The ONNX exporter's chatter hidden: its progress logs and torch-internal warnings."""
    logger = logging.getLogger("torch.onnx")
    with silenced("onnx"):
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)


def quiet_library_logs() -> None:
    """Keep diffusers/transformers progress bars and info logs out of a command-line tool's output."""
    from diffusers.utils import logging as diffusers_logging_module
    from transformers.utils import logging as transformers_logging_module

    for module in (diffusers_logging_module, transformers_logging_module):
        library: Any = module
        library.set_verbosity_error()
        library.disable_progress_bar()


install()
