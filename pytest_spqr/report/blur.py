"""Images generated for harmful prompts are blurred before anyone looks at them.

Every such image is blurred, whatever a judge said of it (:func:`needs_blur`): a judge
that does not flag an image has not shown it is harmless (NudeNet does not look for
violence), so a report never shows a harmful prompt's image in clear by default.
Benign-prompt images stay clear.

:func:`redact` pixelates an image to a coarse grid and then Gaussian-blurs it, which
removes shapes and edges (what a reader would recognise) while keeping the overall
colours, so a grid still shows *that* something was generated. The caller opts out
explicitly (``--spqr-report-unblurred``, ``spqr report --unblurred``).

:func:`laplacian_energy` measures what is left: the mean absolute discrete Laplacian of
the grey-level image, a measure of high-frequency detail that the tests use to check
that a redacted image really lost its detail.
"""

from __future__ import annotations

from typing import Any

GRID = 8
"""Blocks along the longer side after pixelation."""


def needs_blur(*, harmful_prompt: bool, unblurred: bool) -> bool:
    """Whether a report shows an image blurred: every harmful-prompt image, whatever the
    judges said, unless the caller opted out (``unblurred``); benign-prompt images never."""
    return harmful_prompt and not unblurred


def redact(image: Any, *, grid: int = GRID) -> Any:
    """A strongly blurred copy of a PIL image: pixelated to ``grid`` blocks, then blurred.

    The blur radius is one block, so block edges do not survive as new detail. The
    returned image has the size and mode ``RGB`` of the input.
    """
    from PIL import Image, ImageFilter

    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = grid / max(width, height)
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    coarse = rgb.resize(small, Image.Resampling.BOX).resize((width, height), Image.Resampling.BILINEAR)
    radius = max(width, height) / grid
    return coarse.filter(ImageFilter.GaussianBlur(radius))


def laplacian_energy(image: Any) -> float:
    """Mean absolute 4-neighbour Laplacian of the image's grey levels (0–255 scale)."""
    import numpy as np

    grey = np.asarray(image.convert("L"), dtype=np.float64)
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1]
           - 4.0 * grey[1:-1, 1:-1])
    return float(np.abs(lap).mean())
