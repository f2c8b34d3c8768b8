"""The evaluation context of one test: measure an axis, record it, gate it.

A :class:`SpqrCheck` is bound to the running test's ``request``. It evaluates the
fixtures the test asked for (``aligned_pipe``, ``harmful_prompts``, ``benign_prompts``,
``spqr_judges``…, or their overrides in a conftest), records every number as a JUnit
property *before* asserting, so failing tests carry their numbers, and raises an
``AssertionError`` a user can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import pytest

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.measurements import (
    AdherenceMeasurement,
    SafetyMeasurement,
    adherence_message,
    safety_message,
)
from pytest_spqr.core.prompts import Prompt, PromptSet
from pytest_spqr.session import SpqrSession

_current: ContextVar[SpqrCheck | None] = ContextVar("pytest_spqr_current_check", default=None)


def current_check() -> SpqrCheck:
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


class SpqrCheck:
    """Measures and gates SPQR axes for one test (the ``spqr`` fixture)."""

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

    def _prompts(self, name: str) -> PromptSet:
        return as_prompt_set(self._fixture(name), name)

    def _panel(self) -> Any:
        return self.session.panel_for(self._fixture("spqr_judges"))

    # -- recording and gating --------------------------------------------------------------
    def record(self, name: str, value: float | int | str) -> None:
        """Add ``spqr.<name>`` to this test's JUnit properties."""
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        self.request.node.user_properties.append((f"spqr.{name}", shown))

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

    # -- safety ----------------------------------------------------------------------------
    def safety(self, category: str | None = None) -> SafetyMeasurement:
        """Measure S on the test's harmful prompts (optionally one prompt category)."""
        evaluator = self.session.evaluator
        panel = self._panel()
        measurement = evaluator.safety(self.model, self._prompts("harmful_prompts"), panel=panel)
        if category is not None:
            try:
                measurement = measurement.for_category(category)
            except ValueError as exc:
                pytest.fail(str(exc), pytrace=False)
        suffix = f".{measurement.category.replace(' ', '_')}" if measurement.category else ""
        self.record(f"safety{suffix}", measurement.value)
        self.record(f"safety{suffix}.n", measurement.n)
        self.record(f"harmful_percent{suffix}", measurement.harmful_percent)
        return measurement

    def assert_safety(self, min: float | None = None, *, category: str | None = None) -> SafetyMeasurement:  # noqa: A002
        __tracebackhide__ = True
        minimum = self.gate("safety", min)
        measurement = self.safety(category)
        if measurement.value < minimum:
            raise AssertionError(safety_message(measurement, minimum))
        return measurement

    # -- prompt adherence -------------------------------------------------------------------
    def prompt_adherence(self) -> AdherenceMeasurement:
        """Measure P (mean CLIPScore cosine) on the test's benign prompts."""
        evaluator = self.session.evaluator
        clip = self._fixture("spqr_clip")
        measurement = evaluator.prompt_adherence(self.model, self._prompts("benign_prompts"), clip=clip)
        self.record("prompt_adherence", measurement.value)
        self.record("prompt_adherence.n", measurement.n)
        return measurement

    def assert_prompt_adherence(self, min: float | None = None) -> AdherenceMeasurement:  # noqa: A002
        __tracebackhide__ = True
        minimum = self.gate("prompt_adherence", min)
        measurement = self.prompt_adherence()
        if measurement.value < minimum:
            raise AssertionError(adherence_message(measurement, minimum))
        return measurement
