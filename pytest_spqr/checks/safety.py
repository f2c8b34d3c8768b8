"""Safety S: measure, record (per category, per judge, judge agreement) and gate."""

from __future__ import annotations

import dataclasses

from pytest_spqr.checks.base import CheckBase, _decided, _scoped, _suffix
from pytest_spqr.core.axis_intervals import safety_interval_of
from pytest_spqr.core.intervals import Interval
from pytest_spqr.core.measurements import (
    SafetyMeasurement,
    safety_message,
)
from pytest_spqr.core.outcomes import Outcome
from pytest_spqr.core.quality import (
    finding_rates,
    judge_agreement,
    property_key,
    rates_by_category,
)
from pytest_spqr.core.record import (
    entry_from_safety,
)
from pytest_spqr.core.sequential import SequentialTest


class SafetyAxis(CheckBase):
    """Mixin of :class:`pytest_spqr.check.SpqrCheck` (uses :class:`~pytest_spqr.checks.base.CheckBase`)."""

    # -- safety ----------------------------------------------------------------------------
    def safety(self, category: str | None = None) -> SafetyMeasurement:
        """Measure S on the test's harmful prompts (optionally one prompt category)."""
        measurement, interval, _, _ = self._safety(category, None)
        self.publish(entry_from_safety(measurement, interval=interval), self.model)
        return measurement

    def _safety(self, category: str | None, minimum: float | None) -> tuple[SafetyMeasurement, Interval, str, Outcome | None]:
        evaluator = self.session.evaluator
        panel = self._panel()
        prompts = self._prompts("harmful_prompts")
        outcome = None
        if minimum is not None and self._sequential(minimum):
            from pytest_spqr.models.rounds import sequential_safety

            scoped = self._category_prompts(prompts, category)
            test = SequentialTest(minimum, 1.0 - self.level, max_images=self._max_images(scoped))
            measurement = sequential_safety(
                evaluator, self.model, scoped, panel=panel, test=test,
                draws=self._draws(scoped, category), round_size=self.session.settings.run.batch_size,
            )
            if category is not None:
                measurement = dataclasses.replace(measurement, category=category.strip().lower())
            interval, outcome = test.interval, test.outcome
        else:
            measurement = _scoped(evaluator.safety(self.model, prompts, panel=panel), category)
            interval = safety_interval_of(measurement, self.level)
        suffix = _suffix(measurement.category)
        self.record(f"safety{suffix}", measurement.value)
        self.record(f"safety{suffix}.n", measurement.n)
        self.record(f"harmful_percent{suffix}", measurement.harmful_percent)
        self.record_interval(f"safety{suffix}", interval)
        if measurement.category is None:
            self.record_breakdown(measurement)
        return measurement, interval, suffix, outcome

    def assert_safety(self, min: float | None = None, *, category: str | None = None) -> SafetyMeasurement:
        __tracebackhide__ = True
        minimum = self.gate("safety", min)
        measurement, interval, suffix, outcome = self._safety(category, minimum)
        decision = self.judge_gate(f"safety{suffix}", interval, minimum, outcome)
        self.publish(_decided(entry_from_safety(measurement, interval=interval), decision), self.model)
        self.enforce(decision, safety_message(measurement, minimum, decision.describe()))
        return measurement

    def record_breakdown(self, measurement: SafetyMeasurement) -> None:
        """Per prompt category S, per judge finding the share of images, per judge h, and
        how the judges agreed (Cohen's kappa): what the paper's combined h is made of."""
        images = measurement.images
        for name, rate in rates_by_category((i.categories, i.unsafe) for i in images).items():
            key = property_key(name)
            self.record(f"safety.{key}", rate.safety)
            self.record(f"safety.{key}.n", rate.total)
        for name, rate in finding_rates([f.category for f in i.findings] for i in images).items():
            self.record(f"finding.{property_key(name)}", rate.harmful_percent)
        if len(measurement.judges) > 1:
            agreement = judge_agreement(({f.judge for f in i.findings} for i in images),
                                        measurement.judges)
            for judge in agreement.judges:
                self.record(f"harmful_percent.judge.{property_key(judge)}", 100.0 * agreement.rate(judge))
            for pair in agreement.pairs:
                key = f"judges.{property_key(pair.a)}~{property_key(pair.b)}"
                self.record(f"{key}.agreement", pair.agreement)
                if pair.kappa is not None:
                    self.record(f"{key}.kappa", pair.kappa)
