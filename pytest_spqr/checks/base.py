"""The evaluation context of one test: its inputs, recording, gates and statistics.

Shared by the axis mixins (:mod:`pytest_spqr.checks.safety`, ``adherence``, ``robustness``,
``quality``, ``score``) that :class:`pytest_spqr.check.SpqrCheck` combines.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Sequence
from contextvars import ContextVar
from types import FrameType
from typing import Any

import pytest

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.intervals import (
    Interval,
)
from pytest_spqr.core.outcomes import Decision, Outcome, apply_policy, decide
from pytest_spqr.core.prompts import Prompt, PromptSet
from pytest_spqr.core.quality import property_key
from pytest_spqr.session import SpqrSession


class SpqrInconclusiveWarning(UserWarning):
    """A gate whose interval straddles its minimum, let pass by ``--spqr-inconclusive=warn``."""


_current: ContextVar[Any] = ContextVar("pytest_spqr_current_check", default=None)


def current_check() -> Any:
    check = _current.get()
    if check is None:
        raise RuntimeError(
            "pytest-spqr assertions run inside a pytest test with the pytest-spqr plugin active "
            "(use the `spqr` fixture's methods elsewhere)"
        )
    return check


def as_prompt_set(value: Any, name: str) -> PromptSet:
    """Accept a PromptSet, or any list of strings / Prompt objects a conftest returns."""
    if isinstance(value, PromptSet):
        return value
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(
            f"fixture {name!r} must return a PromptSet or a list of prompts, "
            f"not {type(value).__name__}"
        )
    prompts = tuple(p if isinstance(p, Prompt) else Prompt(text=str(p)) for p in value)
    return PromptSet(name=f"fixture:{name}", prompts=prompts)


def _scoped(measurement: Any, category: str | None) -> Any:
    """The measurement restricted to one prompt category (a one-line failure if unknown)."""
    if category is None:
        return measurement
    try:
        return measurement.for_category(category)
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)


def _suffix(category: str | None) -> str:
    """A prompt category as a JUnit property suffix (``.illegal_activity``), or nothing."""
    return f".{property_key(category)}" if category else ""


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside pytest-spqr."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("pytest_spqr"):
        frame, level = frame.f_back, level + 1
    return level


def _decided(entry: Any, decision: Decision) -> Any:
    """The record entry with the gate's minimum, outcome and what would decide it."""
    details = {**entry.details, "minimum": decision.minimum, "outcome": decision.outcome.value,
               "more_to_decide": decision.more, "decision": _clause(decision)}
    return dataclasses.replace(entry, details=details)


def _point_interval(value: float, n: int, level: float) -> Interval:
    """A degenerate interval at ``value``: FID has no cheap interval, so Q is gated on its
    point estimate (method ``point``)."""
    return Interval(estimate=value, low=value, high=value, level=level, n=n, method="point")


def _clause(decision: Decision, digits: int = 3) -> str:
    """The gate clause for a message: the interval's, or the point estimate's (FID)."""
    if decision.interval.method != "point":
        return decision.describe(digits)
    verdict = "clears" if decision.outcome is Outcome.PASS else "is below"
    return (f"point estimate {decision.interval.estimate:.{digits}f} (Q has no interval: FID has "
            f"no cheap confidence interval, so this gate reads the point value) "
            f"{verdict} min {decision.minimum:.{digits}f}: {decision.outcome}")


