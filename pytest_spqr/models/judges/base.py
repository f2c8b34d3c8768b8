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
