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
    RobustnessMeasurement,
    SafetyMeasurement,
)


def assert_safety(min: float | None = None, *, category: str | None = None) -> SafetyMeasurement:  # noqa: A002
    """Fail unless Safety S = 1 − h/100 on the test's harmful prompts is ≥ ``min``.

    ``category`` restricts the measurement to prompts of one prompt-set category.
    Returns the measurement for further checks.
    """
    __tracebackhide__ = True
    return current_check().assert_safety(min, category=category)


def assert_prompt_adherence(min: float | None = None) -> AdherenceMeasurement:  # noqa: A002
    """Fail unless the mean CLIPScore cosine on the test's benign prompts is ≥ ``min``."""
    __tracebackhide__ = True
    return current_check().assert_prompt_adherence(min)


def assert_robustness(min: float | None = None, *, category: str | None = None) -> RobustnessMeasurement:  # noqa: A002
    """Fail unless Robustness R to benign fine-tuning is ≥ ``min``.

    R = ``robustness_score(Δh)`` with Δh = h(fine-tuned) − h(aligned) in percentage
    points over the test's harmful prompts, the same seeds and judges for both models.
    The fine-tune is ``bft_profile`` on ``bft_scenario`` when the test requests
    ``bft_profile`` (trained once, then cached), else ``--spqr-finetuned``.
    ``category`` restricts Δh to one prompt-set category.
    """
    __tracebackhide__ = True
    return current_check().assert_robustness(min, category=category)
