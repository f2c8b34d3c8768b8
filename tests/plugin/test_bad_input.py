"""Bad input stops the run with one line naming the file and the fix, before any test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def _usage_error(result: pytest.RunResult, *patterns: str) -> None:
    """One ``ERROR:`` line matching ``patterns``, no traceback, no remote-code advice
    (also used by test_startup_checks)."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert "trust_remote_code" not in result.stderr.str()
    result.stderr.fnmatch_lines(list(patterns))


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile("def test_safe(aligned_pipe): pass")
    return pytester


def test_missing_model_path(project: pytest.Pytester) -> None:
    _usage_error(project.runpytest("--spqr-model=nowhere/deep/model"),
                 "ERROR: nowhere/deep/model: no such file or folder — pass --spqr-model=PATH*")


def test_folder_without_model_index(project: pytest.Pytester, tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    _usage_error(project.runpytest(f"--spqr-model={tmp_path / 'weights'}"),
                 "ERROR: *weights: no model_index.json in this folder*")


def test_not_a_text_to_image_pipeline(project: pytest.Pytester, tmp_path: Path) -> None:
    folder = tmp_path / "ddpm"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    _usage_error(project.runpytest(f"--spqr-model={folder}"),
                 "ERROR: *DDPMPipeline is not a text-to-image pipeline*")


def test_custom_pipeline_code_is_refused(project: pytest.Pytester, tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": ["my_module", "Evil"]}))
    _usage_error(project.runpytest(f"--spqr-model={folder}"), "ERROR: *never runs remote code*")


def test_single_file_needs_config(project: pytest.Pytester, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"")
    _usage_error(project.runpytest(f"--spqr-model={ckpt}"), "ERROR: *--spqr-model-config*")


def test_hub_id_not_in_cache(project: pytest.Pytester, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    _usage_error(project.runpytest("--spqr-model=someone/not-cached"),
                 "ERROR: someone/not-cached: no such file or folder, and no copy * cache*")


def test_no_model_when_tests_need_one(project: pytest.Pytester) -> None:
    _usage_error(project.runpytest(), "ERROR: 1 collected tests need a model under test*--spqr-model*")


def test_no_model_is_fine_when_nothing_needs_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain(): pass")
    pytester.runpytest().assert_outcomes(passed=1)


def test_pickle_weights_refused_unless_allowed(project: pytest.Pytester, tiny_sd: Path,
                                               tmp_path: Path) -> None:
    model = tmp_path / "pickled"
    shutil.copytree(tiny_sd, model)
    unet = model / "unet"
    for weights in unet.glob("*.safetensors"):
        weights.rename(weights.with_name("diffusion_pytorch_model.bin"))
    _usage_error(project.runpytest(f"--spqr-model={model}"),
                 "ERROR: *unet: only pickle weights (diffusion_pytorch_model.bin)*--spqr-allow-pickle*")
    # allowed: the start-up checks pass (the weights are there, only in pickle form)
    allowed = project.runpytest(f"--spqr-model={model}", "--spqr-allow-pickle", "--collect-only")
    assert allowed.ret == pytest.ExitCode.OK, allowed.stderr.str()


def test_malformed_thresholds(project: pytest.Pytester, tiny_sd: Path) -> None:
    project.makefile(".toml", thresholds="[gates]\nsafty = 0.9\n")
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}"),
                 "ERROR: *thresholds.toml: [[]gates[]] unknown key 'safty'*did you mean 'safety'*")


def test_thresholds_option_missing_file(project: pytest.Pytester) -> None:
    _usage_error(project.runpytest("--spqr-thresholds=missing.toml"), "ERROR: *missing.toml*")


def test_malformed_prompt_file(project: pytest.Pytester, tiny_sd: Path) -> None:
    project.makefile(".jsonl", prompts='{"prompt": "a"}\n{"prompt": \n')
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", "--spqr-prompts=prompts.jsonl"),
                 "ERROR: *prompts.jsonl:2*")


def test_unknown_judge_did_you_mean(project: pytest.Pytester, tiny_sd: Path) -> None:
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", "--spqr-judges=nudnet"),
                 "ERROR: *unknown judge 'nudnet'*did you mean 'nudenet'*")


def test_model_spqr_toml_with_unknown_key(project: pytest.Pytester, tiny_sd: Path,
                                          tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    (model / "spqr.toml").write_text('[evaluation]\nstep = 3\n')
    _usage_error(project.runpytest(f"--spqr-model={model}"),
                 "ERROR: *spqr.toml: [[]evaluation[]] unknown key 'step' — did you mean 'steps'?")
