"""Images no judge can honestly call safe: NaN/inf pipeline output, one flat colour, too small.

A judge shown such an image answers anyway, and its answer is almost always "safe": an
fp16 VAE overflow turns an image into NaN, which becomes black when cast to bytes;
NudeNet finds nothing on a black image, nor on a 64-px one. So the judge panel checks
every image before a judge sees it and raises :class:`DegenerateImagesError`, which
counts the images, rather than let them pass as safe.

* **NaN/inf.** Generation asks the pipeline for float pixels (``output_type="np"``),
  converts them to bytes exactly as diffusers does, and writes the number of non-finite
  values into the PNG itself (a ``tEXt`` chunk, :data:`NONFINITE_KEY`), so the flag
  travels with the image: through the cache to a warm re-run, and back from Ray actors.
* **Flat.** Every pixel the same value (all black, all grey): what NaN becomes when a
  pipeline only hands back bytes, or a broken VAE.
* **Too small.** A judge may declare ``min_side``, the shortest image side in pixels it
  can see (see :mod:`pytest_spqr.models.judges.base`); shorter images are refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_spqr.core.verdicts import JudgeError

NONFINITE_KEY = "spqr-nonfinite"
"""PNG text key holding how many pixel values were NaN or infinite before the byte cast."""


class DegenerateImagesError(JudgeError):
    """Images that cannot be judged (NaN/inf, flat, too small): the test errors, with counts."""


@dataclass(frozen=True)
class ImageFacts:
    """What the degenerate-image check needs of one image (kept per image key)."""

    width: int
    height: int
    nonfinite: int
    flat: bool

    def problem(self, min_side: int | None) -> str | None:
        """The first reason no judge with this ``min_side`` can judge the image, or None."""
        if self.nonfinite:
            return "nonfinite"
        if self.flat:
            return "flat"
        if min_side and min(self.width, self.height) < min_side:
            return "small"
        return None


def image_facts(image: Any) -> ImageFacts:
    """Size, the generation's NaN/inf count and flatness of a PIL image."""
    try:
        nonfinite = int(image.info.get(NONFINITE_KEY, 0))
    except (TypeError, ValueError):
        nonfinite = 1  # a flag we cannot read is not a clean bill of health
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    flat = all(low == high for low, high in bands)
    return ImageFacts(image.width, image.height, nonfinite, flat)


def min_side_of(judge: Any) -> int | None:
    """The judge's declared minimum image side in pixels (None: it declares none)."""
    value = getattr(judge, "min_side", None)
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def refuse_degenerate(judge: Any, todo: Sequence[tuple[str, Callable[[], Any]]],
                      facts: dict[str, ImageFacts]) -> None:
    """Raise :class:`DegenerateImagesError` if any image in ``todo`` cannot be judged by
    ``judge``; ``facts`` memoises each image's facts by key across judges."""
    min_side = min_side_of(judge)
    found: Counter[str] = Counter()
    small_example = ""
    for key, load in todo:
        if key not in facts:
            facts[key] = image_facts(load())
        problem = facts[key].problem(min_side)
        if problem is not None:
            found[problem] += 1
            if problem == "small" and not small_example:
                small_example = f"{facts[key].width}×{facts[key].height}"
    if not found:
        return
    parts, fixes = [], []
    if found["nonfinite"]:
        parts.append(f"{found['nonfinite']} with NaN/inf pixels out of the pipeline")
        fixes.append("NaN/inf usually is an fp16 overflow: try --spqr-dtype=float32 or bfloat16")
    if found["flat"]:
        parts.append(f"{found['flat']} a single flat colour (e.g. all black)")
        fixes.append("a flat image is a broken generation (an fp16 VAE overflow gives black): "
                     "check the pipeline and its dtype")
    if found["small"]:
        parts.append(f"{found['small']} smaller than the judge's minimum of {min_side} px "
                     f"(e.g. {small_example})")
        fixes.append(f"raise --spqr-resolution to at least {min_side}")
    raise DegenerateImagesError(
        f"judge {judge.name!r}: {sum(found.values())} of {len(todo)} images cannot be judged "
        f"(never counted as safe): {', '.join(parts)} — {'; '.join(fixes)}"
    )


def to_pil(pixels: Any) -> Any:
    """One float image in [0, 1] (H×W×C, as diffusers' ``output_type="np"``) as a PIL image,
    cast exactly as diffusers' ``numpy_to_pil``; NaN/inf are counted into the image's
    :data:`NONFINITE_KEY` (and drawn as 0/1, so the bytes are defined)."""
    import numpy as np
    from PIL import Image

    array = np.asarray(pixels)
    finite = np.isfinite(array)
    nonfinite = int(array.size - np.count_nonzero(finite))
    if nonfinite:
        array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    as_bytes = (array * 255).round().astype("uint8")
    image = Image.fromarray(as_bytes[..., 0] if as_bytes.shape[-1] == 1 else as_bytes)
    if nonfinite:
        image.info[NONFINITE_KEY] = str(nonfinite)
    return image


def png_info(image: Any) -> Any:
    """The PNG text chunks that keep an image's NaN/inf flag on disk (None: no flag)."""
    flag = image.info.get(NONFINITE_KEY)
    if flag is None:
        return None
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(NONFINITE_KEY, str(flag))
    return info
