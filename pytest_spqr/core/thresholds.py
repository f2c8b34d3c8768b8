"""Read and check ``thresholds.toml``: the release gates and the settings behind them.

The file is small and every key is optional (see the commented ``thresholds.toml`` at
the repository root)::

    [gates]                        # minimum per axis, each in [0, 1]
    safety = 0.90
    score = 0.45

    [suites."suites/test_nudity.py"]   # overrides for the tests this glob matches
    safety = 0.95

    [judges]
    use = ["nudenet"]
    from_model = false             # true: a model's spqr.toml may fill in judges and settings
    [judges.nudenet]               # keyword settings for that judge's factory
    threshold = 0.5

    [evaluation]                   # the gate owner's sampler, prompts, CLIP, FID and BFT
    steps = 50                     # settings (core.evaluation): they win over the model's
    prompts = "builtin:harmful"    # spqr.toml; relative paths are relative to this file

    [quality]
    fid_min = 10.0
    fid_max = 250.0
    epsilon = 0.05

    [robustness]
    formula = "normalized"

    [statistics]                   # how sure a gate must be (core.intervals, core.outcomes)
    confidence = 0.95
    inconclusive = "fail"          # or "warn", "pass"; also per suite

    [bft.profiles.lite-te]         # benign fine-tuning profiles and budgets (core.bft)
    base = "lite"
    text_encoder = true

Anything wrong raises :class:`SpqrConfigError` with one line of the form
``<file>: [table] <what is wrong> — <how to fix>``.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from os import PathLike
from types import MappingProxyType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

from pytest_spqr.core.bft import BftCatalog, parse_bft_table
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.evaluation import CHECKS, parse_evaluation, show
from pytest_spqr.core.outcomes import INCONCLUSIVE_POLICIES
from pytest_spqr.core.scores import ROBUSTNESS_FORMULAS

AXES: tuple[str, ...] = ("safety", "prompt_adherence", "quality", "robustness", "score")
"""Axis names, as used in gates, JUnit properties (``spqr.<axis>``) and reports."""

DEFAULT_EPSILON = 0.05
DEFAULT_ROBUSTNESS_FORMULA = ROBUSTNESS_FORMULAS[0]

_TABLES = ("gates", "suites", "judges", "quality", "robustness", "statistics", "bft", "evaluation")
_EVALUATION_KEYS = tuple(key for key in CHECKS if key != "judges")
"""[evaluation] keys a gate file may set: every one a model's spqr.toml may, but the judges,
which the gate file chooses in [judges] use."""
_QUALITY_KEYS = ("fid_min", "fid_max", "epsilon")
_ROBUSTNESS_KEYS = ("formula",)
_STATISTICS_KEYS = ("confidence", "inconclusive")
DEFAULT_CONFIDENCE = 0.95
DEFAULT_INCONCLUSIVE = INCONCLUSIVE_POLICIES[0]


@dataclass(frozen=True)
class Gates:
    """Minimum score per axis; ``None`` means that axis is not gated."""

    safety: float | None = None
    prompt_adherence: float | None = None
    quality: float | None = None
    robustness: float | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        for axis in AXES:
            value = getattr(self, axis)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0.0 <= value <= 1.0
            ):
                raise ValueError(f"Gates.{axis} must be None or a number in [0, 1], got {value!r}")

    def get(self, axis: str) -> float | None:
        """The minimum for ``axis`` (one of :data:`AXES`), or ``None``."""
        minimum: float | None = getattr(self, _check_axis(axis))
        return minimum

    def as_dict(self) -> dict[str, float]:
        """The gated axes only, in :data:`AXES` order."""
        return {axis: value for axis in AXES if (value := getattr(self, axis)) is not None}


@dataclass(frozen=True)
class SuiteGates:
    """Gates that apply to the tests whose nodeid matches ``pattern``.

    ``pattern`` is an :func:`fnmatch.fnmatchcase` glob matched against the whole nodeid,
    or against a path prefix of it: ``"suites/test_x.py"`` covers
    ``"suites/test_x.py::test_a[1]"`` and ``"suites"`` covers ``"suites/test_x.py::t"``.
    """

    pattern: str
    gates: Gates = field(default_factory=Gates)
    inconclusive: str | None = None
    """What an inconclusive gate does to these tests (``fail``/``warn``/``pass``), if set."""

    def matches(self, nodeid: str) -> bool:
        prefix = self.pattern.rstrip("/") or self.pattern
        if nodeid == prefix or nodeid.startswith(tuple(prefix + sep for sep in ("::", "/", "["))):
            return True
        return any(fnmatchcase(nodeid, prefix + tail) for tail in ("", "::*", "/*", "[*"))


@dataclass(frozen=True)
class Thresholds:
    """Everything ``thresholds.toml`` says, checked. Build it with :func:`load_thresholds`.

    ``judges`` is ``None`` when the file does not choose (the plugin's default applies);
    ``judge_settings`` maps a judge name to the keyword arguments for its factory, with
    TOML arrays frozen into tuples. ``fid_min``/``fid_max`` are both set or both ``None``.
    """

    gates: Gates = field(default_factory=Gates)
    suites: tuple[SuiteGates, ...] = ()
    judges: tuple[str, ...] | None = None
    judge_settings: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    fid_min: float | None = None
    fid_max: float | None = None
    epsilon: float = DEFAULT_EPSILON
    robustness_formula: str = DEFAULT_ROBUSTNESS_FORMULA
    confidence: float = DEFAULT_CONFIDENCE
    """Level of every interval a gate is read through (``[statistics] confidence``)."""
    inconclusive: str = DEFAULT_INCONCLUSIVE
    """What a gate whose interval straddles its minimum does (``[statistics] inconclusive``)."""
    bft: BftCatalog = field(default_factory=BftCatalog, compare=False)
    """Benign fine-tuning profiles and budgets: the built-in ones plus ``[bft.*]``."""
    evaluation: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """``[evaluation]``: the gate owner's steps, prompts, CLIP…, checked as the options are;
    they win over a model's spqr.toml (paths resolved against this file's folder)."""
    judges_from_model: bool = False
    """``[judges] from_model = true``: the gate owner lets a model's spqr.toml fill in the
    judges and judge settings this file leaves unset."""
    source: str | None = field(default=None, compare=False)
    """The file these came from, for messages; ``None`` for :meth:`default`."""

    def __post_init__(self) -> None:
        low, high = self.fid_min, self.fid_max
        if (low is None) != (high is None):
            raise ValueError("Thresholds.fid_min and fid_max must both be set or both be None")
        if low is not None and high is not None and not 0.0 <= low < high:
            raise ValueError(
                f"Thresholds needs 0 <= fid_min < fid_max, got {self.fid_min!r}, {self.fid_max!r}"
            )
        if not 0.0 <= self.epsilon < 0.5:
            raise ValueError(f"Thresholds.epsilon must be in [0, 0.5), got {self.epsilon!r}")
        if self.robustness_formula not in ROBUSTNESS_FORMULAS:
            raise ValueError(
                f"Thresholds.robustness_formula must be one of {ROBUSTNESS_FORMULAS}, "
                f"got {self.robustness_formula!r}"
            )
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"Thresholds.confidence must be in (0, 1), got {self.confidence!r}")
        if self.inconclusive not in INCONCLUSIVE_POLICIES:
            raise ValueError(
                f"Thresholds.inconclusive must be one of {INCONCLUSIVE_POLICIES}, "
                f"got {self.inconclusive!r}"
            )

    @classmethod
    def default(cls) -> Thresholds:
        """No gates, no judge choice, no FID bounds, ε = 0.05, normalized robustness."""
        return cls()

    def gate_for(self, nodeid: str, axis: str) -> float | None:
        """The minimum ``axis`` score for the test ``nodeid``, or ``None`` if ungated.

        Per axis, the longest matching suite pattern that sets the axis wins (the first
        in the file on a tie); otherwise ``[gates]`` applies.
        """
        _check_axis(axis)
        matching = [suite for suite in self.suites if suite.matches(nodeid)]
        for suite in sorted(matching, key=lambda suite: -len(suite.pattern)):
            value = suite.gates.get(axis)
            if value is not None:
                return value
        return self.gates.get(axis)

    def inconclusive_for(self, nodeid: str) -> str:
        """The inconclusive policy for ``nodeid``: the longest matching suite that sets
        one, else ``[statistics] inconclusive``."""
        matching = [suite for suite in self.suites if suite.matches(nodeid) and suite.inconclusive]
        if matching:
            return max(matching, key=lambda suite: len(suite.pattern)).inconclusive or ""
        return self.inconclusive


def load_thresholds(path: str | PathLike[str]) -> Thresholds:
    """Read and check a ``thresholds.toml``; raises :class:`SpqrConfigError`."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise SpqrConfigError(
            f"{source}: thresholds file not found — "
            "pass --spqr-thresholds=PATH with an existing file"
        ) from None
    except OSError as exc:
        raise SpqrConfigError(
            f"{source}: cannot read the thresholds file ({exc.strerror or exc}) — "
            "pass --spqr-thresholds=PATH with a readable TOML file"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpqrConfigError(
            f"{source}: not UTF-8 text (byte {exc.start}) — save the file as UTF-8"
        ) from None
    return parse_thresholds(text, source)


def parse_thresholds(text: str, source: str = "<string>") -> Thresholds:
    """Check the TOML ``text`` of a thresholds file; ``source`` names it in messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpqrConfigError(_toml_error_line(source, exc)) from None
    return _Parser(source).thresholds(data)


def _check_axis(axis: str) -> str:
    if axis not in AXES:
        close = _closest(axis, AXES)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ValueError(f"unknown axis {axis!r}{hint}; the axes are {', '.join(AXES)}")
    return axis


def _toml_error_line(source: str, exc: tomllib.TOMLDecodeError) -> str:
    message = " ".join(str(exc).split())
    where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if where:
        return (
            f"{source}: line {where[1]}, column {where[2]}: invalid TOML "
            f"({message[: where.start()]}) — fix the syntax there (see https://toml.io)"
        )
    return f"{source}: invalid TOML ({message}) — fix the syntax (see https://toml.io)"


def _closest(word: str, choices: tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1)
    return close[0] if close else None


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"  # TOML dates and times


class _Parser:
    """Turns the decoded TOML document into :class:`Thresholds`, one table at a time."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, table: str | None, problem: str, fix: str) -> SpqrConfigError:
        where = f"[{table}] " if table else ""
        return SpqrConfigError(f"{self.source}: {where}{problem} — {fix}")

    def thresholds(self, data: dict[str, Any]) -> Thresholds:
        for key, value in data.items():
            if key not in _TABLES:
                raise self._unknown_top_level(key, value)
            if not isinstance(value, dict):
                raise self._not_a_table(key, value)
        judges, judge_settings, from_model = self.judges(data.get("judges", {}))
        fid_min, fid_max, epsilon = self.quality(data.get("quality", {}))
        confidence, inconclusive = self.statistics(data.get("statistics", {}))
        return Thresholds(
            gates=self.gates("gates", data.get("gates", {})),
            suites=self.suites(data.get("suites", {})),
            judges=judges,
            judge_settings=judge_settings,
            fid_min=fid_min,
            fid_max=fid_max,
            epsilon=epsilon,
            robustness_formula=self.robustness(data.get("robustness", {})),
            confidence=confidence,
            inconclusive=inconclusive,
            bft=parse_bft_table(data.get("bft", {}), self.source),
            evaluation=MappingProxyType(parse_evaluation(
                data.get("evaluation", {}), self.source, allow=_EVALUATION_KEYS,
                not_here={"judges": 'choose judges in [judges] use = [...]'},
            )),
            judges_from_model=from_model,
            source=self.source,
        )

    def _unknown_top_level(self, key: str, value: object) -> SpqrConfigError:
        if isinstance(value, dict):
            close = _closest(key, _TABLES)
            fix = (
                f"did you mean [{close}]?"
                if close
                else f"the tables are {', '.join(f'[{table}]' for table in _TABLES)}"
            )
            return self.fail(None, f"unknown table [{_toml_key(key)}]", fix)
        if key in AXES:
            fix = f"gates go in a table: put {key} = {show(value)} under [gates]"
        elif close := _closest(key, AXES):
            fix = f"did you mean {close!r}, under [gates]?"
        else:
            fix = "every key belongs in a table such as [gates]"
        return self.fail(None, f"unknown top-level key {key!r}", fix)

    def _not_a_table(self, key: str, value: object) -> SpqrConfigError:
        fix = f"write it as a table header [{key}] with its keys on the lines below"
        if key in ("quality", "robustness"):
            fix += f"; to gate the {key} axis, put {key} = {show(value)} under [gates]"
        return self.fail(None, f"{key} = {show(value)} is {_kind(value)}, not a table", fix)

    def unknown_key(self, table: str, key: str, allowed: tuple[str, ...]) -> SpqrConfigError:
        close = _closest(key, allowed)
        fix = f"did you mean {close!r}?" if close else f"the keys are {', '.join(allowed)}"
        return self.fail(table, f"unknown key {key!r}", fix)

    def fraction(self, table: str, key: str, value: object, fix: str) -> float:
        """A number in [0, 1]; ints are fine, booleans are not."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(
                table,
                f"{key} = {show(value)} is {_kind(value)}, expected a number in [0, 1]",
                fix,
            )
        if not 0.0 <= value <= 1.0:
            raise self.fail(table, f"{key} = {show(value)} is outside [0, 1]", fix)
        return float(value)

    def gates(self, table: str, data: dict[str, Any]) -> Gates:
        values: dict[str, float] = {}
        for key, value in data.items():
            if key not in AXES:
                allowed = AXES + (("inconclusive",) if table.startswith("suites.") else ())
                raise self.unknown_key(table, key, allowed)
            values[key] = self.fraction(
                table,
                key,
                value,
                "use a fraction such as 0.9"
                if key != "prompt_adherence"
                else "use a CLIPScore cosine such as 0.25 (not the ×100 value)",
            )
        return Gates(**values)

    def suites(self, data: dict[str, Any]) -> tuple[SuiteGates, ...]:
        suites = []
        for pattern, table_data in data.items():
            table = f"suites.{_toml_key(pattern)}"
            if not isinstance(table_data, dict):
                raise self.fail(
                    "suites",
                    f"{_toml_key(pattern)} = {show(table_data)} is {_kind(table_data)}, "
                    "not a table",
                    f'write [suites."{pattern}"] with axis minimums such as safety = 0.95 below',
                )
            if not pattern.strip():
                raise self.fail(
                    table, "empty suite pattern", 'name the tests, e.g. [suites."suites/test_x.py"]'
                )
            axes = {key: value for key, value in table_data.items() if key != "inconclusive"}
            policy = (
                self.policy(table, table_data["inconclusive"])
                if "inconclusive" in table_data
                else None
            )
            suites.append(SuiteGates(pattern, self.gates(table, axes), policy))
        return tuple(suites)

    def judges(
        self, data: dict[str, Any]
    ) -> tuple[tuple[str, ...] | None, Mapping[str, Mapping[str, Any]], bool]:
        use: tuple[str, ...] | None = None
        settings: dict[str, Mapping[str, Any]] = {}
        from_model = False
        for key, value in data.items():
            if key == "use":
                use = self.judge_names(value)
            elif key == "from_model":
                if not isinstance(value, bool):
                    raise self.fail("judges", f"from_model = {show(value)} is {_kind(value)}",
                                    "write true or false")
                from_model = value
            elif isinstance(value, dict):
                settings[key] = self.judge_table(key, value)
            else:
                fix = (
                    f"did you mean {_closest(key, ('use', 'from_model'))!r}?"
                    if _closest(key, ("use", "from_model"))
                    else f"choose judges with use = [...]; settings go in [judges.{_toml_key(key)}]"
                )
                raise self.fail("judges", f"unknown key {key!r}", fix)
        return use, MappingProxyType(settings), from_model

    def judge_names(self, value: object) -> tuple[str, ...]:
        fix = 'list entry-point names of group pytest_spqr.judges, e.g. use = ["nudenet"]'
        if not isinstance(value, list):
            raise self.fail(
                "judges", f"use = {show(value)} is {_kind(value)}, expected an array", fix
            )
        names: list[str] = []
        for name in value:
            if not isinstance(name, str) or not name.strip():
                raise self.fail(
                    "judges", f"use contains {show(name)}, not a judge name", fix
                )
            if name in names:
                raise self.fail("judges", f"use lists {show(name)} twice", "list each judge once")
            names.append(name)
        return tuple(names)

    def judge_table(self, name: str, data: dict[str, Any]) -> Mapping[str, Any]:
        table = f"judges.{_toml_key(name)}"
        for key, value in data.items():
            if isinstance(value, dict):
                raise self.fail(
                    table,
                    f"key {key!r} is a table",
                    "judge settings are keyword arguments: use strings, numbers, booleans "
                    "or arrays",
                )
        return MappingProxyType({key: _frozen(value) for key, value in data.items()})

    def quality(self, data: dict[str, Any]) -> tuple[float | None, float | None, float]:
        checked: dict[str, float] = {}
        for key, value in data.items():
            if key not in _QUALITY_KEYS:
                raise self.unknown_key("quality", key, _QUALITY_KEYS)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(
                    "quality",
                    f"{key} = {show(value)} is {_kind(value)}, expected a number",
                    "use a plain number such as 0.05" if key == "epsilon"
                    else "use a plain FID value such as 10.0",
                )
            checked[key] = float(value)
        epsilon = checked.get("epsilon", DEFAULT_EPSILON)
        if not 0.0 <= epsilon < 0.5:
            raise self.fail(
                "quality",
                f"epsilon = {show(data['epsilon'])} is outside [0, 0.5)",
                "use a small margin such as 0.05",
            )
        for key in ("fid_min", "fid_max"):
            if key in checked and not 0.0 <= checked[key] < math.inf:
                raise self.fail(
                    "quality",
                    f"{key} = {show(data[key])} is not a finite FID ≥ 0",
                    "use a plain FID value such as 10.0",
                )
        if ("fid_min" in checked) != ("fid_max" in checked):
            present, missing = (
                ("fid_min", "fid_max") if "fid_min" in checked else ("fid_max", "fid_min")
            )
            raise self.fail(
                "quality",
                f"{present} is set but {missing} is not",
                "give both normalisation bounds, or neither",
            )
        fid_min, fid_max = checked.get("fid_min"), checked.get("fid_max")
        if fid_min is not None and fid_max is not None and not fid_min < fid_max:
            raise self.fail(
                "quality",
                f"fid_min = {show(data['fid_min'])} is not below "
                f"fid_max = {show(data['fid_max'])}",
                "fid_min is the best (lowest) FID and fid_max the worst; make fid_min < fid_max",
            )
        return fid_min, fid_max, epsilon

    def robustness(self, data: dict[str, Any]) -> str:
        formula = DEFAULT_ROBUSTNESS_FORMULA
        for key, value in data.items():
            if key not in _ROBUSTNESS_KEYS:
                raise self.unknown_key("robustness", key, _ROBUSTNESS_KEYS)
            choices = " or ".join(f'"{name}"' for name in ROBUSTNESS_FORMULAS)
            if not isinstance(value, str):
                raise self.fail(
                    "robustness",
                    f"formula = {show(value)} is {_kind(value)}, expected a string",
                    f"use {choices}",
                )
            if value not in ROBUSTNESS_FORMULAS:
                close = _closest(value, ROBUSTNESS_FORMULAS)
                fix = f'did you mean "{close}"?' if close else f"use {choices}"
                problem = f"formula = {show(value)} is not a known formula"
                raise self.fail("robustness", problem, fix)
            formula = value
        return formula


    def policy(self, table: str, value: object) -> str:
        choices = ", ".join(f'"{name}"' for name in INCONCLUSIVE_POLICIES)
        if not isinstance(value, str) or value not in INCONCLUSIVE_POLICIES:
            close = _closest(value, INCONCLUSIVE_POLICIES) if isinstance(value, str) else None
            fix = f'did you mean "{close}"?' if close else f"use one of {choices}"
            raise self.fail(table, f"inconclusive = {show(value)} is not a policy", fix)
        return value

    def statistics(self, data: dict[str, Any]) -> tuple[float, str]:
        confidence, inconclusive = DEFAULT_CONFIDENCE, DEFAULT_INCONCLUSIVE
        for key, value in data.items():
            if key not in _STATISTICS_KEYS:
                raise self.unknown_key("statistics", key, _STATISTICS_KEYS)
            if key == "inconclusive":
                inconclusive = self.policy("statistics", value)
                continue
            fix = "use a level such as 0.95 (not 95)"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(
                    "statistics",
                    f"confidence = {show(value)} is {_kind(value)}, expected a number in (0, 1)",
                    fix,
                )
            if not 0.0 < value < 1.0:
                raise self.fail("statistics", f"confidence = {show(value)} is outside (0, 1)", fix)
            confidence = float(value)
        return confidence, inconclusive


def _frozen(value: Any) -> Any:
    """TOML arrays as tuples and inline tables as read-only mappings, recursively."""
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    return value

