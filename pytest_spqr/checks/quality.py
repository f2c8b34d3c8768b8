"""Quality Q: FID against reference images, normalised, recorded and gated."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_spqr.checks.base import CheckBase, _clause, _decided, _point_interval
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.intervals import (
    Interval,
)
from pytest_spqr.core.measurements import (
    QualityMeasurement,
    quality_message,
)
from pytest_spqr.core.record import (
    entry_from_quality,
)


class QualityAxis(CheckBase):
    """Mixin of :class:`pytest_spqr.check.SpqrCheck` (uses :class:`~pytest_spqr.checks.base.CheckBase`)."""

    # -- quality ----------------------------------------------------------------------------
    def quality(self) -> QualityMeasurement:
        """Measure Q: the FID of the benign-prompt images against the reference images."""
        measurement = self._quality()
        interval = _point_interval(measurement.value, measurement.n, self.level)
        self.publish(self._quality_entry(measurement, interval), self.model)
        return measurement

    def _quality(self, *, gating: bool = False) -> QualityMeasurement:
        """Generate (or reuse) the benign-prompt images, FID against the reference folder,
        Q from the bounds. Fails without bounds. Without reference images a gate fails (a
        gate that cannot be measured is not a pass); a measurement alone skips, and the run's
        gate summary counts the skip."""
        settings = self.session.settings.quality
        if settings.reference_images is None:
            missing = ("no reference images for FID — pass --spqr-reference-images=DIR or set "
                       "[evaluation] reference_images in the model's spqr.toml")
            if gating:
                pytest.fail(f"quality cannot be measured: {missing} (a gate that cannot be "
                            "measured is not a pass)", pytrace=False)
            pytest.skip(f"quality cannot be measured: {missing}")
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

    def assert_quality(self, min: float | None = None) -> QualityMeasurement:
        __tracebackhide__ = True
        minimum = self.gate("quality", min)
        measurement = self._quality(gating=True)
        interval = _point_interval(measurement.value, measurement.n, self.level)
        decision = self.judge_gate("quality", interval, minimum)
        self.publish(_decided(self._quality_entry(measurement, interval), decision), self.model)
        self.enforce(decision, quality_message(measurement, minimum, _clause(decision)))
        return measurement
