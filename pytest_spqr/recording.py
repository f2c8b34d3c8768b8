"""Collect a run record across processes, write the report, print the leaderboard.

Each process keeps a :class:`~pytest_spqr.core.record.RunRecorder`. Tests add their
axes to it as they measure (see :mod:`pytest_spqr.check`); the controller adds each test's
outcome from its reports. Under pytest-xdist a worker hands its part to the controller
through ``workeroutput``, and the controller merges the parts (in any order) before
writing ``spqr.json`` and ``index.html`` and printing the leaderboard.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_spqr.core.errors import first_line
from pytest_spqr.core.record import ProcessUsage, RunRecorder, new_record

RECORDER_KEY = pytest.StashKey[RunRecorder]()
WORKER_OUTPUT = "spqr_record"


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def make_recorder(config: pytest.Config, options: dict[str, Any]) -> RunRecorder:
    from pytest_spqr.report.environment import commit_info

    commit = None if _is_worker(config) else commit_info(config.rootpath)
    header = new_record(options=options, rootdir=str(config.rootpath), commit=commit)
    return RunRecorder(header)


def _message(report: pytest.TestReport) -> str | None:
    if report.passed:
        return None
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", None)
    return crash or report.longreprtext or None


class Recording:
    """Hooks that feed and publish the run record (registered by the plugin)."""

    def __init__(self, config: pytest.Config, recorder: RunRecorder,
                 usage: Callable[[], ProcessUsage | None] = lambda: None) -> None:
        self.config = config
        self.recorder = recorder
        self.usage = usage
        self.written: Path | None = None
        """The HTML report, once written."""
        self.report_error: str | None = None
        """Why the HTML report could not be written, for the terminal summary."""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if _is_worker(self.config):
            return  # the controller sees every report and records outcomes once
        if "spqr" not in report.keywords:
            return  # evaluates no model, holds no gate: not part of the run record
        if report.when != "call" and report.passed:
            return
        outcome: str = report.outcome
        if report.when != "call" and report.failed:
            outcome = "error"
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        self.recorder.set_outcome(report.nodeid, outcome, duration=report.duration,
                                  message=_message(report))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        usage = self.usage()
        if usage is not None:
            self.recorder.add_usage(os.environ.get("PYTEST_XDIST_WORKER", "main"), usage)
        if _is_worker(self.config):
            # pytest-xdist sets `workeroutput` on a worker's config; pytest.Config does not declare it
            self.config.workeroutput[WORKER_OUTPUT] = self.recorder.to_json()  # type: ignore[attr-defined]
            return
        # the flag, else the ini key (checked at start-up like the flag: pytest_spqr.startup)
        directory = self.config.getoption("spqr_report") or self.config.getini("spqr_report") or None
        if directory is None:
            return  # asked for, a report is written even for a run that gated nothing ("no gate")
        from pytest_spqr.report.html import write_report

        unblurred = bool(self.config.getoption("spqr_report_unblurred")
                         or self.config.getini("spqr_report_unblurred"))
        try:
            self.written = write_report(self.recorder.record(), Path(directory), unblurred=unblurred)
        except Exception as exc:  # the JUnit file (written after this) must survive
            self.report_error = (
                f"spqr report: could not write {directory}: {first_line(exc)} — the test results "
                "above stand; rerun with --spqr-report pointing at a folder you can write"
            )
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a lost artefact is not a pass

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.report_error is not None:
            terminalreporter.write_line(self.report_error, red=True, bold=True)
        record = self.recorder.record()
        measured = any(True for _ in record.axes())
        if not measured and not any(t.outcome == "skipped" for t in record.tests):
            return
        from pytest_spqr.core.record import leaderboard
        from pytest_spqr.report.tables import leaderboard_lines

        terminalreporter.section("SPQR leaderboard")
        for line in leaderboard_lines(leaderboard(record)) if measured else ():
            terminalreporter.write_line(line)
        # never PASSED for a run whose gates were only let through or skipped
        gates = record.gates()
        colour = {"passed": "green", "failed": "red"}.get(gates.verdict, "yellow")
        terminalreporter.write_line(gates.line(), **{colour: True, "bold": True})
        from pytest_spqr.report.tables import usage_line

        used = usage_line(record)
        if used is not None:
            terminalreporter.write_line(f"spqr usage: {used}")
        if self.written is not None:
            terminalreporter.write_line(f"spqr report: {self.written}")


class XdistRecording:
    """Merges the record parts of xdist workers (registered only when xdist is active)."""

    def __init__(self, recorder: RunRecorder) -> None:
        self.recorder = recorder

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        part = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
        if part is not None:
            self.recorder.add_part(part, where=f"xdist worker {node.gateway.id}")
