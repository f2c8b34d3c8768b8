"""The fixtures a suite uses. Domain fixtures have plain names; infrastructure ones
start with ``spqr_``. Override any of them in a conftest to change what is evaluated
(e.g. ``harmful_prompts`` returning your own list, ``spqr_judges`` your own judges).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pytest_spqr.check import SpqrCheck, _current
from pytest_spqr.core.bft import BftProfile
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
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: one line, no chained report


@pytest.fixture(scope="session")
def spqr_session(pytestconfig: pytest.Config) -> SpqrSession:
    """The run's resolved settings and evaluator."""
    return _session(pytestconfig)


@pytest.fixture(scope="session")
def spqr_model_source(request: pytest.FixtureRequest, spqr_session: SpqrSession) -> Any:
    """Which ``--spqr-model`` this test evaluates: with several, tests that use
    ``aligned_pipe`` are parametrized over them (ids: the folder names)."""
    return getattr(request, "param", spqr_session.settings.model)


@pytest.fixture(scope="session")
def aligned_pipe(spqr_session: SpqrSession, spqr_model_source: Any) -> Iterator[Any]:
    """The safety-aligned model under test (``--spqr-model``), loaded once per worker.

    Yields a ``ModelUnderTest``: ``.pipe`` is the diffusers pipeline, ``.fingerprint``
    a content hash of its weights. With several ``--spqr-model``s, one per model
    (pytest finalizes the previous one before loading the next).
    """
    model = spqr_model_source
    if model is None:
        pytest.fail("no model to test — pass --spqr-model=PATH (a diffusers folder)", pytrace=False)
    loaded = _fail_on_config_error(lambda: spqr_session.evaluator.load(model))
    yield loaded
    # the next --spqr-model (or the end of the run): free this one's memory, GPU included
    spqr_session.release(loaded)


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


@pytest.fixture(scope="session")
def bft_profile(request: pytest.FixtureRequest, spqr_session: SpqrSession) -> BftProfile:
    """A benign fine-tuning profile (``lite``, ``moderate``, ``standard`` or your own).

    Tests that request it run once per profile of ``--spqr-bft-profile``; pin one with
    ``@pytest.mark.parametrize("bft_profile", ["lite"], indirect=True)``. Requesting it
    makes ``finetuned_pipe`` and ``assert_robustness`` fine-tune the aligned model.
    """
    name = getattr(request, "param", None) or spqr_session.settings.bft.profiles[0]
    if isinstance(name, BftProfile):
        return name
    return _fail_on_config_error(
        lambda: spqr_session.settings.bft.catalog.profile(str(name), where="bft_profile")
    )


@pytest.fixture(scope="session")
def bft_scenario(request: pytest.FixtureRequest, spqr_session: SpqrSession) -> str:
    """The benign data scenario (``general``, ``multilingual``, ``domain`` or your own).

    Tests that request it run once per scenario of ``--spqr-bft-scenario``; otherwise
    fine-tuning uses the first selected scenario.
    """
    return str(getattr(request, "param", None) or spqr_session.settings.bft.scenarios[0])


@pytest.fixture
def finetuned_pipe(request: pytest.FixtureRequest, spqr_session: SpqrSession,
                   aligned_pipe: Any) -> Any:
    """The aligned model after benign fine-tuning, a ``ModelUnderTest`` like ``aligned_pipe``.

    With ``bft_profile`` in the test, the aligned model is fine-tuned with that profile
    on ``bft_scenario``'s data (trained once, then reused from the weights cache);
    otherwise it is ``--spqr-finetuned``, the fine-tune you made yourself.
    """
    if "bft_profile" in request.fixturenames:
        profile = request.getfixturevalue("bft_profile")
        scenario = request.getfixturevalue("bft_scenario")
        return _fail_on_config_error(lambda: spqr_session.finetune(aligned_pipe, profile, scenario))
    if spqr_session.settings.bft.finetuned is None:
        pytest.fail(
            "no fine-tuned model: request the bft_profile fixture to fine-tune the aligned "
            "model, or pass --spqr-finetuned=PATH (a pipeline folder, a UNet folder or a LoRA "
            "adapter)",
            pytrace=False,
        )
    return _fail_on_config_error(lambda: spqr_session.load_finetuned(aligned_pipe))


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


@pytest.fixture
def spqr_snapshot(request: pytest.FixtureRequest) -> Any:
    """A syrupy snapshot of per-prompt verdicts: ``assert spqr.safety() == spqr_snapshot``.

    ``pytest --snapshot-update`` blesses the baseline; a later run fails with a diff that
    lists the prompts whose verdict flipped.
    """
    from pytest_spqr.report.snapshots import verdict_snapshot

    try:
        snapshot = request.getfixturevalue("snapshot")
    except pytest.FixtureLookupError:
        pytest.fail("spqr_snapshot needs syrupy: pip install syrupy", pytrace=False)
    return verdict_snapshot(snapshot)
