"""The one home of library noise a fastdiff user can do nothing about, silenced narrowly, by its exact text:
library warnings by `silenced(noise)` around one of fastdiff's own steps only (no process-wide filter), and
transformers' torchvision log line and diffusers' two lines on a pipeline's `AutoencoderTiny` by filters on their
loggers. fastdiff's own `FastDiffWarning`s stay visible.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["onnx_exporter", "quiet_library_logs", "silenced"]

# (message regex, category) of each noise, by name
_NOISE: dict[str, list[tuple[str, type[Warning]]]] = {
    # Tracing warns about what a trace cannot see (every TracerWarning: static shapes on purpose, in diffusers',
    # transformers', torch's and fastdiff's own code) and about deprecations of the tracer and of what it reads.
    "tracing": [
        (r"`torch\.jit\.trace(_method)?` is deprecated", DeprecationWarning),
        (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
    ],
    # diffusers still passes `local_dir_use_symlinks` to huggingface_hub, which warns on every load.
    "hub": [(r".*local_dir_use_symlinks.*", UserWarning)],
    # torch.export's own deprecation of pytree internals it calls itself.
    "onnx": [(r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning)],
    # diffusers' schedulers call np.array(tensor); numpy ≥ 2 flags torch's `__array__` (no copy keyword).
    "numpy-copy": [(r"__array__ implementation doesn't accept a copy keyword", Warning)],
    # FLOP counting installs a global module hook, which torch.compile warns about even for eager runs.
    "global-hooks": [(r"Using `torch.compile\(module\)` when there are global hooks", Warning)],
}
# `catch_warnings` saves and restores the process-wide filter list, which is not thread-safe: fastdiff's own
# blocks take this lock so that they never interleave (none of them waits for another thread inside).
_filters_lock = threading.RLock()


def _torchvision_fallback(record: logging.LogRecord) -> bool:
    return "requires torchvision (not installed); falling back to" not in record.getMessage()


def _tiny_vae_in_a_pipeline(record: logging.LogRecord) -> bool:
    """diffusers' two log lines on loading a pipeline folder whose VAE is an `AutoencoderTiny` (the shipped
    `fastdiff-shapes` models): its own saved `block_out_channels`, and the pipeline's `AutoencoderKL` annotation."""
    message = record.getMessage()
    saved_field = message.startswith("The config attributes {'block_out_channels'") and "AutoencoderTiny" in message
    annotation = message.startswith("Expected types for vae:") and message.endswith("AutoencoderTiny'>.")
    return not (saved_field or annotation)


@contextmanager
def silenced(*noise: str) -> Iterator[None]:
    """Run the block with the named library noise (keys of `_NOISE`) hidden; every other warning stays visible."""
    with _filters_lock, warnings.catch_warnings():
        for message, category in (entry for name in noise for entry in _NOISE[name]):
            warnings.filterwarnings("ignore", message=message, category=category)
        if "tracing" in noise:
            from torch.jit import TracerWarning  # type: ignore[attr-defined]

            warnings.filterwarnings("ignore", category=TracerWarning)
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

    for library in (diffusers_logging_module, transformers_logging_module):
        library.set_verbosity_error()
        library.disable_progress_bar()


logging.getLogger("transformers.utils.import_utils").addFilter(_torchvision_fallback)  # idempotent
logging.getLogger("diffusers.configuration_utils").addFilter(_tiny_vae_in_a_pipeline)
logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(_tiny_vae_in_a_pipeline)
