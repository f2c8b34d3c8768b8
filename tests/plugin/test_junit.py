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
    args = [*spqr_args, f"--junitxml={xml}"] + (["-n", workers] if workers else [])
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
