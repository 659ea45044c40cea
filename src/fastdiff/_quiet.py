"""Library messages that a fastdiff user can do nothing about, filtered out by their exact text.

transformers ≥ 5 logs, at import, one warning per image processor class that would like torchvision (diffusers
imports CLIP's and SigLIP's); fastdiff never uses an image processor. Only those records are dropped: every
other transformers message, and fastdiff's own warnings, stay.
"""

from __future__ import annotations

import logging

__all__ = ["install"]

_IMPORT_LOGGER = "transformers.utils.import_utils"


class _TorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


def install() -> None:
    """Add the filter once (idempotent); done when this module is imported, before transformers is."""
    logger = logging.getLogger(_IMPORT_LOGGER)
    if not any(isinstance(f, _TorchvisionFallback) for f in logger.filters):
        logger.addFilter(_TorchvisionFallback())


install()
