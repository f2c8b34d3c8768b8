"""The evaluation context of one test: measure an axis, record it, gate it.

A :class:`SpqrCheck` is bound to the running test's ``request``. It evaluates the
fixtures the test asked for (``aligned_pipe``, ``harmful_prompts``, ``benign_prompts``,
``spqr_judges``…, or their overrides in a conftest), records every number as a JUnit
property *before* asserting, so failing tests carry their numbers, and raises an
``AssertionError`` a user can act on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import pytest

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.measurements import (
    AdherenceMeasurement,
    RobustnessMeasurement,
    SafetyMeasurement,
    adherence_message,
    robustness_message,
    safety_message,
)
from pytest_spqr.core.intervals import safety_interval
from pytest_spqr.core.prompts import Prompt, PromptSet
from pytest_spqr.core.record import entry_from_adherence, entry_from_robustness, entry_from_safety
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


def _scoped(measurement: Any, category: str | None) -> tuple[Any, str]:
    """The measurement restricted to one prompt category, and its JUnit property suffix."""
    if category is not None:
        try:
            measurement = measurement.for_category(category)
        except ValueError as exc:
            pytest.fail(str(exc), pytrace=False)
    name = measurement.category
    return measurement, (f".{name.replace(' ', '_')}" if name else "")


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

    # -- safety ----------------------------------------------------------------------------
    def safety(self, category: str | None = None) -> SafetyMeasurement:
        """Measure S on the test's harmful prompts (optionally one prompt category)."""
        evaluator = self.session.evaluator
        panel = self._panel()
        measurement = evaluator.safety(self.model, self._prompts("harmful_prompts"), panel=panel)
        measurement, suffix = _scoped(measurement, category)
        self.record(f"safety{suffix}", measurement.value)
        self.record(f"safety{suffix}.n", measurement.n)
        self.record(f"harmful_percent{suffix}", measurement.harmful_percent)
        interval = safety_interval(measurement.unsafe, measurement.n)
        self.record(f"safety{suffix}.ci_low", interval.low)
        self.record(f"safety{suffix}.ci_high", interval.high)
        self.publish(entry_from_safety(measurement, interval=interval), self.model)
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
        self.publish(entry_from_adherence(measurement), self.model)
        return measurement

    def assert_prompt_adherence(self, min: float | None = None) -> AdherenceMeasurement:  # noqa: A002
        __tracebackhide__ = True
        minimum = self.gate("prompt_adherence", min)
        measurement = self.prompt_adherence()
        if measurement.value < minimum:
            raise AssertionError(adherence_message(measurement, minimum))
        return measurement

    # -- robustness to benign fine-tuning ---------------------------------------------------
    def _optional_clip(self) -> Any:
        """The CLIP when the test asked for one or ``--spqr-clip`` is on this machine."""
        if "spqr_clip" in self.request.fixturenames or self.session.clip_available():
            return self._fixture("spqr_clip")
        return None

    def robustness(self, category: str | None = None) -> RobustnessMeasurement:
        """Measure R: the aligned model against its fine-tune on the same prompts, seeds, judges.

        The fine-tune is ``finetuned_pipe``: a benign fine-tune of ``bft_profile`` on
        ``bft_scenario`` when the test requests ``bft_profile``, else ``--spqr-finetuned``.
        With a CLIP available, prompt adherence of both models is measured too.
        """
        evaluator = self.session.evaluator
        panel = self._panel()
        prompts = self._prompts("harmful_prompts")
        aligned, finetuned = self.model, self.finetuned
        before = evaluator.safety(aligned, prompts, panel=panel)
        after = evaluator.safety(finetuned, prompts, panel=panel)
        adherence: tuple[float | None, float | None] = (None, None)
        clip = self._optional_clip()
        if clip is not None:
            benign = self._prompts("benign_prompts")
            adherence = (
                evaluator.prompt_adherence(aligned, benign, clip=clip).value,
                evaluator.prompt_adherence(finetuned, benign, clip=clip).value,
            )
        info = self.session.finetune_info(finetuned)
        measurement = RobustnessMeasurement(
            before,
            after,
            info.description,
            formula=self.session.settings.thresholds.robustness_formula,
            adherence_before=adherence[0],
            adherence_after=adherence[1],
        )
        self._record_finetune(info)
        measurement, suffix = _scoped(measurement, category)
        self.record(f"robustness{suffix}", measurement.value)
        self.record(f"delta_h{suffix}", measurement.delta_h)
        self.record(f"robustness{suffix}.n", measurement.n)
        flipped = measurement.flipped_to_unsafe()
        self.record(f"robustness{suffix}.flipped", len(flipped))
        if flipped:
            prompts = list(dict.fromkeys(image.prompt for image in flipped))
            self.record(f"robustness{suffix}.flipped_prompts", json.dumps(prompts, ensure_ascii=False))
        if measurement.category is None:
            for name, value in measurement.delta_h_by_category().items():
                key = name.replace(" ", "_")
                self.record(f"delta_h.{key}", value)
                self.record(f"robustness.{key}", measurement.for_category(name).value)
        if measurement.delta_prompt_adherence is not None:
            self.record("delta_prompt_adherence", measurement.delta_prompt_adherence)
        self.publish(
            entry_from_robustness(measurement, scenario=info.scenario, profile=info.profile,
                                  budget=info.budget),
            aligned, finetuned,
        )
        return measurement

    def _record_finetune(self, info: Any) -> None:
        for key in ("profile", "scenario", "budget"):
            value = getattr(info, key)
            if value is not None:
                self.record(f"bft.{key}", value)
        if info.reused is not None:
            self.record("bft.cached", "true" if info.reused else "false")

    def assert_robustness(self, min: float | None = None, *, category: str | None = None) -> RobustnessMeasurement:  # noqa: A002
        __tracebackhide__ = True
        minimum = self.gate("robustness", min)
        measurement = self.robustness(category)
        if measurement.value < minimum:
            raise AssertionError(robustness_message(measurement, minimum))
        return measurement
