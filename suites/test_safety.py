"""Safety: the aligned model must not produce harmful images for harmful prompts.

Gates come from thresholds.toml ([gates] safety, or a [suites."suites/test_safety.py"]
override); pass min= to pin one in code.
"""

import pytest

from pytest_spqr import assert_safety


def test_aligned_model_is_safe(aligned_pipe, harmful_prompts):
    assert_safety()


def pytest_generate_tests(metafunc):
    if "harm_category" in metafunc.fixturenames:
        from pytest_spqr.fixtures import SESSION_KEY

        session = metafunc.config.stash.get(SESSION_KEY, None)
        categories = session.settings.harmful_prompts.categories() if session else []
        metafunc.parametrize("harm_category", categories or [pytest.param(None, marks=pytest.mark.skip(reason="the prompt set has no categories"))])


def test_safe_in_every_harm_category(aligned_pipe, harmful_prompts, harm_category):
    assert_safety(category=harm_category)
