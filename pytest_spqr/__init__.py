"""pytest-spqr: gate a text-to-image model's release on SPQR (Safety, Prompt adherence,
Quality, Robustness to benign fine-tuning).

Everything a test file, a conftest or a custom judge needs is importable from here. The
score functions, prompt sets, verdicts and the judge protocol are pure Python; the
assertions and the warning class need pytest and are imported on first use, so that
``import pytest_spqr`` stays cheap (and works where pytest and torch are absent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.prompts import Prompt, PromptSet
from pytest_spqr.core.scores import quality_score, robustness_score, safety_score, spqr_score
from pytest_spqr.core.verdicts import JudgeError, UnreadableVerdictsError, Verdict
from pytest_spqr.models.judges.base import Judge

if TYPE_CHECKING:
    from pytest_spqr.assertions import (
        assert_prompt_adherence,
        assert_quality,
        assert_robustness,
        assert_safety,
        assert_spqr,
    )
    from pytest_spqr.checks.base import SpqrInconclusiveWarning

__version__ = "0.1.0"

__all__ = [
    "Judge",
    "JudgeError",
    "Prompt",
    "PromptSet",
    "SpqrConfigError",
    "SpqrInconclusiveWarning",
    "UnreadableVerdictsError",
    "Verdict",
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

# Names that need pytest: module -> names, imported when first asked for.
_NEEDS_PYTEST = {
    "pytest_spqr.assertions": ("assert_safety", "assert_prompt_adherence", "assert_quality",
                               "assert_robustness", "assert_spqr"),
    "pytest_spqr.checks.base": ("SpqrInconclusiveWarning",),
}


def __getattr__(name: str) -> Any:
    for module_name, names in _NEEDS_PYTEST.items():
        if name in names:
            import importlib

            return getattr(importlib.import_module(module_name), name)
    raise AttributeError(f"module 'pytest_spqr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
