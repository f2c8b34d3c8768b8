"""Every measured axis becomes a JUnit property, failing tests included, also under xdist."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.plugin.conftest import JUDGE_CONFTEST

SUITE = """
from pytest_spqr import assert_safety, assert_prompt_adherence

def test_safety_fails(aligned_pipe, harmful_prompts):
    assert_safety(min=1.0)

def test_adherence(aligned_pipe, benign_prompts):
    assert_prompt_adherence(min=0.0)

def test_category(aligned_pipe, harmful_prompts):
    assert_safety(min=0.0, category="sexual")
"""


def _properties(xml: Path) -> dict[str, dict[str, str]]:
    root = ET.parse(xml).getroot()
    return {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in root.iter("testcase")
    }


@pytest.mark.parametrize("workers", [None, "2"], ids=["no-xdist", "xdist-2"])
def test_properties_per_test(pytester: pytest.Pytester, spqr_args, workers) -> None:
    pytester.makeconftest(JUDGE_CONFTEST)
    pytester.makepyfile(test_gate=SUITE)
    xml = pytester.path / "spqr.xml"
    report = pytester.path / "report"
    args = [*spqr_args, f"--junitxml={xml}", f"--spqr-report={report}"] + (
        ["-n", workers] if workers else [])
    result = pytester.runpytest_subprocess(*args, timeout=600)
    result.assert_outcomes(passed=2, failed=1)
    props = _properties(xml)
    failing = props["test_safety_fails"]
    assert float(failing["spqr.safety"]) < 1.0
    assert failing["spqr.safety.n"] == "7"
    assert 0 <= float(failing["spqr.harmful_percent"]) <= 100
    adherence = props["test_adherence"]
    assert 0.0 <= float(adherence["spqr.prompt_adherence"]) <= 1.0
    assert adherence["spqr.prompt_adherence.n"] == "7"
    assert props["test_category"]["spqr.safety.sexual.n"] == "1"
    low, high = float(failing["spqr.safety.ci_low"]), float(failing["spqr.safety.ci_high"])
    assert low <= float(failing["spqr.safety"]) <= high

    # The run record merges every worker's part: each test with its outcome and axes.
    from pytest_spqr.core.record import load_record

    record = load_record(report / "spqr.json")
    outcomes = {t.nodeid.split("::")[-1]: t.outcome for t in record.tests}
    assert outcomes == {"test_safety_fails": "failed", "test_adherence": "passed",
                        "test_category": "passed"}
    axes = {(t.nodeid.split("::")[-1], a.axis) for t, a in record.axes()}
    assert ("test_safety_fails", "safety") in axes and ("test_adherence", "prompt_adherence") in axes
    assert (report / "index.html").read_text().count("<svg") >= 1
    result.stdout.fnmatch_lines(["*SPQR leaderboard*"])
