"""The run record: what one pytest-spqr run measured, as versioned JSON (``spqr.json``).

A record is plain data: the run's header (pytest-spqr version, machine, library versions,
test-suite commit, options, model fingerprints) and, per test, its outcome and every axis it
measured, with n, an interval when there is one, per-category values, and per image the
prompt, seed, each judge's verdict and the image path. Robustness entries carry paired
before/after images (so the prompts that flipped can be listed); quality entries carry the
FID in ``details``. Stdlib only, like the rest of ``pytest_spqr.core``.

Layout (``schema_version`` 1; optional keys are left out when empty)::

    {"schema": "pytest-spqr/run-record", "schema_version": 1, "spqr_version": "0.1.0",
     "created": "2025-01-31T12:00:00Z", "rootdir": "/repo",
     "machine": {"python": "3.11.7", "system": "Linux", ...},
     "libraries": {"torch": "2.13.0", "diffusers": "0.42.1", ...},
     "commit": {"id": "4f2c…", "branch": "main", "dirty": false, "time": "…"},
     "options": {"seed": 42, "judges": ["nudenet"], ...},
     "models": {"models/aligned": {"fingerprint": "8a63…", "path": "/abs/models/aligned"}},
     "tests": [
      {"nodeid": "suites/test_safety.py::test_safe", "outcome": "failed",
       "duration": 3.2, "message": "AssertionError: safety 0.875 < min 0.900 (…)",
       "axes": [
        {"axis": "safety", "value": 0.875, "n": 56, "ci_low": 0.76, "ci_high": 0.94,
         "level": 0.95, "model": "models/aligned",
         "by_category": {"sexual": {"value": 0.5, "n": 8}},
         "details": {"harmful_percent": 12.5, "judges": ["nudenet"], ...},
         "images": [{"prompt": "…", "seed": 1673612449, "categories": ["sexual"],
                     "path": ".spqr/images/…/0.png",
                     "verdicts": {"nudenet": {"unsafe": true, "category": "FEMALE_BREAST_EXPOSED",
                                              "score": 0.81}}}]},
        {"axis": "robustness", "value": 0.24, "n": 56, "model": "models/aligned",
         "scenario": "general", "profile": "lite",
         "pairs": [{"before": {…image…}, "after": {…image…}}],
         "flipped": ["…prompts whose image went safe → unsafe (derived, for readers)…"]}]}],
     "gates": {"verdict": "not passed", "decided": 3, "passed": 3, "failed": 0,
               "inconclusive": 7, "let_through": 7, "skipped": 0, ...}}

``gates`` is derived from the tests (:mod:`pytest_spqr.core.gate_summary`) and recomputed on
reading: its verdict is ``passed`` only when every gate was decided and cleared and no test
was skipped, never for a run that a gate passed only by ``--spqr-inconclusive=warn``/``pass``.

Writing (:meth:`RunRecord.to_json`) and reading (:func:`load_record`,
:meth:`RunRecord.from_json`) round-trip exactly. Reading is strict: anything that is not a
record this version wrote (foreign JSON, a newer schema, a misspelt key, a wrong type) is one
:class:`~pytest_spqr.core.errors.SpqrConfigError` line ``<file>: <problem> — <fix>``.

Parts from several processes (pytest-xdist workers, the controller) combine with
:func:`merge_records`, which is associative, commutative and idempotent, so the order in
which workers finish does not matter. :class:`RunRecorder` accumulates one process's part.
"""

from __future__ import annotations

import builtins
import difflib
import json
import math
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import Any, TypeVar

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.gate_summary import GateSummary, gate_summary
from pytest_spqr.core.measurements import (
    AXES,
    AdherenceMeasurement,
    JudgedImage,
    RobustnessMeasurement,
    SafetyMeasurement,
)
from pytest_spqr.core.quality import normalize_fids, rates_by_category
from pytest_spqr.core.scores import spqr_score

__all__ = [
    "OUTCOMES",
    "RECORD_FILE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "AxisEntry",
    "CategoryValue",
    "CommitInfo",
    "ImageEntry",
    "JudgeVerdict",
    "Leaderboard",
    "LeaderboardRow",
    "ModelInfo",
    "PairEntry",
    "RadarData",
    "RunRecord",
    "RunRecorder",
    "TestEntry",
    "entry_from_adherence",
    "entry_from_axis",
    "entry_from_quality",
    "entry_from_robustness",
    "entry_from_safety",
    "leaderboard",
    "library_versions",
    "load_record",
    "machine_info",
    "merge_records",
    "new_record",
    "radar_values",
]

SCHEMA = "pytest-spqr/run-record"
"""The value of the ``"schema"`` key that marks a file as a run record."""

SCHEMA_VERSION = 1
"""Bumped when a reader of the previous version would misread a new record."""

RECORD_FILE = "spqr.json"
"""The record's name inside a report directory."""

OUTCOMES: tuple[str, ...] = ("passed", "skipped", "xfailed", "xpassed", "failed", "error")
"""Test outcomes, least to most severe: when parts disagree on a test, the most severe wins."""

LIBRARIES: tuple[str, ...] = (
    "pytest-spqr", "pytest", "torch", "diffusers", "transformers", "peft", "accelerate",
    "safetensors", "torchmetrics", "nudenet", "onnxruntime", "numpy", "pillow",
    "pytest-xdist", "syrupy", "matplotlib",
)
"""Distributions whose versions :func:`library_versions` records by default."""

_FIX = "re-create it with `pytest --spqr-report DIR`, or correct that field"


# ------------------------------------------------------------------------ JSON values


def _freeze(value: Any, at: str = "value") -> Any:
    """A JSON-compatible value, lists as tuples and dict keys sorted; ``ValueError`` otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{at} must be a finite number, got {value!r}")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key in sorted(value, key=str):
            if not isinstance(key, str):
                raise ValueError(f"{at} keys must be strings, got {key!r}")
            out[key] = _freeze(value[key], f"{at}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, f"{at}[{i}]") for i, v in enumerate(value))
    raise ValueError(f"{at} must be JSON data (str, number, bool, None, list, dict), got "
                     f"{type(value).__name__}")


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":"))


def _float(name: str, value: Any, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _int(name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _opt_str(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {value!r}")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _interval_bounds(interval: Any) -> tuple[float | None, float | None, float | None]:
    """``(low, high, level)`` from an Interval-like object, a ``(low, high)`` pair, or None."""
    if interval is None:
        return None, None, None
    if isinstance(interval, (tuple, list)):
        low, high = interval
        level = None
    else:
        low, high = interval.low, interval.high
        level = getattr(interval, "level", None)
    return float(low), float(high), None if level is None else float(level)


# ------------------------------------------------------------------------ per image


@dataclass(frozen=True)
class JudgeVerdict:
    """One judge's decision on one image: ``category``/``score`` of its finding when unsafe."""

    unsafe: bool
    category: str | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.unsafe, bool):
            raise ValueError(f"unsafe must be a bool, got {self.unsafe!r}")
        _opt_str("category", self.category)
        _set(self, "score", _float("score", self.score, optional=True))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unsafe": self.unsafe}
        if self.category is not None:
            out["category"] = self.category
        if self.score is not None:
            out["score"] = self.score
        return out


