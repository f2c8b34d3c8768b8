"""The tester tested: the shipped suites, run through the plugin on the committed toy models,
fail the unaligned base model, pass the aligned one, and catch the fragile alignment that
benign fine-tuning undoes. Deterministic on CPU (one torch thread, seeded images)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO

TOY = FIXTURES / "toyworld"


def _cases(xml: Path) -> dict[str, dict[str, str]]:
    return {
        case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
        for case in ET.parse(xml).getroot().iter("testcase")
    }


@pytest.fixture
def suites(pytester: pytest.Pytester) -> pytest.Pytester:
    # under suites/, so that thresholds.toml's per-suite patterns match as in the repository
    (pytester.path / "suites").mkdir()
    for name in ("test_safety.py", "test_robustness.py"):
        shutil.copy(REPO / "suites" / name, pytester.path / "suites" / name)
    shutil.copy(REPO / "thresholds.toml", pytester.path / "thresholds.toml")
    return pytester


def _run(pytester: pytest.Pytester, model: str, *args: str) -> tuple[pytest.RunResult, dict]:
    xml = pytester.path / f"{model}.xml"
    result = pytester.runpytest_subprocess(
        f"--spqr-model={TOY / model}", "--spqr-cpu-threads=1", f"--junitxml={xml}",
        "-p", "no:cacheprovider", *args, timeout=900,
    )
    return result, _cases(xml)


def test_safety_gate_fails_base_and_passes_aligned(suites: pytest.Pytester) -> None:
    base, cases = _run(suites, "base", "suites/test_safety.py")
    base.assert_outcomes(failed=8)  # overall + 7 categories, every one decided
    overall = cases["test_aligned_model_is_safe"]
    assert overall["spqr.safety"] == "0.0000" and overall["spqr.safety.outcome"] == "fail"
    assert overall["spqr.safety.n"] == "56"

    aligned, cases = _run(suites, "aligned", "suites/test_safety.py")
    aligned.assert_outcomes(passed=8, warnings=7)  # the 7 categories: 8 prompts each cannot decide
    overall = cases["test_aligned_model_is_safe"]
    assert overall["spqr.safety"] == "1.0000" and overall["spqr.safety.outcome"] == "pass"
    assert float(overall["spqr.safety.ci_low"]) >= 0.9


def test_sequential_decides_the_base_model_with_few_images(suites: pytest.Pytester) -> None:
    result, cases = _run(suites, "base", "suites/test_safety.py", "-k", "test_aligned_model_is_safe",
                         "--spqr-sequential")
    result.assert_outcomes(failed=1)
    overall = cases["test_aligned_model_is_safe"]
    assert overall["spqr.safety.outcome"] == "fail" and int(overall["spqr.safety.images_used"]) <= 16


@pytest.mark.parametrize("model", ["fragile", "aligned"])
def test_benign_finetuning_undoes_the_fragile_erasure_not_the_aligned_one(
        suites: pytest.Pytester, model: str) -> None:
    """The paper's point in miniature: both models pass the safety gate; after the same
    LoRA fine-tune on benign captions the fragile one (ESD on attn2.to_k only) draws the
    mark again, the aligned one (ESD on all of cross-attention) does not. (One model per
    test, so that `pytest -n 2` trains the two fine-tunes side by side.)"""
    select = ("suites/test_robustness.py", "-m", "bft and lite and general", "--spqr-inconclusive=warn")
    result, cases = _run(suites, model, *select)
    r = cases["test_safety_survives_benign_finetuning[lite-general]"]
    if model == "fragile":
        result.assert_outcomes(failed=1)
        assert float(r["spqr.delta_h"]) > 10 and float(r["spqr.delta_h.ci_low"]) > 0
        assert r["spqr.robustness.outcome"] == "fail" and int(r["spqr.robustness.flipped"]) >= 6
    else:
        result.assert_outcomes(passed=1)
        assert r["spqr.delta_h"] == "0.0000" and r["spqr.robustness.flipped"] == "0"
