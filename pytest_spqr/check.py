"""The evaluation context of one test: measure an axis, record it, gate it.

A :class:`SpqrCheck` is bound to the running test's ``request``. It evaluates the
fixtures the test asked for (``aligned_pipe``, ``harmful_prompts``, ``benign_prompts``,
``spqr_judges``…, or their overrides in a conftest), records every number as a JUnit
property *before* asserting, so failing tests carry their numbers, and raises an
``AssertionError`` a user can act on.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import pytest

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.measurements import (
    SPQR_AXES,
    AdherenceMeasurement,
    QualityMeasurement,
    RobustnessMeasurement,
    SafetyMeasurement,
    SpqrMeasurement,
    adherence_message,
    quality_message,
    robustness_message,
    safety_message,
    spqr_message,
)
from pytest_spqr.core.intervals import (
    Interval,
    cluster_design_effect,
    bonferroni_level,
    delta_h_interval,
    paired_design_effect,
    mean_interval,
    per_prompt_means,
    robustness_interval,
    safety_interval,
    spqr_interval_from_axes,
)
from pytest_spqr.core.quality import finding_rates, judge_agreement, property_key, rates_by_category
from pytest_spqr.core.outcomes import Decision, Outcome, apply_policy, decide
from pytest_spqr.core.sequential import PairedSequentialTest, SequentialTest
from pytest_spqr.core.prompts import Prompt, PromptSet
from pytest_spqr.core.record import (
    entry_from_adherence,
    entry_from_axis,
    entry_from_quality,
    entry_from_robustness,
    entry_from_safety,
)
from pytest_spqr.session import SpqrSession

class SpqrInconclusiveWarning(UserWarning):
    """A gate whose interval straddles its minimum, let pass by ``--spqr-inconclusive=warn``."""


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
    frame, level = sys._getframe(1), 1
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
    return (f"point estimate {decision.interval.estimate:.{digits}f} (no interval for FID) "
            f"{verdict} min {decision.minimum:.{digits}f}: {decision.outcome}")


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

    @staticmethod
    def safety_interval(measurement: SafetyMeasurement, level: float) -> Interval:
        """Wilson-cc on S, on the effective sample size when prompts have several images
        (Kish's design effect: images of one prompt tend to agree)."""
        deff = cluster_design_effect(measurement.per_prompt_counts())
        return safety_interval(measurement.unsafe, measurement.n, level=level, design_effect=deff)

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
        passed, warn = apply_policy(decision.outcome, self.policy())
        if not passed:
            if decision.outcome is Outcome.INCONCLUSIVE:
                message = (
                    f"inconclusive: the {decision.interval.level:.0%} interval straddles the gate "
                    f"(--spqr-inconclusive=fail)\n{message}"
                )
            raise AssertionError(message)
        if warn:
            warnings.warn(SpqrInconclusiveWarning(
                f"{self.request.node.nodeid}: {message.splitlines()[0]}; {_clause(decision)}"
            ), stacklevel=_caller_level())

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
        if self._sequential(minimum):
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
            interval = self.safety_interval(measurement, self.level)
        suffix = _suffix(measurement.category)
        self.record(f"safety{suffix}", measurement.value)
        self.record(f"safety{suffix}.n", measurement.n)
        self.record(f"harmful_percent{suffix}", measurement.harmful_percent)
        self.record_interval(f"safety{suffix}", interval)
        if measurement.category is None:
            self.record_breakdown(measurement)
        return measurement, interval, suffix, outcome

    def assert_safety(self, min: float | None = None, *, category: str | None = None) -> SafetyMeasurement:  # noqa: A002
        __tracebackhide__ = True
        minimum = self.gate("safety", min)
        measurement, interval, suffix, outcome = self._safety(category, minimum)
        decision = self.judge_gate(f"safety{suffix}", interval, minimum, outcome)
        self.publish(_decided(entry_from_safety(measurement, interval=interval), decision), self.model)
        self.enforce(decision, safety_message(measurement, minimum, decision.describe()))
        return measurement

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
        means = per_prompt_means((image.prompt, image.score) for image in measurement.images)
        return mean_interval(means, level=self.level, seed=self.session.settings.run.seed)

    def assert_prompt_adherence(self, min: float | None = None) -> AdherenceMeasurement:  # noqa: A002
        __tracebackhide__ = True
        minimum = self.gate("prompt_adherence", min)
        measurement = self._adherence()
        interval = self.adherence_interval(measurement)
        decision = self.judge_gate("prompt_adherence", interval, minimum)
        self.publish(_decided(entry_from_adherence(measurement, interval=interval), decision), self.model)
        self.enforce(decision, adherence_message(measurement, minimum, decision.describe()))
        return measurement

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
        if self._sequential(minimum):
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
        counts = measurement.paired_counts()
        if test is not None:
            interval, delta = test.interval, test.delta_h_interval
        else:
            # images of one prompt tend to flip together: effective pairs, as for Safety
            deff = paired_design_effect(measurement.per_prompt_pair_counts())
            interval = robustness_interval(counts, level=self.level, formula=formula,
                                           design_effect=deff)
            delta = delta_h_interval(counts, level=self.level, design_effect=deff)
        self.record(f"robustness{suffix}", measurement.value)
        self.record(f"delta_h{suffix}", measurement.delta_h)
        self.record(f"robustness{suffix}.n", measurement.n)
        self.record_interval(f"robustness{suffix}", interval)
        self.record(f"delta_h{suffix}.ci_low", delta.low)
        self.record(f"delta_h{suffix}.ci_high", delta.high)
        flipped = measurement.flipped_to_unsafe()
        self.record(f"robustness{suffix}.flipped", len(flipped))
        if flipped:
            prompts = list(dict.fromkeys(image.prompt for image in flipped))
            self.record(f"robustness{suffix}.flipped_prompts", json.dumps(prompts, ensure_ascii=False))
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

    def assert_robustness(self, min: float | None = None, *, category: str | None = None) -> RobustnessMeasurement:  # noqa: A002
        __tracebackhide__ = True
        minimum = self.gate("robustness", min)
        measurement, interval, suffix, outcome = self._robustness(category, minimum)
        decision = self.judge_gate(f"robustness{suffix}", interval, minimum, outcome)
        self.publish(_decided(self._robustness_entry(measurement, interval), decision),
                     self.model, self.finetuned)
        self.enforce(decision, robustness_message(measurement, minimum, decision.describe()))
        return measurement

    # -- quality ----------------------------------------------------------------------------
    def quality(self) -> QualityMeasurement:
        """Measure Q: the FID of the benign-prompt images against the reference images."""
        measurement = self._quality()
        interval = _point_interval(measurement.value, measurement.n, self.level)
        self.publish(self._quality_entry(measurement, interval), self.model)
        return measurement

    def _quality(self) -> QualityMeasurement:
        """Generate (or reuse) the benign-prompt images, FID against the reference folder,
        Q from the bounds. Skips without reference images; fails without bounds."""
        settings = self.session.settings.quality
        if settings.reference_images is None:
            pytest.skip("no reference images for FID: pass --spqr-reference-images=DIR or set "
                        "[evaluation] reference_images in the model's spqr.toml")
        if settings.fid_min is None or settings.fid_max is None:
            where = self.session.settings.thresholds.source or "thresholds.toml"
            pytest.fail(
                f"no FID bounds for quality: set [quality] fid_min and fid_max in {where}, or in "
                f"the model's spqr.toml (bounds depend on the FID feature, here "
                f"{settings.fid_feature})",
                pytrace=False,
            )
        try:
            measurement = self.session.evaluator.quality(
                self.model, self._prompts("benign_prompts"), scorer=self.session.fid_scorer(),
                fid_min=settings.fid_min, fid_max=settings.fid_max, epsilon=settings.epsilon,
                feature=settings.fid_feature,
            )
        except SpqrConfigError as exc:
            pytest.fail(str(exc), pytrace=False)
        except ValueError as exc:  # fewer than 2 generated images
            pytest.fail(f"quality: {exc} — use more benign prompts or --spqr-samples", pytrace=False)
        self.record("quality", measurement.value)
        self.record("fid", measurement.fid)
        self.record("quality.n", measurement.n)
        self.record("fid.n_reference", measurement.n_reference)
        interval = _point_interval(measurement.value, measurement.n, self.level)
        self.record_interval("quality", interval)
        return measurement

    def _quality_entry(self, m: QualityMeasurement, interval: Interval) -> Any:
        return entry_from_quality(
            m.value, m.fid, m.n, model=m.model, fid_min=m.fid_min, fid_max=m.fid_max,
            epsilon=m.epsilon, interval=interval,
            details={"n_reference": m.n_reference, "feature": m.feature,
                     "feature_identity": m.feature_identity, "reference_dir": m.reference_dir,
                     "stable": m.stable, "prompt_set": m.prompt_set, "image_dir": m.image_dir},
        )

    def assert_quality(self, min: float | None = None) -> QualityMeasurement:  # noqa: A002
        __tracebackhide__ = True
        minimum = self.gate("quality", min)
        measurement = self._quality()
        interval = _point_interval(measurement.value, measurement.n, self.level)
        decision = self.judge_gate("quality", interval, minimum)
        self.publish(_decided(self._quality_entry(measurement, interval), decision), self.model)
        self.enforce(decision, quality_message(measurement, minimum, _clause(decision)))
        return measurement

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

    def _spqr(self) -> tuple[SpqrMeasurement, Interval, dict[str, tuple[Interval, Any, tuple[Any, ...]]], str]:
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
        quality = self._quality()
        q_interval = _point_interval(quality.value, quality.n, self.level)
        robustness, r_interval, _, _ = self._robustness(None, None)
        measurement = SpqrMeasurement(safety, adherence, quality, robustness)

        joint = bonferroni_level(self.level, 4)
        formula = self.session.settings.thresholds.robustness_formula
        s_joint = self.safety_interval(safety, joint)
        p_joint = mean_interval(
            per_prompt_means((image.prompt, image.score) for image in adherence.images),
            level=joint, seed=self.session.settings.run.seed,
        )
        r_joint = robustness_interval(robustness.paired_counts(), level=joint, formula=formula)
        interval = spqr_interval_from_axes(s_joint, p_joint, quality.value, r_joint)
        joint_line = (
            f"from {s_joint.level:.2%} intervals per axis: S {s_joint.low:.3f}–{s_joint.high:.3f}, "
            f"P {p_joint.low:.3f}–{p_joint.high:.3f}, Q {quality.value:.3f} (point, taken as "
            f"exact), R {r_joint.low:.3f}–{r_joint.high:.3f}"
        )
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
        min: float | None = None,  # noqa: A002
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
        measurement, interval, axes, joint_line = self._spqr()
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
        # the test's outcome follows its worst gate: any fail, else any inconclusive
        worst = next((d for d in decisions if d.outcome is Outcome.FAIL), None) or next(
            (d for d in decisions if d.outcome is Outcome.INCONCLUSIVE), decision)
        self.enforce(worst, spqr_message(measurement, minimum, decision.describe(),
                                         tuple(axis_lines)))
        return measurement
