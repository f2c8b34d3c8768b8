"""pytest-spqr's hooks, in the order pytest calls them. Each hands off to the session."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from pytest_spqr.core.bft import BUILTIN_SCENARIOS, DEFAULT_PROFILES
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.fixtures import (  # noqa: F401 - imported so pytest registers the fixtures
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
from pytest_spqr.models.library_noise import quiet_library_noise
from pytest_spqr.options import add_options, read_options
from pytest_spqr.recording import Recording, XdistRecording, make_recorder
from pytest_spqr.session import SpqrSession, bft_parametrize
from pytest_spqr.settings import resolve_settings
from pytest_spqr.startup import check_startup

NEEDS_MODEL = ("aligned_pipe",)
BFT_FIXTURES = ("bft_profile", "bft_scenario", "finetuned_pipe")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spqr: a test that evaluates a model with pytest-spqr")
    config.addinivalue_line("markers", "spqr_finetuned: a test that gates --spqr-finetuned; "
                            "deselected when no --spqr-finetuned is given")
    config.addinivalue_line("markers", "spqr_deselect(reason): set by pytest-spqr on runs that "
                            "this configuration does not make (deselected, not skipped)")
    quiet_library_noise()  # transformers' torchvision-fallback lines: nothing a user can do
    try:
        given = read_options(config)
        with warnings.catch_warnings(record=True) as said:  # e.g. repeated prompts
            warnings.simplefilter("always")
            settings = resolve_settings(given, config.rootpath)
        check_startup(settings, given)  # paths, device, model files: before any test runs
    except SpqrConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    for warning in said:
        # recorded from warnings.warn(...): a Warning instance, though typed Warning | str
        config.issue_config_time_warning(warning.message, stacklevel=2)  # type: ignore[arg-type]
    capman = config.pluginmanager.getplugin("capturemanager")
    quiet = config.get_verbosity() < 0
    worker = config.workerinput["workerid"] if hasattr(config, "workerinput") else None
    session = SpqrSession(settings, capman, quiet=quiet, worker=worker)
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


def pytest_sessionstart(session: pytest.Session) -> None:
    live = session.config.stash.get(SESSION_KEY, None)
    if live is not None and not hasattr(session.config, "workerinput"):
        live.prompt_truncation()  # prompts the text encoder cuts: header and run record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A configuration problem found mid-test (a model that loads only when its first image
    is needed) fails the test with its one-line message, not a traceback."""
    try:
        return (yield)
    except SpqrConfigError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)  # outside the except: the line is shown once, unchained


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
    _deselect_runs_not_made(config, session, items)
    if needing and session.settings.model is None:
        raise pytest.UsageError(
            f"{len(needing)} collected tests need a model under test (e.g. {needing[0].nodeid}) "
            "— pass --spqr-model=PATH to a diffusers pipeline folder"
        )


def _deselect_runs_not_made(config: pytest.Config, session: Any, items: list[pytest.Item]) -> None:
    """Deselect, rather than skip, the tests this configuration does not make: a skipped gate
    would make the run NOT PASSED (the profile runs under --spqr-finetuned; a test of the
    provider's own fine-tune without one)."""
    no_finetuned = session.settings.bft.finetuned is None
    dropped = [item for item in items if item.get_closest_marker("spqr_deselect") is not None
               or (no_finetuned and item.get_closest_marker("spqr_finetuned") is not None)]
    if dropped:
        items[:] = [item for item in items if item not in dropped]
        config.hook.pytest_deselected(items=dropped)
