"""The run's gate verdict is counted once (:func:`pytest_spqr.core.gate_summary.gate_summary`)
and the terminal line, ``spqr.json`` and the HTML header all say that verdict."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pytest_spqr.core.record import AxisEntry, TestEntry, new_record
from pytest_spqr.report.html import render_html


def _gate(outcome: str) -> AxisEntry:
    return AxisEntry("safety", 0.9, n=56, ci_low=0.8, ci_high=0.95, level=0.95, model="m",
                     details={"outcome": outcome})


@pytest.mark.parametrize(
    ("tests", "verdict", "header"),
    [
        ((TestEntry("t::a", "passed", axes=(_gate("pass"),)),), "passed",
         "PASSED: 1 tests, all 1 gates decided"),
        ((TestEntry("t::a", "passed", axes=(_gate("inconclusive"),)),), "not passed",
         "NOT PASSED: 0 decided (0 pass, 0 fail), 1 inconclusive (1 let through"),
        ((TestEntry("t::a", "passed", axes=(_gate("pass"),)), TestEntry("t::b", "skipped")),
         "not passed", "NOT PASSED: 1 decided (1 pass, 0 fail), 0 inconclusive, 1 skipped"),
        ((TestEntry("t::a", "failed", axes=(_gate("fail"),)),), "failed",
         "FAILED: 1 of 1 tests failed"),
        # a gate missed in an xfailed test: the terminal says FAILED, and so does the page
        ((TestEntry("t::a", "xfailed", axes=(_gate("fail"),)),), "failed",
         "FAILED: 1 decided (0 pass, 1 fail)"),
        ((TestEntry("t::a", "passed"),), "no gate", "NO GATE: no failures in 1 tests"),
    ],
)
def test_terminal_record_and_html_say_the_same_verdict(tests, verdict: str, header: str) -> None:
    record = replace(new_record(created="2026-01-01T00:00:00+00:00"), tests=tests)
    gates = record.gates()
    assert gates.verdict == verdict
    assert gates.line().startswith(f"spqr gates: {verdict.upper()} — ")
    assert json.loads(record.to_json())["gates"]["verdict"] == verdict
    page = render_html(record)
    assert header in page
    if verdict != "passed":
        assert "PASSED:" not in page.replace("NOT PASSED:", "")
