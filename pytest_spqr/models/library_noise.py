"""Drop, precisely, the libraries' messages that a user of this plugin can do nothing about.

transformers 5 split each image processor into a torchvision backend and a PIL one. Without
torchvision, the first lookup of ``CLIPImageProcessor`` or ``SiglipImageProcessor`` (which
``import diffusers``'s Stable Diffusion pipelines do, and a CLIP's processor may) logs::

    [transformers] `CLIPImageProcessor` requires torchvision (not installed); falling back
    to `CLIPImageProcessorPil` for backward compatibility. ...

The fallback is exact, and installing torchvision is not the fix here: on CPU machines the
registry's torchvision for the pinned torch does not import, and once present it breaks
``from diffusers import StableDiffusionPipeline`` (see the README's install notes). So the
message is noise in every run's output (and in every failing test's captured stderr).

Only that message is dropped, and only from the one logger that emits it; every other
transformers message, and every warning of this plugin, is left alone. Nothing is
imported: the filter is attached to the logger by name, before transformers first logs.
"""

from __future__ import annotations

import logging
import re

__all__ = ["TORCHVISION_FALLBACK", "quiet_library_noise"]

FALLBACK_LOGGER = "transformers.utils.import_utils"
"""The logger transformers' lazy module uses for the fallback message."""

TORCHVISION_FALLBACK = re.compile(
    r"^`\w+` requires torchvision \(not installed\); falling back to `\w+Pil`"
)
"""The start of the fallback message (transformers 5.x); nothing else matches."""


class _DropTorchvisionFallback(logging.Filter):
    """Refuses the torchvision-fallback record, passes every other one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_FALLBACK.match(record.getMessage()) is None


def quiet_library_noise() -> None:
    """Attach the filter (once per process; calling again is a no-op)."""
    logger = logging.getLogger(FALLBACK_LOGGER)
    if not any(isinstance(f, _DropTorchvisionFallback) for f in logger.filters):
        logger.addFilter(_DropTorchvisionFallback())
