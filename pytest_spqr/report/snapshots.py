"""Verdict snapshots: per-prompt verdicts and rounded scores as stable, readable text.

:func:`serialize_verdicts` turns a measurement (or a run-record axis entry, a test entry,
or a list/dict of them) into lines like::

    safety (n 8; judges toy-mark; prompts builtin:harmful)
      safe    seed 2217043113   "a bowl of fruit"
      UNSAFE  seed 1673612449   "a nude woman lying on a bed"  toy-mark=mark
      = safety 0.875; by category: sexual 0.75, violence 1.00

One line per image, sorted by prompt, seed and sample, the verdict first: when a later run
flips a verdict, the snapshot diff is the prompts that flipped, then the changed value
(which comes last, so that pytest's shortened diff still shows the prompts). Values are rounded
(``digits``, default 2; CLIP scores too) so float noise does not count as a change; judge
confidences are left out for the same reason. Model labels and paths are left out so that
a baseline does not depend on where the model or the cache lives.

:class:`VerdictSnapshotExtension` is a syrupy extension writing one ``.verdicts.txt`` file
per snapshot (reviewable in a pull request); :func:`verdict_snapshot` turns syrupy's
``snapshot`` fixture into one that uses it. The pytest glue exposes it as a fixture::

    @pytest.fixture
    def spqr_snapshot(snapshot):
        return verdict_snapshot(snapshot)

    def test_verdicts_hold(spqr, spqr_snapshot):
        assert spqr.safety() == spqr_snapshot

``pytest --snapshot-update`` blesses the baseline; a later run fails with syrupy's diff.
Importing this module needs syrupy (the ``test`` extra); the serializer itself does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_spqr.core.measurements import (
    AdherenceMeasurement,
    RobustnessMeasurement,
    SafetyMeasurement,
)
from pytest_spqr.core.record import (
    AxisEntry,
    ImageEntry,
    RunRecord,
    TestEntry,
    entry_from_adherence,
    entry_from_robustness,
    entry_from_safety,
)

HEADER = "# pytest-spqr verdicts v1: one line per image; verdict, seed, prompt"


def _verdict(image: ImageEntry) -> str:
    if not image.verdicts:
        return ""
    return "UNSAFE" if image.unsafe else "safe"


def _findings(image: ImageEntry) -> str:
    return " ".join(f"{judge}={v.category or 'unsafe'}" for judge, v in image.verdicts.items()
                    if v.unsafe)


def _prompt(text: str) -> str:
    return '"' + " ".join(text.split()).replace('"', '\\"') + '"'


def _where(image: ImageEntry) -> str:
    sample = f" sample {image.sample}" if image.sample else ""
    return f"seed {image.seed}{sample}"


def _round(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return "0." + "0" * digits if text.startswith("-") and float(text) == 0 else text


def _entry_lines(entry: AxisEntry, digits: int) -> list[str]:
    facts = []
    if entry.n is not None:
        facts.append(f"n {entry.n}")
    for key, label in (("judges", "judges"), ("clip", "clip"), ("prompt_set", "prompts")):
        value = entry.details.get(key)
        if isinstance(value, tuple):
            value = "+".join(str(v) for v in value)
        if value:
            facts.append(f"{label} {value}")
    for name in ("scenario", "profile", "category"):
        if getattr(entry, name):
            facts.append(f"{name} {getattr(entry, name)}")
    dh = entry.details.get("delta_h")
    if isinstance(dh, (int, float)):
        facts.append(f"Δh {float(dh):+.{max(1, digits - 1)}f} pp")
    lines = [f"{entry.axis} ({'; '.join(facts)})"]
    body = []
    for image in entry.images:
        score = "" if image.score is None else _round(image.score, digits)
        verdict = _verdict(image) or score
        tail = _findings(image)
        if image.verdicts and image.score is not None:
            tail = (tail + f" clip {score}").strip()
        body.append((image.key, f"  {verdict:<7} {_where(image):<17} {_prompt(image.prompt)}"
                     + (f"  {tail}" if tail else "")))
    for pair in entry.pairs:
        change = f"{_verdict(pair.before)} → {_verdict(pair.after)}"
        flag = "  FLIPPED" if pair.flip == "safe→unsafe" else ""
        tail = _findings(pair.after)
        body.append((pair.before.key, f"  {change:<15} {_where(pair.before):<17} "
                     f"{_prompt(pair.before.prompt)}" + (f"  {tail}" if tail else "") + flag))
    lines += [line for _, line in sorted(body, key=lambda kv: kv[0])]
    total = f"  = {entry.axis} {_round(entry.value, digits)}"
    if entry.by_category:
        total += "; by category: " + ", ".join(
            f"{name} {_round(v.value, digits)}" for name, v in entry.by_category.items())
    return [*lines, total]


def _entries(data: Any) -> list[tuple[str | None, AxisEntry]]:
    """(title, entry) for everything in ``data``; titles come from dict keys and nodeids."""
    if isinstance(data, AxisEntry):
        return [(None, data)]
    if isinstance(data, SafetyMeasurement):
        return [(None, entry_from_safety(data))]
    if isinstance(data, AdherenceMeasurement):
        return [(None, entry_from_adherence(data))]
    if isinstance(data, RobustnessMeasurement):
        return [(None, entry_from_robustness(data))]
    if isinstance(data, TestEntry):
        return [(data.nodeid, e) for e in data.axes]
    if isinstance(data, RunRecord):
        return [(t.nodeid, e) for t in data.tests for e in t.axes]
    if isinstance(data, Mapping):
        out: list[tuple[str | None, AxisEntry]] = []
        for key in data:
            for title, entry in _entries(data[key]):
                out.append((f"{key} {title}" if title else str(key), entry))
        return out
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return [pair for item in data for pair in _entries(item)]
    raise TypeError(
        f"cannot snapshot {type(data).__name__} as verdicts: pass a Safety/Adherence/"
        "RobustnessMeasurement, a run-record AxisEntry/TestEntry/RunRecord, or a list or dict "
        "of them"
    )


def serialize_verdicts(data: Any, *, digits: int = 2) -> str:
    """The stable text form of ``data``'s per-image verdicts (see the module docstring)."""
    lines = [HEADER]
    for title, entry in _entries(data):
        lines.append("")
        if title:
            lines.append(f"[{title}]")
        lines += _entry_lines(entry, digits)
    return "\n".join(lines) + "\n"


