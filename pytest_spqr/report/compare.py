"""Two run records side by side: per-axis deltas, flipped prompts, changed outcomes.

Entries are matched by test nodeid, axis, scenario, profile and category (not by model
label, so a baseline run of ``models/v1`` compares with a run of ``models/v2`` of the same
suite). Images are matched by prompt, seed and sample; an image "flipped" when any judge's
verdict on it changed overall (safe ↔ unsafe). For robustness entries the fine-tuned
image is compared. Pure Python: no numpy, PIL or matplotlib.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pytest_spqr.core.record import AxisEntry, ImageEntry, RunRecord

Key = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class AxisDelta:
    """One axis of one test in both records."""

    nodeid: str
    axis: str
    scenario: str | None
    profile: str | None
    category: str | None
    a: AxisEntry
    b: AxisEntry

    @property
    def delta(self) -> float:
        return self.b.value - self.a.value


@dataclass(frozen=True)
class Flip:
    """An image whose overall verdict changed between the records."""

    nodeid: str
    axis: str
    image: ImageEntry
    """The image in the second record (prompt, seed, its verdicts)."""
    before_unsafe: bool
    after_unsafe: bool

    @property
    def direction(self) -> str:
        return "safe→unsafe" if self.after_unsafe else "unsafe→safe"


@dataclass(frozen=True)
class Comparison:
    deltas: tuple[AxisDelta, ...]
    flips: tuple[Flip, ...]
    outcomes: tuple[tuple[str, str | None, str | None], ...]
    """(nodeid, outcome in a, outcome in b) where they differ."""
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]

    def flipped_to_unsafe(self) -> list[Flip]:
        return [f for f in self.flips if f.after_unsafe]


def _keyed(record: RunRecord) -> dict[Key, AxisEntry]:
    out: dict[Key, AxisEntry] = {}
    for test, entry in record.axes():
        key = (test.nodeid, entry.axis, entry.scenario or "", entry.profile or "",
               entry.category or "")
        if key in out:  # several entries of one kind in a test: keep them apart by model
            key = (*key[:4], f"{key[4]}#{entry.model}")
        out[key] = entry
    return out


def _judged(entry: AxisEntry) -> Iterator[ImageEntry]:
    """The images whose verdicts matter: judged images, or the fine-tuned side of pairs."""
    yield from (i for i in entry.images if i.verdicts)
    yield from (p.after for p in entry.pairs)


def compare_records(a: RunRecord, b: RunRecord) -> Comparison:
    """Match ``a`` and ``b`` entry by entry (see the module docstring)."""
    ka, kb = _keyed(a), _keyed(b)
    deltas, flips = [], []
    for key in sorted(ka.keys() & kb.keys()):
        ea, eb = ka[key], kb[key]
        deltas.append(AxisDelta(key[0], key[1], ea.scenario, ea.profile, ea.category, ea, eb))
        before = {i.key: i.unsafe for i in _judged(ea)}
        for image in _judged(eb):
            if image.key in before and before[image.key] != image.unsafe:
                flips.append(Flip(key[0], key[1], image, before[image.key], image.unsafe))
    flips.sort(key=lambda f: (not f.after_unsafe, f.nodeid, f.axis, f.image.key))
    ta = {t.nodeid: t.outcome for t in a.tests}
    tb = {t.nodeid: t.outcome for t in b.tests}
    outcomes = tuple((n, ta[n], tb[n]) for n in sorted(ta.keys() & tb.keys()) if ta[n] != tb[n])
    return Comparison(tuple(deltas), tuple(flips), outcomes,
                      tuple(sorted(ta.keys() - tb.keys())), tuple(sorted(tb.keys() - ta.keys())))


def _short(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_comparison(c: Comparison, name_a: str = "A", name_b: str = "B") -> list[str]:
    """Plain lines for the terminal: deltas, then flipped prompts, then outcome changes."""
    lines = [f"spqr compare: {name_a} → {name_b}"]
    changed = [d for d in c.deltas if d.delta != 0 or d.a.n != d.b.n or d.a.model != d.b.model]
    same = len(c.deltas) - len(changed)
    if changed:
        lines += ["", "axis deltas (A → B):"]
        width = max(len(d.nodeid) for d in changed)
        for d in changed:
            scope = " ".join(x for x in (d.scenario or "", d.profile or "",
                                         f"category={d.category}" if d.category else "") if x)
            models = "" if d.a.model == d.b.model else f"  [{d.a.model} → {d.b.model}]"
            n = "" if d.a.n == d.b.n else f"  n {d.a.n} → {d.b.n}"
            lines.append(
                f"  {d.nodeid:<{width}}  {d.axis} {scope + ' ' if scope else ''}"
                f"{d.a.value:.3f} → {d.b.value:.3f}  ({d.delta:+.3f}){n}{models}"
            )
    if not c.deltas:
        lines += ["", "no axis measured by the same test in both records"]
    elif same:
        lines += ["", f"{same} of {len(c.deltas)} axes unchanged"]
    up = sum(f.after_unsafe for f in c.flips)
    down = len(c.flips) - up
    lines += ["", f"flipped prompts: {up} safe→unsafe, {down} unsafe→safe"]
    for f in c.flips:
        judges = ", ".join(f"{j}={v.category or 'unsafe'}" for j, v in f.image.verdicts.items()
                           if v.unsafe)
        lines.append(f"  {f.direction}  {f.nodeid} ({f.axis})  \"{_short(f.image.prompt)}\" "
                     f"seed {f.image.seed}" + (f"  {judges}" if judges else ""))
    if c.outcomes:
        lines += ["", "outcomes changed:"]
        lines += [f"  {n}: {x or 'unknown'} → {y or 'unknown'}" for n, x, y in c.outcomes]
    if c.only_a:
        lines += ["", f"only in {name_a}: " + ", ".join(c.only_a)]
    if c.only_b:
        lines += ["", f"only in {name_b}: " + ", ".join(c.only_b)]
    return lines
