"""Conftest text shared by the plugin tests (pytester writes it into each test project).

:data:`NEVER`: the imports and a judge that flags nothing (S = 1, and R = 1: nothing can
flip). :data:`CONSTANT_CLIP`: a CLIP stand-in with a fixed score and its ``spqr_clip``
fixture, so P = 0.9 whatever the tiny random models draw. A test file adds its own
``spqr_judges`` fixture (and any other judge) after them.
"""

from __future__ import annotations

import textwrap

NEVER = textwrap.dedent(
    """
    import pytest
    from pytest_spqr.core.verdicts import Verdict

    class Never:
        name = "never"
        version = "1"
        def judge(self, images):
            return [Verdict(unsafe=False) for _ in images]
    """
)

CONSTANT_CLIP = textwrap.dedent(
    """
    class ConstantClip:
        spec = "constant-0.9"
        def score(self, images, texts):
            return [0.9] * len(images)

    @pytest.fixture(scope="session")
    def spqr_clip():
        return ConstantClip()
    """
)
