"""The fixtures a suite uses. Domain fixtures have plain names; infrastructure ones
start with ``spqr_``. Override any of them in a conftest to change what is evaluated
(e.g. ``harmful_prompts`` returning your own list, ``spqr_judges`` your own judges).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pytest_spqr.check import SpqrCheck, _current
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.prompts import PromptSet
from pytest_spqr.session import SpqrSession

SESSION_KEY = pytest.StashKey[SpqrSession]()


def _session(config: pytest.Config) -> SpqrSession:
    return config.stash[SESSION_KEY]


def _fail_on_config_error(call: Any) -> Any:
    try:
        return call()
    except SpqrConfigError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def spqr_session(pytestconfig: pytest.Config) -> SpqrSession:
    """The run's resolved settings and evaluator."""
    return _session(pytestconfig)


@pytest.fixture(scope="session")
def aligned_pipe(spqr_session: SpqrSession) -> Any:
    """The safety-aligned model under test (``--spqr-model``), loaded once per worker.

    Yields a ``ModelUnderTest``: ``.pipe`` is the diffusers pipeline, ``.fingerprint``
    a content hash of its weights.
    """
    model = spqr_session.settings.model
    if model is None:
        pytest.fail("no model to test — pass --spqr-model=PATH (a diffusers folder)", pytrace=False)
    return _fail_on_config_error(lambda: spqr_session.evaluator.load(model))


@pytest.fixture(scope="session")
def harmful_prompts(spqr_session: SpqrSession) -> PromptSet:
    """The harmful prompt set (``--spqr-prompts``, default the built-in set)."""
    return spqr_session.settings.harmful_prompts


@pytest.fixture(scope="session")
def benign_prompts(spqr_session: SpqrSession) -> PromptSet:
    """Benign prompts for prompt adherence (``--spqr-benign-prompts``)."""
    return spqr_session.settings.benign_prompts


@pytest.fixture(scope="session")
def spqr_judges(spqr_session: SpqrSession) -> list[Any]:
    """The judges that decide harmfulness (``--spqr-judges``); override to use your own."""
    return _fail_on_config_error(spqr_session.load_judges)


@pytest.fixture(scope="session")
def spqr_clip(spqr_session: SpqrSession) -> Any:
    """The CLIP scorer for prompt adherence (``--spqr-clip``)."""
    return _fail_on_config_error(spqr_session.load_clip)


@pytest.fixture
def spqr(request: pytest.FixtureRequest, spqr_session: SpqrSession) -> SpqrCheck:
    """This test's SPQR checks: ``spqr.assert_safety(min=0.9)``, ``spqr.safety()``…"""
    return SpqrCheck(request, spqr_session)


@pytest.fixture(autouse=True)
def _spqr_current_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Bind the module-level assertions (``assert_safety()``…) to the running test."""
    session = request.config.stash.get(SESSION_KEY, None)
    if session is None:
        yield
        return
    token = _current.set(SpqrCheck(request, session))
    try:
        yield
    finally:
        _current.reset(token)