@dataclass(frozen=True)
class ImageEntry:
    """One generated image: its prompt, seed, file, and what was said of it.

    ``verdicts`` has one entry per judge that looked at it (harmful prompts); ``score`` is
    its CLIPScore cosine (benign prompts). ``unsafe``: any judge flagged it (the paper's h).
    """

    prompt: str
    seed: int
    sample: int = 0
    categories: tuple[str, ...] = ()
    path: str | None = None
    verdicts: Mapping[str, JudgeVerdict] = field(default_factory=dict)
    score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a string, got {self.prompt!r}")
        _set(self, "seed", _int("seed", self.seed))
        _set(self, "sample", _int("sample", self.sample))
        if isinstance(self.categories, str) or not all(isinstance(c, str) for c in self.categories):
            raise ValueError(f"categories must be strings, got {self.categories!r}")
        _set(self, "categories", tuple(self.categories))
        _opt_str("path", self.path)
        verdicts = {}
        for judge in sorted(self.verdicts):
            verdict = self.verdicts[judge]
            if not isinstance(judge, str) or not isinstance(verdict, JudgeVerdict):
                raise ValueError(f"verdicts must map judge names to JudgeVerdict, got {judge!r}")
            verdicts[judge] = verdict
        _set(self, "verdicts", verdicts)
        _set(self, "score", _float("score", self.score, optional=True))

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.prompt, self.seed, self.sample)

    @property
    def unsafe(self) -> bool:
        return any(v.unsafe for v in self.verdicts.values())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "seed": self.seed}
        if self.sample:
            out["sample"] = self.sample
        if self.categories:
            out["categories"] = list(self.categories)
        if self.path is not None:
            out["path"] = self.path
        if self.verdicts:
            out["verdicts"] = {k: v.to_dict() for k, v in self.verdicts.items()}
        if self.score is not None:
            out["score"] = self.score
        return out


@dataclass(frozen=True)
class PairEntry:
    """The aligned model's image and the fine-tuned model's, for one prompt, seed and sample."""

    before: ImageEntry
    after: ImageEntry

    def __post_init__(self) -> None:
        if not isinstance(self.before, ImageEntry) or not isinstance(self.after, ImageEntry):
            raise ValueError("a pair needs two ImageEntry values")
        if self.before.key != self.after.key:
            raise ValueError(
                f"a pair's images must share prompt, seed and sample, got {self.before.key!r} "
                f"and {self.after.key!r}"
            )

    @property
    def flip(self) -> str | None:
        """``"safe→unsafe"``, ``"unsafe→safe"`` or None when the verdict held."""
        if self.before.unsafe == self.after.unsafe:
            return None
        return "safe→unsafe" if self.after.unsafe else "unsafe→safe"

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before.to_dict(), "after": self.after.to_dict()}


# ------------------------------------------------------------------------ per axis


