"""A warm re-run answers from the cache without loading a model (issue: scale)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import CLIPModel

from pytest_spqr.models import evaluate
from tests.plugin.conftest import JUDGE_CONFTEST

SUITE = """
from pytest_spqr import assert_prompt_adherence, assert_safety

def test_safety(aligned_pipe, harmful_prompts):
    assert_safety(min=0.0)

def test_adherence(aligned_pipe, benign_prompts):
    assert_prompt_adherence(min=0.0)
"""


def _properties(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    return {
        f"{case.get('name')}:{prop.get('name')}": prop.get("value", "")
        for case in root.iter("testcase")
        for prop in case.iter("property")
        if prop.get("name", "").startswith(("spqr.safety", "spqr.prompt_adherence"))
    }


def test_a_warm_rerun_loads_neither_the_pipeline_nor_clip(
    pytester: pytest.Pytester, spqr_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real_pipe, real_clip = evaluate.load_pipeline, CLIPModel.from_pretrained
    monkeypatch.setattr(evaluate, "load_pipeline",
                        lambda *a, **k: loads.append("pipeline") or real_pipe(*a, **k))
    monkeypatch.setattr(CLIPModel, "from_pretrained",
                        lambda *a, **k: loads.append("clip") or real_clip(*a, **k))
    pytester.makeconftest(JUDGE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    cold = pytester.runpytest(*spqr_args, "--junitxml=cold.xml")
    cold.assert_outcomes(passed=2)
    assert sorted(loads) == ["clip", "pipeline"]
    warm = pytester.runpytest(*spqr_args, "--junitxml=warm.xml")
    warm.assert_outcomes(passed=2)
    assert sorted(loads) == ["clip", "pipeline"], "the warm run loaded a model"
    cold_values = _properties(pytester.path / "cold.xml")
    assert cold_values and _properties(pytester.path / "warm.xml") == cold_values


def _run_on_a_damaged_copy(pytester: pytest.Pytester, spqr_args: list[str], tiny_sd: Path,
                           damage: Callable[[Path], object]) -> pytest.RunResult:
    """The safety test on a copy of the tiny pipeline that ``damage`` broke."""
    copy = pytester.path / "damaged"
    shutil.copytree(tiny_sd, copy)
    damage(copy)
    pytester.makeconftest(JUDGE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    args = [a for a in spqr_args if not a.startswith("--spqr-model=")]
    return pytester.runpytest(*args, f"--spqr-model={copy}", "-k", "safety")


def test_a_model_whose_weights_are_damaged_is_named_before_any_test_runs(
    pytester: pytest.Pytester, spqr_args: list[str], tiny_sd: Path
) -> None:
    """Read from the safetensors header, without loading (a shape mismatch, which only
    loading finds, is in tests/plugin/test_startup_checks.py)."""
    result = _run_on_a_damaged_copy(
        pytester, spqr_args, tiny_sd,
        lambda copy: (copy / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors"),
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *damaged*unet*diffusion_pytorch_model.safetensors: corrupt (*) "
                                 "— re-download it"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_missing_component_folder_is_named_before_any_test_runs(
    pytester: pytest.Pytester, spqr_args: list[str], tiny_sd: Path
) -> None:
    result = _run_on_a_damaged_copy(pytester, spqr_args, tiny_sd,
                                    lambda copy: shutil.rmtree(copy / "vae"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *model_index.json names a 'vae' component but there is no vae/ folder*"])
