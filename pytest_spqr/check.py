"""The evaluation context of one test: measure an axis, record it, gate it.

A :class:`SpqrCheck` is bound to the running test's ``request``. It evaluates the
fixtures the test asked for (``aligned_pipe``, ``harmful_prompts``, ``benign_prompts``,
``spqr_judges``…, or their overrides in a conftest), records every number as a JUnit
property *before* asserting, so failing tests carry their numbers, and raises an
``AssertionError`` a user can act on. Each axis lives in its own module of
:mod:`pytest_spqr.checks`; this class puts them together.
"""

from __future__ import annotations

from pytest_spqr.checks.base import (
    SpqrInconclusiveWarning,
    _current,
    as_prompt_set,
    current_check,
)
from pytest_spqr.checks.score import ScoreAxis

__all__ = ["SpqrCheck", "SpqrInconclusiveWarning", "_current", "as_prompt_set", "current_check"]


class SpqrCheck(ScoreAxis):
    """Measures and gates SPQR axes for one test (the ``spqr`` fixture)."""