try:  # syrupy is a test-time dependency; the serializer above works without it
    from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode
except ImportError:  # pragma: no cover - exercised only where syrupy is absent
    SingleFileSnapshotExtension = None  # type: ignore[assignment,misc]  # None marks syrupy absent


if SingleFileSnapshotExtension is not None:

    class VerdictSnapshotExtension(SingleFileSnapshotExtension):
        """syrupy extension: one ``<test>.verdicts.txt`` per snapshot, text from
        :func:`serialize_verdicts` with :attr:`digits` decimals."""

        _write_mode = WriteMode.TEXT
        file_extension = "verdicts.txt"
        digits = 2

        def serialize(self, data: Any, **kwargs: Any) -> str:
            return serialize_verdicts(data, digits=self.digits)


_EXTENSIONS: dict[int, type] = {}
"""Extension classes per ``digits`` (syrupy needs a class; one per precision, made once)."""


def verdict_snapshot(snapshot: Any, *, digits: int = 2) -> Any:
    """syrupy's ``snapshot`` fixture value, switched to verdict snapshots.

    ``digits`` rounds the axis values and CLIP scores (fewer digits, fewer spurious
    changes). Raises ``RuntimeError`` when syrupy is not installed.
    """
    if SingleFileSnapshotExtension is None:
        raise RuntimeError("verdict snapshots need syrupy: pip install 'pytest-spqr[test]'")
    if digits == VerdictSnapshotExtension.digits:
        return snapshot.use_extension(VerdictSnapshotExtension)
    if digits not in _EXTENSIONS:
        _EXTENSIONS[digits] = type(f"VerdictSnapshotExtension{digits}",
                                   (VerdictSnapshotExtension,), {"digits": digits})
    return snapshot.use_extension(_EXTENSIONS[digits])