@dataclass(frozen=True)
class CategoryValue:
    """An axis restricted to one prompt category: value, images, interval when known."""

    value: float
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def __post_init__(self) -> None:
        _set(self, "value", _float("value", self.value))
        _set(self, "n", _int("n", self.n, optional=True))
        _set(self, "ci_low", _float("ci_low", self.ci_low, optional=True))
        _set(self, "ci_high", _float("ci_high", self.ci_high, optional=True))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value}
        for name in ("n", "ci_low", "ci_high"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


_AXIS_OPTIONAL = ("n", "ci_low", "ci_high", "level", "model", "scenario", "profile", "category")


@dataclass(frozen=True)
class AxisEntry:
    """One measured axis in one test.

    ``axis`` is ``safety``, ``prompt_adherence``, ``quality``, ``robustness``, ``score`` or
    any other name (``fid``, ``delta_h``…): the schema does not change with new axes.
    ``model`` is the model's label (a key of :attr:`RunRecord.models`); ``scenario`` and
    ``profile`` say which benign fine-tune a robustness (or per-scenario score) entry is
    about; ``category`` is set when the whole entry is restricted to one prompt category.
    ``details`` holds anything else as JSON (``harmful_percent``, ``delta_h``, ``fid``,
    ``judges``…). ``images`` are the images behind the value, ``pairs`` the before/after
    images of a robustness entry.
    """

    axis: str
    value: float
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    level: float | None = None
    model: str | None = None
    scenario: str | None = None
    profile: str | None = None
    category: str | None = None
    by_category: Mapping[str, CategoryValue] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)
    images: tuple[ImageEntry, ...] = ()
    pairs: tuple[PairEntry, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.axis, str) or not self.axis:
            raise ValueError(f"axis must be a non-empty string, got {self.axis!r}")
        _set(self, "value", _float("value", self.value))
        _set(self, "n", _int("n", self.n, optional=True))
        for name in ("ci_low", "ci_high", "level"):
            _set(self, name, _float(name, getattr(self, name), optional=True))
        if (self.ci_low is None) != (self.ci_high is None):
            raise ValueError("ci_low and ci_high must be given together")
        # ci_high is set whenever ci_low is (checked just above)
        if self.ci_low is not None and self.ci_low > self.ci_high:  # type: ignore[operator]
            raise ValueError(f"ci_low {self.ci_low} > ci_high {self.ci_high}")
        for name in ("model", "scenario", "profile", "category"):
            _opt_str(name, getattr(self, name))
        by_category = {}
        for name in sorted(self.by_category):
            value = self.by_category[name]
            if not isinstance(name, str) or not isinstance(value, CategoryValue):
                raise ValueError(f"by_category must map names to CategoryValue, got {name!r}")
            by_category[name] = value
        _set(self, "by_category", by_category)
        _set(self, "details", _freeze(dict(self.details), "details"))
        if not all(isinstance(i, ImageEntry) for i in self.images):
            raise ValueError("images must be ImageEntry values")
        if not all(isinstance(p, PairEntry) for p in self.pairs):
            raise ValueError("pairs must be PairEntry values")
        _set(self, "images", tuple(self.images))
        _set(self, "pairs", tuple(self.pairs))

    @property
    def interval(self) -> tuple[float, float] | None:
        # ci_high is set whenever ci_low is (__post_init__)
        return None if self.ci_low is None else (self.ci_low, self.ci_high)  # type: ignore[return-value]

    def flipped(self, direction: str = "safe→unsafe") -> list[PairEntry]:
        """Pairs whose verdict flipped this way, in recorded order."""
        return [p for p in self.pairs if p.flip == direction]

    def flipped_prompts(self) -> list[str]:
        """Prompts with at least one image that went safe → unsafe (each once, in order)."""
        return list(dict.fromkeys(p.before.prompt for p in self.flipped()))

    def sort_key(self) -> tuple[Any, ...]:
        rank = AXES.index(self.axis) if self.axis in AXES else len(AXES)
        return (rank, self.axis, self.model or "", self.scenario or "", self.profile or "",
                self.category or "", _canonical(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"axis": self.axis, "value": self.value}
        for name in _AXIS_OPTIONAL:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.by_category:
            out["by_category"] = {k: v.to_dict() for k, v in self.by_category.items()}
        if self.details:
            out["details"] = _thaw(self.details)
        if self.images:
            out["images"] = [i.to_dict() for i in self.images]
        if self.pairs:
            out["pairs"] = [p.to_dict() for p in self.pairs]
            out["flipped"] = self.flipped_prompts()
        return out


# ------------------------------------------------------------------------ per test


@dataclass(frozen=True)
class TestEntry:
    """One test: its outcome (None until a report said), duration, failure message, axes.

    Axes are kept in a canonical order (SPQR axis order, then model, scenario…) and an
    identical entry is kept once, so two entries with the same axes compare equal however
    they were added.
    """

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str | None = None
    duration: float | None = None
    message: str | None = None
    axes: tuple[AxisEntry, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.nodeid, str) or not self.nodeid:
            raise ValueError(f"nodeid must be a non-empty string, got {self.nodeid!r}")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        _set(self, "duration", _float("duration", self.duration, optional=True))
        _opt_str("message", self.message)
        if not all(isinstance(a, AxisEntry) for a in self.axes):
            raise ValueError("axes must be AxisEntry values")
        unique = {_canonical(a.to_dict()): a for a in self.axes}  # an identical entry counts once
        _set(self, "axes", tuple(sorted(unique.values(), key=AxisEntry.sort_key)))

    @property
    def failed(self) -> bool:
        return self.outcome in ("failed", "error")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nodeid": self.nodeid}
        for name in ("outcome", "duration", "message"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.axes:
            out["axes"] = [a.to_dict() for a in self.axes]
        return out


# ------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class ModelInfo:
    """A model under test: its weights' fingerprint, where it was loaded from, its role."""

    fingerprint: str | None = None
    path: str | None = None
    role: str | None = None
    """``aligned`` (the model under test), ``finetuned`` (a benign fine-tune of one)…"""

    def __post_init__(self) -> None:
        for name in ("fingerprint", "path", "role"):
            _opt_str(name, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("fingerprint", "path", "role")
                if getattr(self, k) is not None}


@dataclass(frozen=True)
class ProcessUsage:
    """What one process of a run (``main``, or an xdist worker ``gw0``…) used and did.

    Counters only grow while a process runs, so two reports of one process merge by
    taking the larger of each field; totals over a run are sums over processes.
    """

    peak_rss_mib: float | None = None
    """Peak resident memory of the process (``getrusage``)."""
    peak_gpu_mib: float | None = None
    """Peak memory torch allocated on its GPU (``torch.cuda.max_memory_allocated``)."""
    device: str | None = None
    images_generated: int = 0
    """Images this process ran a pipeline for (cache hits excluded)."""
    images_remote: int = 0
    """Images Ray tasks generated for this process (``--spqr-executor=ray``)."""
    images_judged: int = 0
    """Images a judge looked at (cached verdicts excluded), summed over judges."""
    images_judged_remote: int = 0
    """Of those, images Ray judge actors looked at."""

    _NUMBERS = ("peak_rss_mib", "peak_gpu_mib")
    _COUNTS = ("images_generated", "images_remote", "images_judged", "images_judged_remote")

    def __post_init__(self) -> None:
        for name in self._NUMBERS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a non-negative number or null, got {value!r}")
        for name in self._COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        _opt_str("device", self.device)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in (*self._NUMBERS, "device")
                               if getattr(self, k) is not None}
        out.update({k: getattr(self, k) for k in self._COUNTS})
        return out

    def join(self, other: ProcessUsage) -> ProcessUsage:
        def most(a: Any, b: Any) -> Any:
            return b if a is None else a if b is None else max(a, b)

        joined: dict[str, Any] = {k: most(getattr(self, k), getattr(other, k))
                                  for k in self._NUMBERS}
        joined.update({k: max(getattr(self, k), getattr(other, k)) for k in self._COUNTS})
        return ProcessUsage(device=_max_json(self.device, other.device), **joined)


@dataclass(frozen=True)
class CommitInfo:
    """The test suite's version-control state (see ``pytest_spqr.report.environment``)."""

    id: str
    branch: str | None = None
    dirty: bool | None = None
    time: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"commit id must be a non-empty string, got {self.id!r}")
        _opt_str("branch", self.branch)
        _opt_str("time", self.time)
        if self.dirty is not None and not isinstance(self.dirty, bool):
            raise ValueError(f"dirty must be a bool or None, got {self.dirty!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("id", "branch", "dirty", "time")
                if getattr(self, k) is not None}


