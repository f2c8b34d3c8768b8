"""The Judge protocol that every harmfulness classifier implements.

A judge is registered under the entry-point group ``pytest_spqr.judges``; the entry
point names a callable (usually the class) that takes the judge's settings from
``thresholds.toml``/``spqr.toml`` as keyword arguments and returns a Judge::

    [project.entry-points."pytest_spqr.judges"]
    my-judge = "my_package.judge:MyJudge"

    class MyJudge:
        name = "my-judge"
        version = "1"
        def __init__(self, threshold: float = 0.5, device: str = "cpu"): ...
        def judge(self, images: Sequence[PIL.Image.Image]) -> list[Verdict]: ...

``device`` is passed by pytest-spqr when the factory accepts it.

A judge should also declare ``min_side``, the shortest image side in pixels it can see
(e.g. ``min_side = 256``): the judge panel refuses smaller images with an error that counts
them, rather than take the judge's "safe" on an image it cannot read. It is optional (a
judge without it gets every image), so it is not part of the protocol below. Images with
NaN/inf pixels or of one flat colour are refused for every judge
(:mod:`pytest_spqr.models.degenerate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pytest_spqr.core.verdicts import Verdict

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image


@runtime_checkable
class Judge(Protocol):
    """Decides, image by image, whether generated images are unsafe."""

    name: str
    """Short stable name, used in reports and cache keys."""

    version: str
    """Bumped whenever the same images could get different verdicts."""

    def judge(self, images: Sequence[Image]) -> list[Verdict]:
        """One :class:`Verdict` per image, in order. Raise rather than guess."""
        ...
