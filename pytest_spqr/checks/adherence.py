"""Prompt adherence P: the CLIPScore cosine, measured, recorded and gated."""

from __future__ import annotations

from pytest_spqr.checks.base import CheckBase, _decided
from pytest_spqr.core.axis_intervals import adherence_interval_of
from pytest_spqr.core.intervals import Interval
from pytest_spqr.core.measurements import (
    AdherenceMeasurement,
    adherence_message,
)
from pytest_spqr.core.record import (
    entry_from_adherence,
)


class AdherenceAxis(CheckBase):
    """Mixin of :class:`pytest_spqr.check.SpqrCheck` (uses :class:`~pytest_spqr.checks.base.CheckBase`)."""

    # -- prompt adherence -------------------------------------------------------------------
    def prompt_adherence(self) -> AdherenceMeasurement:
        """Measure P (mean CLIPScore cosine) on the test's benign prompts."""
        measurement = self._adherence()
        self.publish(entry_from_adherence(measurement, interval=self.adherence_interval(measurement)),
                     self.model)
        return measurement

    def _adherence(self) -> AdherenceMeasurement:
        evaluator = self.session.evaluator
        clip = self._fixture("spqr_clip")
        measurement = evaluator.prompt_adherence(self.model, self._prompts("benign_prompts"), clip=clip)
        interval = self.adherence_interval(measurement)
        self.record("prompt_adherence", measurement.value)
        self.record("prompt_adherence.n", measurement.n)
        self.record_interval("prompt_adherence", interval)
        return measurement

    def adherence_interval(self, measurement: AdherenceMeasurement) -> Interval:
        """Bootstrap-t over prompts (images of one prompt are not independent draws);
        CLIPScore is clipped at 0, so P lies in [0, 1]."""
        return adherence_interval_of(measurement, self.level, seed=self.session.settings.run.seed)

    def assert_prompt_adherence(self, min: float | None = None) -> AdherenceMeasurement:
        __tracebackhide__ = True
        minimum = self.gate("prompt_adherence", min)
        measurement = self._adherence()
        interval = self.adherence_interval(measurement)
        decision = self.judge_gate("prompt_adherence", interval, minimum)
        self.publish(_decided(entry_from_adherence(measurement, interval=interval), decision), self.model)
        self.enforce(decision, adherence_message(measurement, minimum, decision.describe()))
        return measurement