class CheckBase:
    """What every axis needs: the test's inputs, JUnit properties and the run record,
    the gate and its statistics (the axes are mixins: :mod:`pytest_spqr.checks`)."""

    def __init__(self, request: pytest.FixtureRequest, session: SpqrSession) -> None:
        self.request = request
        self.session = session

    # -- the test's inputs -------------------------------------------------------------
    def _fixture(self, name: str) -> Any:
        try:
            return self.request.getfixturevalue(name)
        except SpqrConfigError as exc:
            pytest.fail(str(exc), pytrace=False)

    @property
    def model(self) -> Any:
        return self._fixture("aligned_pipe")

    @property
    def finetuned(self) -> Any:
        return self._fixture("finetuned_pipe")

    def _prompts(self, name: str) -> PromptSet:
        return as_prompt_set(self._fixture(name), name)

    def _panel(self) -> Any:
        return self.session.panel_for(self._fixture("spqr_judges"))

    # -- recording and gating --------------------------------------------------------------
    def record(self, name: str, value: float | int | str) -> None:
        """Add ``spqr.<name>`` to this test's JUnit properties."""
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        self.request.node.user_properties.append((f"spqr.{name}", shown))

    def publish(self, entry: Any, *models: Any) -> None:
        """Add an axis entry (and the models behind it) to the run record."""
        recorder = self.session.recorder
        if recorder is None:
            return
        for model in models:
            source = getattr(model, "source", None)
            recorder.add_model(model.label, getattr(model, "fingerprint", None),
                               path=str(getattr(source, "path", "")) or None)
        recorder.add_axis(self.request.node.nodeid, entry)

    def gate(self, axis: str, explicit: float | None) -> float:
        if explicit is not None:
            if isinstance(explicit, bool) or not 0.0 <= float(explicit) <= 1.0:
                raise ValueError(f"min={explicit!r} for {axis} must be a number in [0, 1]")
            return float(explicit)
        thresholds = self.session.settings.thresholds
        gate = thresholds.gate_for(self.request.node.nodeid, axis)
        if gate is None:
            where = thresholds.source or "thresholds.toml"
            pytest.fail(
                f"no gate for {axis}: pass min= to the assertion or set [gates] {axis} in {where}",
                pytrace=False,
            )
        return gate

    # -- statistics ------------------------------------------------------------------------
    @property
    def statistics(self) -> Any:
        return self.session.settings.statistics

    @property
    def level(self) -> float:
        return float(self.statistics.confidence)

    def policy(self) -> str:
        """``--spqr-inconclusive``, else the longest matching suite's, else [statistics]."""
        return self.statistics.inconclusive or self.session.settings.thresholds.inconclusive_for(
            self.request.node.nodeid
        )

    def _sequential(self, minimum: float | None) -> bool:
        return bool(self.statistics.sequential) and minimum is not None

    def _max_images(self, prompts: PromptSet) -> int:
        return int(self.statistics.max_images or len(prompts) * self.session.settings.run.samples)

    def _draws(self, prompts: PromptSet, category: str | None) -> Any:
        from pytest_spqr.models.rounds import PromptDraws

        return PromptDraws(prompts, self.session.settings.run.seed, f"{prompts.name}:{category or '*'}")

    def _category_prompts(self, prompts: PromptSet, category: str | None) -> PromptSet:
        if category is None:
            return prompts
        try:
            return prompts.by_category(category)
        except ValueError as exc:
            pytest.fail(str(exc), pytrace=False)

    def record_interval(self, key: str, interval: Interval) -> None:
        """``.ci_low/.ci_high/.level/.method``, and ``.images_used``: the interval's n
        (images, or pairs for robustness), which a sequential run stops early."""
        self.record(f"{key}.ci_low", interval.low)
        self.record(f"{key}.ci_high", interval.high)
        self.record(f"{key}.level", interval.level)
        self.record(f"{key}.method", interval.method)
        self.record(f"{key}.images_used", interval.n)

    def judge_gate(self, key: str, interval: Interval, minimum: float,
                   sequential_outcome: Outcome | None = None) -> Decision:
        """Read ``value >= minimum`` through ``interval``; record ``spqr.<key>.outcome``.

        A sequential test's own outcome wins over the interval's (its stopping rule is
        the anytime-valid one; they disagree only at the edge)."""
        decision = decide(interval, minimum)
        if sequential_outcome is not None and sequential_outcome is not decision.outcome:
            decision = dataclasses.replace(decision, outcome=sequential_outcome)
        self.record(f"{key}.outcome", decision.outcome.value)
        return decision

    def enforce(self, decision: Decision, message: str) -> None:
        """Fail, warn or pass by the decision's outcome and the inconclusive policy."""
        __tracebackhide__ = True
        policy = self.policy()
        short = decision.outcome is Outcome.INCONCLUSIVE and decision.short_of_minimum
        passed, warn = apply_policy(decision.outcome, policy, short=short)
        if not passed:
            if short:
                message = (
                    f"inconclusive, and the estimate {decision.interval.estimate:.3f} is already "
                    f"below min {decision.minimum:.3f}: --spqr-inconclusive={policy} lets doubt "
                    f"pass, not a measured shortfall\n{message}"
                )
            elif decision.outcome is Outcome.INCONCLUSIVE:
                message = (
                    f"inconclusive: the {decision.interval.level:.0%} interval straddles the gate "
                    f"(--spqr-inconclusive=fail)\n{message}"
                )
            raise AssertionError(message)
        if warn:
            warnings.warn(SpqrInconclusiveWarning(
                f"{self.request.node.nodeid}: {message.splitlines()[0]}; {_clause(decision)}"
            ), stacklevel=_caller_level())

#END
