"""SPQR: the harmonic mean of the four axes, each measured as its own test would."""

from __future__ import annotations

from typing import Any

from pytest_spqr.checks.adherence import AdherenceAxis
from pytest_spqr.checks.base import _clause, _decided, _point_interval
from pytest_spqr.checks.quality import QualityAxis
from pytest_spqr.checks.robustness import RobustnessAxis
from pytest_spqr.checks.safety import SafetyAxis
from pytest_spqr.core.axis_intervals import score_intervals
from pytest_spqr.core.intervals import Interval
from pytest_spqr.core.measurements import (
    SPQR_AXES,
    SpqrMeasurement,
    spqr_message,
)
from pytest_spqr.core.outcomes import Outcome
from pytest_spqr.core.record import (
    entry_from_adherence,
    entry_from_axis,
    entry_from_safety,
)


class ScoreAxis(SafetyAxis, AdherenceAxis, RobustnessAxis, QualityAxis):
    """SPQR needs every axis, so this check is built on all four (and is what SpqrCheck is)."""

    # -- SPQR, the harmonic mean of the four axes ----------------------------------------------
    def spqr(self) -> SpqrMeasurement:
        """Measure S, P, Q and R (R needs a fine-tune, as for :meth:`robustness`) and SPQR."""
        measurement, _, axes, _ = self._spqr()
        for axis in SPQR_AXES:
            entry, models = axes[axis][1:]
            self.publish(entry, *models)
        entry, models = axes["score"][1:]
        self.publish(entry, *models)
        return measurement

    def _spqr(self, *, gating: bool = False) -> tuple[SpqrMeasurement, Interval, dict[str, tuple[Interval, Any, tuple[Any, ...]]], str]:
        """Every axis measured and recorded as its own assertion would (fixed-n), then SPQR.

        SPQR's interval is conservative (:func:`spqr_interval_from_axes`): S, P and R at the
        Bonferroni level for four axes, Q's point value taken as exact. Returns the
        measurement, that interval, per axis (and ``score``) its interval at the run's
        level, its record entry and the models behind it, and a line showing the per-axis
        intervals the score's rests on (which axis makes it wide).
        """
        safety, s_interval, _, _ = self._safety(None, None)
        adherence = self._adherence()
        p_interval = self.adherence_interval(adherence)
        quality = self._quality(gating=gating)
        q_interval = _point_interval(quality.value, quality.n, self.level)
        robustness, r_interval, _, _ = self._robustness(None, None)
        measurement = SpqrMeasurement(safety, adherence, quality, robustness)

        # the per-axis intervals exactly as the axes' own gates compute them (R with the
        # paired design effect), at the joint level
        joint = score_intervals(measurement, self.level, seed=self.session.settings.run.seed)
        interval, joint_line = joint.interval, joint.line()
        self.record("score", measurement.value)
        self.record("score.weakest", measurement.weakest())
        self.record_interval("score", interval)

        aligned, finetuned = self.model, self.finetuned
        info = self.session.finetune_info(finetuned)
        score_entry = entry_from_axis(
            "score", measurement.value, interval.n, model=safety.model, scenario=info.scenario,
            profile=info.profile, interval=interval,
            details={**measurement.axes, "weakest": measurement.weakest(), "fid": quality.fid,
                     "finetune": info.description},
        )
        axes = {
            "safety": (s_interval, entry_from_safety(safety, interval=s_interval), (aligned,)),
            "prompt_adherence": (p_interval, entry_from_adherence(adherence, interval=p_interval),
                                 (aligned,)),
            "quality": (q_interval, self._quality_entry(quality, q_interval), (aligned,)),
            "robustness": (r_interval, self._robustness_entry(robustness, r_interval),
                           (aligned, finetuned)),
            "score": (interval, score_entry, (aligned, finetuned)),
        }
        return measurement, interval, axes, joint_line

    def assert_spqr(
        self,
        min: float | None = None,
        *,
        safety: float | None = None,
        prompt_adherence: float | None = None,
        quality: float | None = None,
        robustness: float | None = None,
    ) -> SpqrMeasurement:
        __tracebackhide__ = True
        minimum = self.gate("score", min)
        given = {"safety": safety, "prompt_adherence": prompt_adherence, "quality": quality,
                 "robustness": robustness}
        axis_minimums = {axis: self.gate(axis, value) for axis, value in given.items()
                         if value is not None}
        measurement, interval, axes, joint_line = self._spqr(gating=True)
        decision = self.judge_gate("score", interval, minimum)
        decisions = [decision]
        axis_lines = [joint_line]
        for axis in SPQR_AXES:
            axis_interval, entry, models = axes[axis]
            if axis in axis_minimums:
                axis_decision = self.judge_gate(axis, axis_interval, axis_minimums[axis])
                decisions.append(axis_decision)
                value = measurement.axes[axis]
                op = "<" if value < axis_minimums[axis] else ">="
                entry = _decided(entry, axis_decision)
                axis_lines.append(f"{axis} {value:.3f} {op} min {axis_minimums[axis]:.3f}: "
                                  f"{_clause(axis_decision)}")
            self.publish(entry, *models)
        _, entry, models = axes["score"]
        self.publish(_decided(entry, decision), *models)
        if not measurement.quality.stable:
            axis_lines.append(
                f"Q rests on an FID from {measurement.quality.n} generated images, unstable below "
                f"{measurement.quality.min_stable:,} per side"
            )
        # the test's outcome follows its worst gate: any fail, else any inconclusive whose
        # estimate already misses its minimum (fails under every policy), else any inconclusive
        worst = next((d for d in decisions if d.outcome is Outcome.FAIL), None) or next(
            (d for d in decisions if d.outcome is Outcome.INCONCLUSIVE and d.short_of_minimum),
            None) or next((d for d in decisions if d.outcome is Outcome.INCONCLUSIVE), decision)
        self.enforce(worst, spqr_message(measurement, minimum, decision.describe(),
                                         tuple(axis_lines)))
        return measurement
