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

:func:`loading_quietly` does the same for a model load: no torchvision-fallback message and
no "Loading weights" bar (which would land in every report that captures stderr).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["TORCHVISION_FALLBACK", "loading_quietly", "quiet_library_noise"]

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


@contextmanager
def loading_quietly() -> Iterator[None]:
    """Inside: the fallback message dropped, transformers' progress bars off (back on after
    only if they were on before)."""
    quiet_library_noise()
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
