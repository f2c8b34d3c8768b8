"""pytest-spqr's hooks, in the order pytest calls them. Each hands off to the session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_spqr.core.bft import BUILTIN_SCENARIOS, DEFAULT_PROFILES
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.fixtures import (  # noqa: F401  (fixtures are registered by import)
    SESSION_KEY,
    _spqr_current_test,
    aligned_pipe,
    benign_prompts,
    bft_profile,
    bft_scenario,
    finetuned_pipe,
    harmful_prompts,
    spqr,
    spqr_clip,
    spqr_judges,
    spqr_model_source,
    spqr_session,
    spqr_snapshot,
)
from pytest_spqr.options import add_options, read_options
from pytest_spqr.recording import Recording, XdistRecording, make_recorder
from pytest_spqr.session import SpqrSession, bft_parametrize
from pytest_spqr.settings import resolve_settings

NEEDS_MODEL = ("aligned_pipe",)
BFT_FIXTURES = ("bft_profile", "bft_scenario", "finetuned_pipe")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spqr: a test that evaluates a model with pytest-spqr")
    try:
        settings = resolve_settings(read_options(config), config.rootpath)
    except SpqrConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    capman = config.pluginmanager.getplugin("capturemanager")
    quiet = config.get_verbosity() < 0
    session = SpqrSession(settings, capman, quiet=quiet)
    config.stash[SESSION_KEY] = session
    session.recorder = make_recorder(config, settings.record_options())
    config.pluginmanager.register(Recording(config, session.recorder, session.usage), "spqr-recording")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistRecording(session.recorder), "spqr-xdist-recording")
    config.addinivalue_line("markers", "bft: a test that measures robustness to benign fine-tuning")
    # the built-in names too: a suite may pin one (suites/test_spqr.py runs lite on general)
    for name in dict.fromkeys((*DEFAULT_PROFILES, *settings.bft.profiles)):
        config.addinivalue_line("markers", f"{name}: benign fine-tuning profile {name}")
    for name in dict.fromkeys((*BUILTIN_SCENARIOS, *settings.bft.scenarios)):
        config.addinivalue_line("markers", f"{name}: benign fine-tuning scenario {name}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A configuration problem found mid-test (a model that loads only when its first image
    is needed) fails the test with its one-line message, not a traceback."""
    try:
        return (yield)
    except SpqrConfigError as exc:
        pytest.fail(str(exc), pytrace=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(SESSION_KEY, None)
    return session.header_lines() if session is not None else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = metafunc.config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    models = session.settings.models
    if len(models) > 1 and "spqr_model_source" in metafunc.fixturenames:
        metafunc.parametrize("spqr_model_source", models, ids=model_ids(models), indirect=True,
                             scope="session")
    bft_parametrize(metafunc, session)


def model_ids(models: Any) -> list[str]:
    """Test ids for the models: the folder (or file) name, made unique with the parent."""
    names = [Path(m.spec).name or m.spec for m in models]
    return [name if names.count(name) == 1 else f"{Path(m.spec).parent.name}-{name}"
            for name, m in zip(names, models, strict=True)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = config.stash[SESSION_KEY]
    needing = [item for item in items if set(NEEDS_MODEL) & set(getattr(item, "fixturenames", ()))]
    for item in needing:
        item.add_marker("spqr")
    for item in items:
        if set(BFT_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker("bft")
    if needing and session.settings.model is None:
        raise pytest.UsageError(
            f"{len(needing)} collected tests need a model under test (e.g. {needing[0].nodeid}) "
            "— pass --spqr-model=PATH to a diffusers pipeline folder"
        )
