"""Robustness R: the aligned model against its benign fine-tune, paired."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pytest_spqr.checks.base import CheckBase, _decided, _scoped, _suffix
from pytest_spqr.core.axis_intervals import robustness_intervals
from pytest_spqr.core.intervals import Interval
from pytest_spqr.core.measurements import (
    RobustnessMeasurement,
    robustness_message,
)
from pytest_spqr.core.outcomes import Outcome
from pytest_spqr.core.quality import property_key
from pytest_spqr.core.record import (
    entry_from_robustness,
)
from pytest_spqr.core.sequential import PairedSequentialTest


class RobustnessAxis(CheckBase):
    """Mixin of :class:`pytest_spqr.check.SpqrCheck` (uses :class:`~pytest_spqr.checks.base.CheckBase`)."""

    # -- robustness to benign fine-tuning ---------------------------------------------------
    def _optional_clip(self) -> Any:
        """The CLIP when the test asked for one or ``--spqr-clip`` is on this machine."""
        if "spqr_clip" in self.request.fixturenames or self.session.clip_available():
            return self._fixture("spqr_clip")
        return None

    def robustness(self, category: str | None = None) -> RobustnessMeasurement:
        """Measure R (see :meth:`_robustness`)."""
        measurement, interval, _, _ = self._robustness(category, None)
        self.publish(self._robustness_entry(measurement, interval), self.model, self.finetuned)
        return measurement

    def _robustness_entry(self, measurement: RobustnessMeasurement, interval: Interval) -> Any:
        info = self.session.finetune_info(self.finetuned)
        return entry_from_robustness(measurement, scenario=info.scenario, profile=info.profile,
                                     budget=info.budget, interval=interval)

    def _robustness(self, category: str | None, minimum: float | None) -> tuple[RobustnessMeasurement, Interval, str, Outcome | None]:
        """Measure R: the aligned model against its fine-tune on the same prompts, seeds, judges.

        The fine-tune is ``finetuned_pipe``: a benign fine-tune of ``bft_profile`` on
        ``bft_scenario`` when the test requests ``bft_profile``, else ``--spqr-finetuned``.
        With a CLIP available, prompt adherence of both models is measured too.
        """
        evaluator = self.session.evaluator
        panel = self._panel()
        prompts = self._prompts("harmful_prompts")
        aligned, finetuned = self.model, self.finetuned
        formula = self.session.settings.thresholds.robustness_formula
        test: PairedSequentialTest | None = None
        if minimum is not None and self._sequential(minimum):
            from pytest_spqr.models.rounds import sequential_robustness

            scoped = self._category_prompts(prompts, category)
            test = PairedSequentialTest(minimum, 1.0 - self.level, formula=formula,
                                        max_images=self._max_images(scoped))
            before, after = sequential_robustness(
                evaluator, aligned, finetuned, scoped, panel=panel, test=test,
                draws=self._draws(scoped, category), round_size=self.session.settings.run.batch_size,
            )
        else:
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
            formula=formula,
            adherence_before=adherence[0],
            adherence_after=adherence[1],
        )
        self._record_finetune(info)
        if test is not None and category is not None:
            measurement = dataclasses.replace(measurement, category=category.strip().lower())
        elif test is None:
            measurement = _scoped(measurement, category)
        suffix = _suffix(measurement.category)
        if test is not None:
            interval, delta = test.interval, test.delta_h_interval
        else:
            # images of one prompt tend to flip together: effective pairs, as for Safety
            interval, delta = robustness_intervals(measurement, self.level)
        self.record(f"robustness{suffix}", measurement.value)
        self.record(f"delta_h{suffix}", measurement.delta_h)
        self.record(f"robustness{suffix}.n", measurement.n)
        self.record_interval(f"robustness{suffix}", interval)
        self.record(f"delta_h{suffix}.ci_low", delta.low)
        self.record(f"delta_h{suffix}.ci_high", delta.high)
        flipped = measurement.flipped_to_unsafe()
        self.record(f"robustness{suffix}.flipped", len(flipped))
        if flipped:
            flipped_texts = list(dict.fromkeys(image.prompt for image in flipped))
            self.record(f"robustness{suffix}.flipped_prompts",
                        json.dumps(flipped_texts, ensure_ascii=False))
        if measurement.category is None:
            for name, value in measurement.delta_h_by_category().items():
                key = property_key(name)
                self.record(f"delta_h.{key}", value)
                self.record(f"robustness.{key}", measurement.for_category(name).value)
        if measurement.delta_prompt_adherence is not None:
            self.record("delta_prompt_adherence", measurement.delta_prompt_adherence)
        return measurement, interval, suffix, (test.outcome if test is not None else None)

    def _record_finetune(self, info: Any) -> None:
        for key in ("profile", "scenario", "budget"):
            value = getattr(info, key)
            if value is not None:
                self.record(f"bft.{key}", value)
        if info.reused is not None:
            self.record("bft.cached", "true" if info.reused else "false")

    def assert_robustness(self, min: float | None = None, *, category: str | None = None) -> RobustnessMeasurement:
        __tracebackhide__ = True
        minimum = self.gate("robustness", min)
        measurement, interval, suffix, outcome = self._robustness(category, minimum)
        decision = self.judge_gate(f"robustness{suffix}", interval, minimum, outcome)
        self.publish(_decided(self._robustness_entry(measurement, interval), decision),
                     self.model, self.finetuned)
        self.enforce(decision, robustness_message(measurement, minimum, decision.describe()))
        return measurement
