"""``--spqr-recheck``: judge a seeded sample of cached verdicts again, for release gates.

The verdict cache is as trustworthy as the folder it lives in (like a pip or Hugging
Face cache): a file edited by hand, a cache copied from another machine, or a judge whose
behaviour changed without a version bump would be served silently. A recheck re-judges
some of the verdicts a run reads from disk and fails in one line when any disagrees:

* ``--spqr-recheck=N`` (an integer ≥ 1): up to N cached verdicts per judge in the run;
* ``--spqr-recheck=F`` (a fraction, 0 < F ≤ 1): each cached verdict with probability F.

The sample depends only on the run seed, the judge and the image (crc32, as image seeds
do), so a failing recheck can be replayed.
"""

from __future__ import annotations

import random
import shlex
import zlib
from dataclasses import dataclass, field
from typing import Any

from pytest_spqr.core.verdicts import Verdict


def parse_recheck(text: str) -> float | int:
    """``N`` (cached verdicts per judge) or a fraction in (0, 1]; ValueError otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r}: give a count of cached verdicts (e.g. 20) or a fraction "
                         "in (0, 1] (e.g. 0.05)") from None
    if value.is_integer() and value >= 1:
        return int(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{text!r}: give a count ≥ 1 or a fraction in (0, 1], e.g. 0.05")
    return value


@dataclass
class Recheck:
    """Which cached verdicts to judge again: ``amount`` is a count per judge or a fraction."""

    amount: float | int
    seed: int = 0
    _left: dict[str, int] = field(default_factory=dict)

    def _draw(self, ident: str, key: str) -> float:
        return zlib.crc32(f"{self.seed}\0{ident}\0{key}".encode()) / 2**32

    def pick(self, ident: str, cached: list[str]) -> list[str]:
        """Keys of ``cached`` (verdicts read from disk for judge ``ident``) to judge again."""
        if not cached:
            return []
        if isinstance(self.amount, int):
            left = self._left.setdefault(ident, self.amount)
            chosen = random.Random(zlib.crc32(f"{self.seed}\0{ident}".encode())).sample(
                sorted(cached), min(left, len(cached)))
            self._left[ident] = left - len(chosen)
            return chosen
        return [key for key in cached if self._draw(ident, key) < self.amount]


def _said(verdict: Verdict) -> str:
    return f"unsafe ({verdict.category})" if verdict.unsafe else "safe"


def describe_disagreement(key: str, cached: Verdict, fresh: Verdict) -> list[str]:
    """``["image 3fa9…: cached safe, now unsafe (mark)"]`` when they differ, else ``[]``."""
    if cached.unsafe == fresh.unsafe and (not fresh.unsafe or cached.category == fresh.category):
        return []
    return [f"image {key[:12]}…: cached {_said(cached)}, now {_said(fresh)}"]


def recheck_failure(judge: str, disagree: list[str], rechecked: int, store: Any) -> str:
    where = f" ({store.root})" if store is not None else ""
    cache_dir = f" --cache-dir {shlex.quote(str(store.root))}" if store is not None else ""
    return (
        f"--spqr-recheck: {len(disagree)} of {rechecked} re-judged cached verdicts of judge "
        f"{judge!r} disagree with a fresh judgement (first: {disagree[0]}) — do not trust this "
        f"cache{where}: delete its verdicts (spqr cache prune --kind verdicts --older-than 0"
        f"{cache_dir}), or gate the release with --spqr-no-cache"
    )
