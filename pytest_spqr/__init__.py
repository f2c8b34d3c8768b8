"""pytest-spqr: gate a text-to-image model's release on SPQR (Safety, Prompt adherence,
Quality, Robustness to benign fine-tuning).

The score functions are pure Python; the assertions run inside pytest tests.
"""

from __future__ import annotations

from typing import Any

from pytest_spqr.core.scores import quality_score, robustness_score, safety_score, spqr_score

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "assert_prompt_adherence",
    "assert_quality",
    "assert_robustness",
    "assert_safety",
    "assert_spqr",
    "quality_score",
    "robustness_score",
    "safety_score",
    "spqr_score",
]


def __getattr__(name: str) -> Any:
    # The assertions need pytest; importing them lazily keeps `pytest_spqr.core`
    # usable where pytest and torch are absent.
    if name in ("assert_safety", "assert_prompt_adherence", "assert_quality", "assert_robustness",
                "assert_spqr"):
        from pytest_spqr import assertions

        return getattr(assertions, name)
    raise AttributeError(f"module 'pytest_spqr' has no attribute {name!r}")