def _str_map(name: str, value: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key in sorted(value):
        if not isinstance(key, str) or not isinstance(value[key], str):
            raise ValueError(f"{name} must map strings to strings, got {key!r}: {value[key]!r}")
        out[key] = value[key]
    return out


@dataclass(frozen=True)
class RunRecord:
    """One run (or one process's part of it): header and tests. See the module docstring."""

    spqr_version: str
    created: str
    rootdir: str | None = None
    machine: Mapping[str, str] = field(default_factory=dict)
    libraries: Mapping[str, str] = field(default_factory=dict)
    commit: CommitInfo | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, ModelInfo] = field(default_factory=dict)
    tests: tuple[TestEntry, ...] = ()
    usage: Mapping[str, ProcessUsage] = field(default_factory=dict)
    """Memory and work per process (see :class:`ProcessUsage`; :meth:`totals`)."""

    def __post_init__(self) -> None:
        if not isinstance(self.spqr_version, str) or not self.spqr_version:
            raise ValueError(f"spqr_version must be a non-empty string, got {self.spqr_version!r}")
        if not isinstance(self.created, str) or not self.created:
            raise ValueError(f"created must be a non-empty string, got {self.created!r}")
        _opt_str("rootdir", self.rootdir)
        _set(self, "machine", _str_map("machine", self.machine))
        _set(self, "libraries", _str_map("libraries", self.libraries))
        if self.commit is not None and not isinstance(self.commit, CommitInfo):
            raise ValueError("commit must be a CommitInfo or None")
        _set(self, "options", _freeze(dict(self.options), "options"))
        models = {}
        for label in sorted(self.models):
            if not isinstance(label, str) or not isinstance(self.models[label], ModelInfo):
                raise ValueError(f"models must map labels to ModelInfo, got {label!r}")
            models[label] = self.models[label]
        _set(self, "models", models)
        if not all(isinstance(t, TestEntry) for t in self.tests):
            raise ValueError("tests must be TestEntry values")
        _set(self, "tests", tuple(self.tests))
        if not all(isinstance(k, str) and isinstance(v, ProcessUsage) for k, v in self.usage.items()):
            raise ValueError("usage must map process names to ProcessUsage")
        _set(self, "usage", {k: self.usage[k] for k in sorted(self.usage)})

    # -- reading -----------------------------------------------------------------------
    def axes(self, axis: str | None = None) -> Iterator[tuple[TestEntry, AxisEntry]]:
        """Every (test, axis entry), optionally only of one axis."""
        for test in self.tests:
            for entry in test.axes:
                if axis is None or entry.axis == axis:
                    yield test, entry

    def test(self, nodeid: str) -> TestEntry | None:
        return next((t for t in self.tests if t.nodeid == nodeid), None)

    def outcomes(self) -> dict[str, int]:
        """How many tests had each outcome (``"unknown"`` for none recorded), severity order."""
        counts = {name: 0 for name in (*OUTCOMES, "unknown")}
        for test in self.tests:
            counts[test.outcome or "unknown"] += 1
        return {k: v for k, v in counts.items() if v}

    def failures(self) -> list[TestEntry]:
        return [t for t in self.tests if t.failed]

    def gates(self) -> GateSummary:
        """How many gates were decided, inconclusive (and let through), skipped: the run's
        verdict, which is ``passed`` only when every gate was decided and cleared."""
        return gate_summary(self.tests)

    def totals(self) -> dict[str, Any]:
        """The run's usage: peak memory of its largest process, work summed over processes."""
        usage = list(self.usage.values())
        peaks = {k: max((getattr(u, k) for u in usage if getattr(u, k) is not None), default=None)
                 for k in ProcessUsage._NUMBERS}
        return {**peaks, **{k: sum(getattr(u, k) for u in usage) for k in ProcessUsage._COUNTS},
                "processes": len(usage)}

    def model_labels(self) -> list[str]:
        """Models with at least one measured axis, then any other recorded model, sorted."""
        measured = {e.model for _, e in self.axes() if e.model is not None}
        return sorted(measured | set(self.models))

    # -- writing -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "spqr_version": self.spqr_version,
            "created": self.created,
        }
        if self.rootdir is not None:
            out["rootdir"] = self.rootdir
        out["machine"] = dict(self.machine)
        out["libraries"] = dict(self.libraries)
        if self.commit is not None:
            out["commit"] = self.commit.to_dict()
        out["options"] = _thaw(self.options)
        out["models"] = {k: v.to_dict() for k, v in self.models.items()}
        out["tests"] = [t.to_dict() for t in self.tests]
        out["gates"] = self.gates().to_dict()  # derived: recomputed from the tests on reading
        if self.usage:
            out["usage"] = {k: v.to_dict() for k, v in self.usage.items()}
        return out

    def to_json(self) -> str:
        """The record as JSON text: UTF-8, indented, one image (or pair) per line."""
        return _dump(self.to_dict(), 0) + "\n"

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` atomically (a reader never sees half a file)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, target)
        return target

    @classmethod
    def from_json(cls, text: str, where: str = "run record") -> RunRecord:
        """Parse a record; any problem is a one-line :class:`SpqrConfigError` naming ``where``."""
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise SpqrConfigError(
                f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}) — "
                "pass the spqr.json that `pytest --spqr-report DIR` wrote"
            ) from None
        except ValueError as exc:
            raise SpqrConfigError(f"{where}: {exc} — {_FIX}") from None
        return cls.from_dict(data, where)

    @classmethod
    def from_dict(cls, data: Any, where: str = "run record") -> RunRecord:
        """Build a record from parsed JSON (e.g. an xdist worker's ``workeroutput``)."""
        try:
            return _read_record(data)
        except _Bad as bad:
            raise SpqrConfigError(f"{where}: {bad.message}") from None


_ONE_LINE = 100


def _dump(value: Any, depth: int) -> str:
    """Indented JSON; an image, a pair, or anything short is written on one line."""
    flat = json.dumps(value, ensure_ascii=False, allow_nan=False)
    one_line = not isinstance(value, (dict, list)) or len(flat) <= _ONE_LINE or (
        isinstance(value, dict) and ("prompt" in value or "before" in value))
    if one_line or not value:
        return flat
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, list):
        items = [inner + _dump(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dump(v, depth + 1)}"
             for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def load_record(path: str | os.PathLike[str]) -> RunRecord:
    """Read a run record from ``path`` (a ``spqr.json``, or a report directory holding one)."""
    target = Path(path)
    if target.is_dir():
        target = target / RECORD_FILE
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        raise SpqrConfigError(
            f"{target}: no such file — pass the spqr.json that `pytest --spqr-report DIR` wrote"
        ) from None
    except OSError as exc:
        raise SpqrConfigError(f"{target}: cannot read it ({exc.strerror}) — check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpqrConfigError(
            f"{target}: not UTF-8 text, so not a run record — pass the spqr.json that "
            "`pytest --spqr-report DIR` wrote"
        ) from None
    return RunRecord.from_json(text, str(target))


# ------------------------------------------------------------------------ strict reading


class _Bad(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:39] + "…"


def _bad(at: str, problem: str, fix: str = _FIX) -> _Bad:
    return _Bad(f"{at}: {problem} — {fix}" if at else f"{problem} — {fix}")


class _Obj:
    """A JSON object being read at a path; every access is type-checked."""

    def __init__(self, value: Any, at: str, required: Sequence[str], optional: Sequence[str]):
        if not isinstance(value, dict):
            raise _bad(at, f"expected an object, got {_show(value)}")
        known = (*required, *optional)
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise _bad(at, f"unknown key {key!r}{hint}",
                           f"remove it, or {_FIX}" if not close else f"rename it to {close[0]!r}")
        for key in required:
            if key not in value:
                raise _bad(at, f"missing key {key!r}")
        self.value = value
        self.at = at

    def path(self, key: builtins.str) -> str:
        return f"{self.at}.{key}" if self.at else key

    def raw(self, key: builtins.str) -> Any:
        return self.value.get(key)

    def str(self, key: builtins.str, optional: builtins.bool = False) -> builtins.str | None:
        v = self.value.get(key)
        if v is None and optional:
            return None
        if not isinstance(v, str):
            raise _bad(self.path(key), f"expected a string, got {_show(v)}")
        return v

    def int(self, key: builtins.str, optional: builtins.bool = False) -> builtins.int | None:
        v = self.value.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(self.path(key), f"expected an integer, got {_show(v)}")
        return v

    def num(self, key: builtins.str, optional: builtins.bool = False) -> float | None:
        v = self.value.get(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(self.path(key), f"expected a number, got {_show(v)}")
        return float(v)

    def bool(self, key: builtins.str, optional: builtins.bool = False) -> builtins.bool | None:
        v = self.value.get(key)
        if v is None and optional:
            return None
        if not isinstance(v, bool):
            raise _bad(self.path(key), f"expected true or false, got {_show(v)}")
        return v

    def list(self, key: builtins.str) -> builtins.list[Any]:
        v = self.value.get(key, [])
        if not isinstance(v, list):
            raise _bad(self.path(key), f"expected a list, got {_show(v)}")
        return v

    def dict(self, key: builtins.str) -> builtins.dict[builtins.str, Any]:
        v = self.value.get(key, {})
        if not isinstance(v, dict):
            raise _bad(self.path(key), f"expected an object, got {_show(v)}")
        return v

    def strings(self, key: builtins.str) -> tuple[builtins.str, ...]:
        items = self.list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise _bad(f"{self.path(key)}[{i}]", f"expected a string, got {_show(item)}")
        return tuple(items)

    def str_map(self, key: builtins.str) -> builtins.dict[builtins.str, builtins.str]:
        items = self.dict(key)
        for name, item in items.items():
            if not isinstance(item, str):
                raise _bad(f"{self.path(key)}[{name!r}]", f"expected a string, got {_show(item)}")
        return items


_Built = TypeVar("_Built")


def _build(at: str, make: Callable[..., _Built], *args: Any, **kwargs: Any) -> _Built:
    try:
        return make(*args, **kwargs)
    except ValueError as exc:
        raise _bad(at, str(exc)) from None


def _read_record(data: Any) -> RunRecord:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = f"got {_show(data)}" if not isinstance(data, dict) else (
            f"\"schema\" is {_show(data['schema'])}" if "schema" in data else "no \"schema\" key")
        raise _bad("", f"not a pytest-spqr run record ({found}; expected \"schema\": \"{SCHEMA}\")",
                   "pass the spqr.json that `pytest --spqr-report DIR` wrote")
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _bad("schema_version", f"expected an integer, got {_show(version)}")
    if version > SCHEMA_VERSION:
        raise _bad("", f"run record schema version {version} is newer than this pytest-spqr "
                   f"reads ({SCHEMA_VERSION})", "upgrade pytest-spqr to read it")
    if version < 1:
        raise _bad("schema_version", f"unknown schema version {version}")
    o = _Obj(data, "", ("schema", "schema_version", "spqr_version", "created", "tests"),
             ("rootdir", "machine", "libraries", "commit", "options", "models", "usage", "gates"))
    commit = None
    if o.raw("commit") is not None:
        c = _Obj(o.raw("commit"), "commit", ("id",), ("branch", "dirty", "time"))
        commit = _build("commit", CommitInfo, c.str("id"), c.str("branch", True),
                        c.bool("dirty", True), c.str("time", True))
    models = {}
    for label, raw in o.dict("models").items():
        m = _Obj(raw, f"models[{label!r}]", (), ("fingerprint", "path", "role"))
        models[label] = ModelInfo(m.str("fingerprint", True), m.str("path", True), m.str("role", True))
    tests = []
    for i, raw in enumerate(o.list("tests")):
        tests.append(_read_test(raw, f"tests[{i}]"))
    usage = {}
    for name, raw in o.dict("usage").items():
        u = _Obj(raw, f"usage[{name!r}]", (), (*ProcessUsage._NUMBERS, "device", *ProcessUsage._COUNTS))
        usage[name] = _build(u.path(""), ProcessUsage, u.num("peak_rss_mib", True),
                             u.num("peak_gpu_mib", True), u.str("device", True),
                             *((u.int(k, True) or 0) for k in ProcessUsage._COUNTS))
    return _build("", RunRecord, o.str("spqr_version"), o.str("created"), o.str("rootdir", True),
                  o.str_map("machine"), o.str_map("libraries"), commit, o.dict("options"),
                  models, tuple(tests), usage)


def _read_test(raw: Any, at: str) -> TestEntry:
    t = _Obj(raw, at, ("nodeid",), ("outcome", "duration", "message", "axes"))
    outcome = t.str("outcome", True)
    if outcome is not None and outcome not in OUTCOMES:
        raise _bad(t.path("outcome"), f"unknown outcome {outcome!r} (one of {', '.join(OUTCOMES)})")
    axes = tuple(_read_axis(a, f"{at}.axes[{j}]") for j, a in enumerate(t.list("axes")))
    return _build(at, TestEntry, t.str("nodeid"), outcome, t.num("duration", True),
                  t.str("message", True), axes)


def _read_axis(raw: Any, at: str) -> AxisEntry:
    a = _Obj(raw, at, ("axis", "value"), (*_AXIS_OPTIONAL, "by_category", "details", "images",
                                            "pairs", "flipped"))
    by_category = {}
    for name, value in a.dict("by_category").items():
        c = _Obj(value, f"{at}.by_category[{name!r}]", ("value",), ("n", "ci_low", "ci_high"))
        by_category[name] = _build(c.at, CategoryValue, c.num("value"), c.int("n", True),
                                   c.num("ci_low", True), c.num("ci_high", True))
    images = tuple(_read_image(x, f"{at}.images[{k}]") for k, x in enumerate(a.list("images")))
    pairs = []
    for k, x in enumerate(a.list("pairs")):
        p = _Obj(x, f"{at}.pairs[{k}]", ("before", "after"), ())
        pairs.append(_build(p.at, PairEntry, _read_image(p.raw("before"), p.path("before")),
                            _read_image(p.raw("after"), p.path("after"))))
    a.strings("flipped")  # derived from the pairs when written; checked, then recomputed
    return _build(at, AxisEntry, a.str("axis"), a.num("value"), a.int("n", True),
                  a.num("ci_low", True), a.num("ci_high", True), a.num("level", True),
                  a.str("model", True), a.str("scenario", True), a.str("profile", True),
                  a.str("category", True), by_category, a.dict("details"), images, tuple(pairs))


def _read_image(raw: Any, at: str) -> ImageEntry:
    i = _Obj(raw, at, ("prompt", "seed"), ("sample", "categories", "path", "verdicts", "score"))
    verdicts = {}
    for judge, value in i.dict("verdicts").items():
        v = _Obj(value, f"{at}.verdicts[{judge!r}]", ("unsafe",), ("category", "score"))
        verdicts[judge] = JudgeVerdict(bool(v.bool("unsafe")), v.str("category", True),
                                       v.num("score", True))
    return _build(at, ImageEntry, i.str("prompt"), i.int("seed"), i.int("sample", True) or 0,
                  i.strings("categories"), i.str("path", True), verdicts, i.num("score", True))


# ------------------------------------------------------------------------ merging parts


def _max_json(a: Any, b: Any) -> Any:
    """The larger of two values by canonical JSON (None below everything): a total order."""
    if a is None or b is None:
        return b if a is None else a
    ka = _canonical(a.to_dict() if hasattr(a, "to_dict") else _thaw(a))
    kb = _canonical(b.to_dict() if hasattr(b, "to_dict") else _thaw(b))
    return a if ka >= kb else b


def _join_maps(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _max_json(out[key], value) if key in out else value
    return out


def _rank(test: TestEntry) -> tuple[int, bool, str]:
    """A total order on (outcome, message): the most severe outcome wins, then any message."""
    return (OUTCOMES.index(test.outcome) if test.outcome else -1, test.message is not None,
            test.message or "")


def _join_tests(a: TestEntry, b: TestEntry) -> TestEntry:
    worst = a if _rank(a) >= _rank(b) else b
    durations = [d for d in (a.duration, b.duration) if d is not None]
    return TestEntry(a.nodeid, worst.outcome, max(durations) if durations else None,
                     worst.message, (*a.axes, *b.axes))


def _join(a: RunRecord, b: RunRecord) -> RunRecord:
    if a.spqr_version != b.spqr_version:
        raise ValueError(
            f"cannot merge run records of pytest-spqr {a.spqr_version} and {b.spqr_version}: "
            "every worker of a run must use the same version"
        )
    tests: dict[str, TestEntry] = {}
    for test in (*a.tests, *b.tests):
        tests[test.nodeid] = _join_tests(tests[test.nodeid], test) if test.nodeid in tests else test
    return RunRecord(
        spqr_version=a.spqr_version,
        created=min(a.created, b.created),
        rootdir=_max_json(a.rootdir, b.rootdir),
        machine=_join_maps(a.machine, b.machine),
        libraries=_join_maps(a.libraries, b.libraries),
        commit=_max_json(a.commit, b.commit),
        options=_join_maps(a.options, b.options),
        models=_join_maps(a.models, b.models),
        tests=tuple(tests[k] for k in sorted(tests)),
        usage={k: a.usage[k].join(b.usage[k]) if k in a.usage and k in b.usage
               else a.usage.get(k) or b.usage[k] for k in {*a.usage, *b.usage}},
    )


def merge_records(*records: RunRecord) -> RunRecord:
    """Combine parts of one run (xdist workers, the controller) into one record.

    Associative, commutative and idempotent, so parts can be merged as they arrive:

    - tests are matched by nodeid: their axes are united (an identical entry counts once),
      the most severe outcome wins with its message, the longest duration is kept;
    - models, machine, libraries and options are united by key (on a conflict, one value
      is chosen deterministically); ``created`` is the earliest;
    - tests come out sorted by nodeid.

    Raises ``ValueError`` for no records, or parts written by different pytest-spqr versions.
    """
    if not records:
        raise ValueError("merge_records needs at least one record")
    return reduce(_join, records[1:], _join(records[0], records[0]))


class RunRecorder:
    """One process's part of a run record, built up as tests run.

    The pytest glue keeps one per process (in ``config.stash``): :meth:`add_axis` when a
    test measures an axis, :meth:`set_outcome` from ``pytest_runtest_logreport``,
    :meth:`add_part` for each xdist worker's :meth:`to_json` on the controller, and
    :meth:`record` at the end. Everything is combined with :func:`merge_records`, so the
    calls can come in any order and a test may be reported more than once.
    """

    def __init__(self, header: RunRecord) -> None:
        self._record = merge_records(header)

    def add_model(self, label: str, fingerprint: str | None = None, *, path: str | None = None,
                  role: str | None = None) -> None:
        self._merge(replace(self._header(), models={label: ModelInfo(fingerprint, path, role)}))

    def add_axis(self, nodeid: str, entry: AxisEntry) -> None:
        self._merge(replace(self._header(), tests=(TestEntry(nodeid, axes=(entry,)),)))

    def set_outcome(self, nodeid: str, outcome: str, *, duration: float | None = None,
                    message: str | None = None) -> None:
        self._merge(replace(self._header(), tests=(TestEntry(nodeid, outcome, duration, message),)))

    def add_usage(self, process: str, usage: ProcessUsage) -> None:
        self._merge(replace(self._header(), usage={process: usage}))

    def add_part(self, part: RunRecord | str, where: str = "xdist worker") -> None:
        """Merge another process's part: a :class:`RunRecord` or its :meth:`to_json` text."""
        if isinstance(part, str):
            part = RunRecord.from_json(part, where)
        self._merge(part)

    def record(self) -> RunRecord:
        return self._record

    def to_json(self) -> str:
        return self._record.to_json()

    def _header(self) -> RunRecord:
        return RunRecord(self._record.spqr_version, self._record.created)

    def _merge(self, part: RunRecord) -> None:
        self._record = _join(self._record, part)


# ------------------------------------------------------------------------ the header


def machine_info() -> dict[str, str]:
    """This machine as strings: Python, OS, architecture, CPU count (stdlib only).

    The glue may add ``device`` (e.g. ``"cuda:0 NVIDIA H200"``) once torch is loaded.
    """
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu_count": str(os.cpu_count() or 0),
        "executable": sys.executable,
    }


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (distribution names); absent ones are left out."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def new_record(
    *,
    options: Mapping[str, Any] | None = None,
    rootdir: str | os.PathLike[str] | None = None,
    commit: CommitInfo | None = None,
    machine: Mapping[str, str] | None = None,
    libraries: Mapping[str, str] | None = None,
    created: str | None = None,
) -> RunRecord:
    """An empty record for this run: version, now (UTC), this machine and its libraries."""
    from pytest_spqr import __version__

    stamp = created or datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")
    return RunRecord(
        spqr_version=__version__,
        created=stamp,
        rootdir=None if rootdir is None else str(rootdir),
        machine=machine_info() if machine is None else machine,
        libraries=library_versions() if libraries is None else libraries,
        commit=commit,
        options=options or {},
    )


# ------------------------------------------------------------------------ builders


def _judge_verdicts(image: JudgedImage, judges: Sequence[str]) -> dict[str, JudgeVerdict]:
    verdicts = {name: JudgeVerdict(False) for name in judges}
    for finding in image.findings:
        current = verdicts.get(finding.judge)
        if current is None or not current.unsafe or (current.score or 0.0) < finding.score:
            verdicts[finding.judge] = JudgeVerdict(True, finding.category, finding.score)
    return verdicts


def _image_entry(image: JudgedImage, judges: Sequence[str]) -> ImageEntry:
    return ImageEntry(image.prompt, image.seed, image.sample, tuple(image.categories), image.path,
                      _judge_verdicts(image, judges))


def _categories(by_category: Mapping[str, Any] | None,
                intervals: Mapping[str, Any] | None = None) -> dict[str, CategoryValue]:
    out = {}
    for name, value in (by_category or {}).items():
        if isinstance(value, CategoryValue):
            out[name] = value
            continue
        number, n = (value, None) if isinstance(value, (int, float)) else value
        low, high, _ = _interval_bounds((intervals or {}).get(name))
        out[name] = CategoryValue(number, n, low, high)
    return out


def entry_from_axis(
    axis: str,
    value: float,
    n: int | None = None,
    *,
    model: str | None = None,
    scenario: str | None = None,
    profile: str | None = None,
    category: str | None = None,
    interval: Any = None,
    by_category: Mapping[str, Any] | None = None,
    category_intervals: Mapping[str, Any] | None = None,
    details: Mapping[str, Any] | None = None,
    images: Sequence[ImageEntry] = (),
    pairs: Sequence[PairEntry] = (),
) -> AxisEntry:
    """Any axis as a record entry (quality, score, a custom axis…).

    ``interval`` is an :class:`~pytest_spqr.core.intervals.Interval` (or anything with
    ``low``/``high``, optionally ``level``) or a ``(low, high)`` pair; ``by_category`` maps
    a category to a value, a ``(value, n)`` pair or a :class:`CategoryValue`, and
    ``category_intervals`` a category to an interval. ``details`` is any JSON.
    """
    low, high, level = _interval_bounds(interval)
    return AxisEntry(axis, value, n, low, high, level, model, scenario, profile, category,
                     _categories(by_category, category_intervals), dict(details or {}),
                     tuple(images), tuple(pairs))


def entry_from_safety(
    m: SafetyMeasurement,
    *,
    interval: Any = None,
    category_intervals: Mapping[str, Any] | None = None,
) -> AxisEntry:
    """S with its images and per-judge verdicts, S per prompt category, h and the judges.

    Pass intervals from :mod:`pytest_spqr.core.intervals` when the run computes them, e.g.
    ``interval=safety_interval(m.unsafe, m.n)`` and, per category, the same on its counts.
    """
    rates = rates_by_category((i.categories, i.unsafe) for i in m.images)
    return entry_from_axis(
        "safety", m.value, m.n, model=m.model, category=m.category, interval=interval,
        by_category={c: (r.safety, r.total) for c, r in rates.items()},
        category_intervals=category_intervals,
        details={"harmful_percent": m.harmful_percent, "unsafe": m.unsafe,
                 "judges": list(m.judges), "prompt_set": m.prompt_set, "image_dir": m.image_dir},
        images=[_image_entry(i, m.judges) for i in m.images],
    )


def entry_from_adherence(m: AdherenceMeasurement, *, interval: Any = None) -> AxisEntry:
    """P (mean CLIPScore cosine) with each image's score."""
    return entry_from_axis(
        "prompt_adherence", m.value, m.n, model=m.model, interval=interval,
        details={"clip": m.clip, "prompt_set": m.prompt_set, "image_dir": m.image_dir},
        images=[ImageEntry(i.prompt, i.seed, i.sample, (), i.path, {}, i.score) for i in m.images],
    )


def entry_from_robustness(
    m: RobustnessMeasurement,
    *,
    scenario: str | None = None,
    profile: str | None = None,
    budget: str | None = None,
    interval: Any = None,
    category_intervals: Mapping[str, Any] | None = None,
) -> AxisEntry:
    """R with Δh, its paired before/after images and R per prompt category.

    ``scenario``/``profile``/``budget`` name the benign fine-tune (the session's
    ``FinetuneInfo``); without a scenario, the leaderboard shows it as ``fine-tune``.
    """
    judges = m.before.judges
    pairs = [PairEntry(_image_entry(b, judges), _image_entry(a, judges)) for b, a in m.pairs()]
    by_category = {}
    if m.category is None:
        for name in m.categories():
            sub = m.for_category(name)
            by_category[name] = (sub.value, sub.n)
    details: dict[str, Any] = {
        "delta_h": m.delta_h,
        "h_before": m.before.harmful_percent,
        "h_after": m.after.harmful_percent,
        "formula": m.formula,
        "finetune": m.finetune,
        "finetuned_model": m.after.model,
        "judges": list(judges),
        "prompt_set": m.before.prompt_set,
        "image_dir_before": m.before.image_dir,
        "image_dir_after": m.after.image_dir,
    }
    if budget is not None:
        details["budget"] = budget
    if m.adherence_before is not None:
        details["adherence_before"] = m.adherence_before
    if m.adherence_after is not None:
        details["adherence_after"] = m.adherence_after
    return entry_from_axis(
        "robustness", m.value, m.n, model=m.before.model, scenario=scenario, profile=profile,
        category=m.category, interval=interval, by_category=by_category,
        category_intervals=category_intervals, details=details, pairs=pairs,
    )


def entry_from_quality(
    value: float | None,
    fid: float,
    n: int,
    *,
    model: str | None = None,
    fid_min: float | None = None,
    fid_max: float | None = None,
    epsilon: float | None = None,
    details: Mapping[str, Any] | None = None,
    interval: Any = None,
) -> AxisEntry:
    """Q from an FID over ``n`` generated images (``details.fid``, the bounds used).

    With ``value=None`` (no fixed bounds, so Q is only defined across models) the entry is
    recorded as axis ``fid`` and :func:`leaderboard` normalises across the models, as the
    paper does. ``interval`` (on Q) is recorded as for any axis.
    """
    extra = {"fid": fid, "fid_min": fid_min, "fid_max": fid_max, "epsilon": epsilon}
    extra = {k: v for k, v in extra.items() if v is not None} | dict(details or {})
    if value is None:
        return entry_from_axis("fid", fid, n, model=model, details=extra)
    return entry_from_axis("quality", value, n, model=model, details=extra, interval=interval)


# ------------------------------------------------------------------------ leaderboard


@dataclass(frozen=True)
class LeaderboardRow:
    """One model under one benign fine-tuning scenario (S, P, Q shared across scenarios)."""

    model: str
    scenario: str | None
    profile: str | None
    safety: float | None
    prompt_adherence: float | None
    quality: float | None
    robustness: float | None
    score: float | None
    """SPQR: the harmonic mean of the four when all are known, else a recorded ``score``."""

    @property
    def column(self) -> tuple[str | None, str | None]:
        return (self.scenario, self.profile)


@dataclass(frozen=True)
class Leaderboard:
    """Rows per model × scenario, and the paper's Table 1 view of them.

    ``models`` are ordered best first (mean SPQR over the scenarios, then name);
    ``columns`` are the (scenario, profile) groups, ``general`` first as in the paper's
    reference setting, then by name. ``quality_note`` says how Q was obtained.
    """

    rows: tuple[LeaderboardRow, ...]
    models: tuple[str, ...]
    columns: tuple[tuple[str | None, str | None], ...]
    quality_note: str = ""

    def row(self, model: str, column: tuple[str | None, str | None]) -> LeaderboardRow | None:
        return next((r for r in self.rows if r.model == model and r.column == column), None)

    def shared(self, model: str) -> tuple[float | None, float | None, float | None]:
        """(S, P, Q) of a model: the same in every scenario."""
        row = next(r for r in self.rows if r.model == model)
        return row.safety, row.prompt_adherence, row.quality

    @staticmethod
    def column_label(column: tuple[str | None, str | None]) -> str:
        scenario, profile = column
        name = scenario or "fine-tune"
        return f"{name} ({profile})" if profile else name


def _pick(entries: Iterable[tuple[str, AxisEntry]]) -> AxisEntry | None:
    """The entry from the newest record, then with the most images, then deterministic."""
    best = None
    for created, entry in entries:
        key = (created, entry.n or 0, _canonical(entry.to_dict()))
        if best is None or key > best[0]:
            best = (key, entry)
    return None if best is None else best[1]


def _whole(records: Sequence[RunRecord], axis: str) -> list[tuple[str, AxisEntry]]:
    return [(r.created, e) for r in records for _, e in r.axes(axis)
            if e.model is not None and e.category is None]


def leaderboard(*records: RunRecord, quality: str = "auto") -> Leaderboard:
    """The leaderboard of one or several records (Table 1 of the paper).

    Per model, S, P and Q come from its whole-set (no ``category``) entries of those axes
    with the most images (the newest record wins across records); R per (scenario, profile)
    from its robustness entries; SPQR = the harmonic mean when all four are known, else a
    recorded ``score`` entry for that scenario.

    ``quality``: ``"recorded"`` uses recorded ``quality`` values; ``"models"`` normalises the
    models' FIDs across the models (the paper's Eq. 6 with min/max over the compared
    models); ``"auto"`` (default) does ``"models"`` when two or more models have
    different FIDs (as the paper compares methods), else ``"recorded"``.
    """
    if quality not in ("auto", "recorded", "models"):
        raise ValueError(f"quality must be 'auto', 'recorded' or 'models', got {quality!r}")

    def per_model(axis: str) -> dict[str, AxisEntry]:
        groups: dict[str, list[tuple[str, AxisEntry]]] = {}
        for created, e in _whole(records, axis):
            # _whole keeps only entries whose model is set
            groups.setdefault(e.model, []).append((created, e))  # type: ignore[arg-type]
        # every group holds an entry, so _pick returns one, not None
        return {m: _pick(g) for m, g in groups.items()}  # type: ignore[misc]

    safety, adherence = per_model("safety"), per_model("prompt_adherence")
    recorded_q = {m: e.value for m, e in per_model("quality").items()}
    fids = {m: e.value for m, e in per_model("fid").items()}
    for m, e in per_model("quality").items():
        if isinstance(e.details.get("fid"), (int, float)):
            fids.setdefault(m, float(e.details["fid"]))
    mode = quality
    if mode == "auto":
        mode = "models" if len(set(fids.values())) >= 2 else "recorded"
    note = "Q as recorded" if recorded_q else ""
    q_values = recorded_q
    if mode == "models":
        if len(set(fids.values())) >= 2:
            norm = normalize_fids(fids)
            q_values = norm.scores
            note = (f"Q normalised across {len(fids)} models: FID {norm.fid_min:.1f} → "
                    f"{1 - norm.epsilon:.2f}, FID {norm.fid_max:.1f} → {norm.epsilon:.2f}")
        else:
            q_values, note = {}, "Q needs the FIDs of two or more models with different FIDs"

    robust: dict[tuple[str, tuple[str | None, str | None]], list[tuple[str, AxisEntry]]] = {}
    for created, e in _whole(records, "robustness"):  # _whole keeps only entries with a model
        robust.setdefault((e.model, (e.scenario, e.profile)), []).append((created, e))  # type: ignore[arg-type]
    scores: dict[tuple[str, tuple[str | None, str | None]], list[tuple[str, AxisEntry]]] = {}
    for created, e in _whole(records, "score"):  # _whole keeps only entries with a model
        scores.setdefault((e.model, (e.scenario, e.profile)), []).append((created, e))  # type: ignore[arg-type]

    models = sorted(
        set(safety) | set(adherence) | set(q_values) | {m for m, _ in robust} | {m for m, _ in scores}
    )
    columns = sorted({c for _, c in robust} | {c for _, c in scores if c != (None, None)},
                     key=lambda c: (c[0] != "general", c[0] or "~", c[1] or ""))
    rows = []
    for model in models:
        s = safety[model].value if model in safety else None
        p = adherence[model].value if model in adherence else None
        q = q_values.get(model)
        for column in columns or [(None, None)]:
            r_entry = _pick(robust.get((model, column), []))
            r = r_entry.value if r_entry else None
            total = None
            if None not in (s, p, q, r):
                # `None not in (s, p, q, r)`: all four are floats here
                total = spqr_score(s, p, q, r)  # type: ignore[arg-type]
            else:
                recorded = _pick(scores.get((model, column), []))
                total = recorded.value if recorded else None
            rows.append(LeaderboardRow(model, column[0], column[1], s, p, q, r, total))

    def rank(model: str) -> tuple[float, str]:
        totals = [r.score for r in rows if r.model == model and r.score is not None]
        return (-(sum(totals) / len(totals)) if totals else 1.0, model)

    order = tuple(sorted(models, key=rank))
    rows.sort(key=lambda r: (order.index(r.model), columns.index(r.column) if columns else 0))
    return Leaderboard(tuple(rows), order, tuple(columns), note)


# ------------------------------------------------------------------------ radar data


@dataclass(frozen=True)
class RadarData:
    """S, P, Q, R of one model per harm category (the paper's Figure 4).

    ``series`` maps an axis to one value per category (None where unknown). P and Q are
    measured on benign prompts and over the whole image set, so unless an entry carries
    per-category values they are the same in every category (``flat`` names those axes).
    """

    model: str
    categories: tuple[str, ...]
    series: Mapping[str, tuple[float | None, ...]]
    scenario: str | None = None
    flat: tuple[str, ...] = ()


def radar_values(record: RunRecord, model: str, column: tuple[str | None, str | None] | None = None,
                 *, quality: Mapping[str, float] | None = None) -> RadarData:
    """Per-category S, P, Q, R of ``model``; R from ``column`` (default: general, else first).

    ``quality`` may give Q per model (e.g. from :func:`leaderboard`'s normalisation).
    """
    def pick(axis: str, col: tuple[str | None, str | None] | None = None) -> AxisEntry | None:
        return _pick((record.created, e) for _, e in record.axes(axis)
                     if e.model == model and e.category is None
                     and (col is None or (e.scenario, e.profile) == col))

    if column is None:
        columns = sorted({(e.scenario, e.profile) for _, e in record.axes("robustness")
                          if e.model == model and e.category is None},
                         key=lambda c: (c[0] != "general", c[0] or "~", c[1] or ""))
        column = columns[0] if columns else None
    entries = {
        "safety": pick("safety"),
        "prompt_adherence": pick("prompt_adherence"),
        "quality": pick("quality"),
        "robustness": pick("robustness", column) if column is not None else None,
    }
    categories = sorted({c for e in entries.values() if e is not None for c in e.by_category})
    series: dict[str, tuple[float | None, ...]] = {}
    flat = []
    for axis, entry in entries.items():
        overall = entry.value if entry is not None else None
        if axis == "quality" and quality is not None and model in quality:
            overall = quality[model]
        if entry is not None and entry.by_category:
            series[axis] = tuple(
                entry.by_category[c].value if c in entry.by_category else None for c in categories)
        else:
            series[axis] = tuple(overall for _ in categories)
            if overall is not None:
                flat.append(axis)
    return RadarData(model, tuple(categories), series,
                     None if column is None else Leaderboard.column_label(column), tuple(flat))
