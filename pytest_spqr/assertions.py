"""Assertions that gate an SPQR axis inside a test.

Each evaluates the fixtures the current test requested (see :mod:`pytest_spqr.check`),
records ``spqr.<axis>`` and ``spqr.<axis>.n`` in the JUnit report, and fails with a
message that names the value, the gate, the images and the worst prompts. Without
``min`` the gate comes from ``thresholds.toml``.
"""

from __future__ import annotations

from pytest_spqr.check import current_check
from pytest_spqr.core.measurements import (
    AdherenceMeasurement,
    QualityMeasurement,
    RobustnessMeasurement,
    SafetyMeasurement,
    SpqrMeasurement,
)


def assert_safety(min: float | None = None, *, category: str | None = None) -> SafetyMeasurement:
    """Fail unless Safety S = 1 − h/100 on the test's harmful prompts is ≥ ``min``.

    ``category`` restricts the measurement to prompts of one prompt-set category.
    Returns the measurement for further checks.
    """
    __tracebackhide__ = True
    return current_check().assert_safety(min, category=category)


def assert_prompt_adherence(min: float | None = None) -> AdherenceMeasurement:
    """Fail unless the mean CLIPScore cosine on the test's benign prompts is ≥ ``min``."""
    __tracebackhide__ = True
    return current_check().assert_prompt_adherence(min)


def assert_quality(min: float | None = None) -> QualityMeasurement:
    """Fail unless Quality Q, the normalised FID of the benign-prompt images, is ≥ ``min``.

    The FID compares the images prompt adherence scores (generated once) with the
    reference images (``--spqr-reference-images``, or the model's spqr.toml) in the
    ``--spqr-fid-feature`` space; Q = ``quality_score(FID, fid_min, fid_max, ε)`` with the
    bounds of ``[quality]`` in thresholds.toml, else the model's spqr.toml. FID has no
    cheap interval, so the gate reads the point value. Skips without reference images.
    """
    __tracebackhide__ = True
    return current_check().assert_quality(min)


def assert_spqr(
    min: float | None = None,
    *,
    safety: float | None = None,
    prompt_adherence: float | None = None,
    quality: float | None = None,
    robustness: float | None = None,
) -> SpqrMeasurement:
    """Fail unless SPQR, the harmonic mean of S, P, Q and R, is ≥ ``min`` (and each axis
    given a minimum here is ≥ it).

    Measures all four axes for the test as their own assertions do; R needs a fine-tune
    (``bft_profile`` in the test, or ``--spqr-finetuned``). Without ``min`` the gate is
    ``[gates] score`` of thresholds.toml. SPQR's interval combines S, P and R at the
    Bonferroni level for four axes, with Q's point value taken as exact. The failure
    names the weakest axis.
    """
    __tracebackhide__ = True
    return current_check().assert_spqr(min, safety=safety, prompt_adherence=prompt_adherence,
                                       quality=quality, robustness=robustness)


def assert_robustness(min: float | None = None, *, category: str | None = None) -> RobustnessMeasurement:
    """Fail unless Robustness R to benign fine-tuning is ≥ ``min``.

    R = ``robustness_score(Δh)`` with Δh = h(fine-tuned) − h(aligned) in percentage
    points over the test's harmful prompts, the same seeds and judges for both models.
    The fine-tune is ``bft_profile`` on ``bft_scenario`` when the test requests
    ``bft_profile`` (trained once, then cached), else ``--spqr-finetuned``.
    ``category`` restricts Δh to one prompt-set category.
    """
    __tracebackhide__ = True
    return current_check().assert_robustness(min, category=category)
