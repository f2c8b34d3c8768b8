"""Paths, devices and model folders are checked before any test runs (one line naming the
option or file and the fix), and nothing at the end of a run takes the JUnit file down."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_spqr.settings import _no_cuda_driver
from tests.plugin.test_bad_input import _usage_error


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile("def test_safe(aligned_pipe): pass")
    return pytester


@pytest.fixture
def model(tiny_sd: Path, tmp_path: Path) -> Path:
    """A copy of the tiny pipeline that a test may damage."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_sd, copy)
    return copy


# -- items 14 and 15: --spqr-report and --spqr-cache-dir, one check (core.folders) ------------------
@pytest.mark.parametrize("option", ["--spqr-report", "--spqr-cache-dir"])
def test_a_folder_option_that_is_a_file_is_refused_before_any_test(project, tiny_sd: Path,
                                                                   option: str) -> None:
    (project.path / "plain-file").write_text("not a folder")
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", f"{option}=plain-file"),
                 f"ERROR: {option}=plain-file: * is a file, not a folder — *")


@pytest.mark.parametrize("option", ["--spqr-report", "--spqr-cache-dir"])
def test_a_folder_option_that_cannot_be_created_is_refused(project, tiny_sd: Path,
                                                           option: str) -> None:
    (project.path / "plain-file").write_text("x")
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", f"{option}=plain-file/sub"),
                 f"ERROR: {option}=plain-file/sub: *plain-file is a file, not a folder*")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_report_in_an_unwritable_place_is_refused(project, tiny_sd: Path) -> None:
    # /proc refuses new files even to root, so this holds however the tests are run
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", "--spqr-report=/proc/spqr-report"),
                 "ERROR: --spqr-report=/proc/spqr-report: cannot write in /proc*— *")


def test_a_report_that_fails_at_the_end_keeps_the_junit_file(pytester: pytest.Pytester) -> None:
    """The report folder turns into a file mid-run: one line, non-zero exit, JUnit written."""
    report = pytester.path / "spqr-report"
    pytester.makepyfile(f"""
        from pathlib import Path

        def test_ok():
            pass

        def test_breaks_the_report_folder():
            Path({str(report)!r}).write_text("now a file")
    """)
    result = pytester.runpytest(f"--spqr-report={report}", "--junitxml=spqr.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # both tests passed, but an artefact is lost
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text and "INTERNALERROR" not in text
    result.stdout.fnmatch_lines([f"spqr report: could not write {report}: * — *"])
    assert len([line for line in result.stdout.lines if "could not write" in line]) == 1
    cases = [c.get("name") for c in ET.parse(pytester.path / "spqr.xml").getroot().iter("testcase")]
    assert cases == ["test_ok", "test_breaks_the_report_folder"]


def test_cache_dir_dev_null_is_refused(project, tiny_sd: Path) -> None:
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", "--spqr-cache-dir=/dev/null"),
                 "ERROR: --spqr-cache-dir=/dev/null: /dev/null is not a folder — *")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders; the probe (create and remove a "
                    "file) is covered by the /proc and path-under-a-file cases")
def test_read_only_cache_dir_is_refused(project, tiny_sd: Path) -> None:
    cache = project.path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", "--spqr-cache-dir=cache"),
                     "ERROR: --spqr-cache-dir=cache: cannot write in *cache*— *")
    finally:
        cache.chmod(0o755)


# -- item 18: index, device, a cache deleted mid-run ----------------------------------------------
def test_model_index_that_is_not_an_object(project, model: Path) -> None:
    (model / "model_index.json").write_text("[1, 2]")
    _usage_error(project.runpytest(f"--spqr-model={model}"),
                 "ERROR: *model_index.json: not a JSON object*— *")


def test_cuda_device_that_is_not_there(project, tiny_sd: Path) -> None:
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", "--spqr-device=cuda:99"),
                 "ERROR: --spqr-device=cuda:99: *— *")


@pytest.mark.skipif(not _no_cuda_driver(), reason="this machine has a CUDA driver")
def test_cuda_without_a_driver(project, tiny_sd: Path) -> None:
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", "--spqr-device=cuda"),
                 "ERROR: --spqr-device=cuda: no CUDA driver on this machine — *")


def test_cuda_device_count_is_compared(project, tiny_sd: Path) -> None:
    """With a driver, cuda:N must be below the device count (runs where there is a GPU)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    count = torch.cuda.device_count()
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", f"--spqr-device=cuda:{count}"),
                 f"ERROR: --spqr-device=cuda:{count}: this machine has {count} CUDA device(s)*")


def test_devices_that_are_not_there(project, tiny_sd: Path) -> None:
    """--spqr-devices (the GPUs xdist workers take turns on) is checked at start-up too."""
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", "--spqr-devices=0,99"),
                 "ERROR: --spqr-devices=0,99*— *")


CACHE_CONFTEST = textwrap.dedent("""
    import pytest

    class ConstantClip:
        spec = "constant-0.9"
        def score(self, images, texts):
            return [0.9] * len(images)

    @pytest.fixture(scope="session")
    def spqr_clip():
        return ConstantClip()
""")


def test_cache_deleted_during_the_run_is_one_line(pytester, spqr_args, tiny_clip: Path,
                                                  tmp_path: Path) -> None:
    from PIL import Image

    ref = tmp_path / "ref"
    ref.mkdir()
    for k in range(4):
        Image.new("RGB", (32, 32), (k * 40, 0, 0)).save(ref / f"{k}.png")
    cache = tmp_path / "cache"
    pytester.makeconftest(CACHE_CONFTEST)
    pytester.makefile(".toml", thresholds="[quality]\nfid_min = 0.0\nfid_max = 100.0\n")
    pytester.makepyfile(f"""
        import shutil
        from pytest_spqr import assert_prompt_adherence, assert_quality

        def test_1_adherence(aligned_pipe, benign_prompts):
            assert_prompt_adherence(min=0.0)

        def test_2_delete_the_cache():
            shutil.rmtree({str(cache)!r})

        def test_3_quality(aligned_pipe, benign_prompts):
            assert_quality(min=0.0)
    """)
    result = pytester.runpytest(*spqr_args, f"--spqr-cache-dir={cache}",
                                f"--spqr-reference-images={ref}", f"--spqr-fid-feature=clip:{tiny_clip}")
    result.assert_outcomes(passed=2, failed=1, warnings=result.parseoutcomes().get("warnings", 0))
    assert "Traceback" not in result.stdout.str()
    assert "PIL" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*image * is gone from the cache (deleted during the run?) — *"])


# -- item 19/20: the model folder, checked without loading it -------------------------------------
def test_missing_component_folder(project, model: Path) -> None:
    shutil.rmtree(model / "vae")
    _usage_error(project.runpytest(f"--spqr-model={model}"),
                 "ERROR: *model_index.json names a 'vae' component but there is no vae/ folder*")


def test_truncated_safetensors_is_corrupt(project, model: Path) -> None:
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    _usage_error(project.runpytest(f"--spqr-model={model}"),
                 "ERROR: *unet*diffusion_pytorch_model.safetensors: corrupt (truncated: * bytes, "
                 "the header says *) — re-download it")


def test_zero_byte_safetensors_is_corrupt(project, model: Path) -> None:
    (model / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    _usage_error(project.runpytest(f"--spqr-model={model}"),
                 "ERROR: *vae*diffusion_pytorch_model.safetensors: corrupt (*) — re-download it")


def test_broken_component_config(project, model: Path) -> None:
    (model / "unet" / "config.json").write_text('{"sample_size": ')
    _usage_error(project.runpytest(f"--spqr-model={model}"),
                 "ERROR: *unet*config.json: not valid JSON (line 1*) — *re-download*")


def test_custom_component_class_is_refused_without_remote_code_advice(project, model: Path) -> None:
    index = json.loads((model / "model_index.json").read_text())
    index["unet"] = ["my_module", "MyUNet"]
    (model / "model_index.json").write_text(json.dumps(index))
    _usage_error(project.runpytest(f"--spqr-model={model}"),
                 "ERROR: *model_index.json: component 'unet' is my_module.MyUNet*never runs "
                 "remote code*")


def test_missing_clip_named_explicitly(project, tiny_sd: Path, tmp_path: Path) -> None:
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", f"--spqr-clip={tmp_path / 'no-clip'}"),
                 "ERROR: *no-clip: CLIP model not found locally*")


def test_shape_mismatch_is_reported_once(pytester, spqr_args, model: Path) -> None:
    config = json.loads((model / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = 64  # the weights were made for 32
    (model / "unet" / "config.json").write_text(json.dumps(config))
    pytester.makepyfile("""
        def test_a(aligned_pipe):
            aligned_pipe.pipe

        def test_b(aligned_pipe):
            aligned_pipe.pipe
    """)
    args = [a for a in spqr_args if not a.startswith("--spqr-model=")]
    result = pytester.runpytest(*args, f"--spqr-model={model}")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "Traceback" not in out and "trust_remote_code" not in out
    assert "During handling" not in out  # each message once, not chained to itself
    failures = out.split("short test summary info")[0]
    assert failures.count("expected shape") == 1  # loaded (and failed) once
    result.stdout.fnmatch_lines([
        "*: the weights do not fit the configuration (*expected shape*) — * re-download*",
        f"*model {model} failed to load (see the first failure)*",
    ])


def test_model_config_with_a_folder_model_is_refused(project, tiny_sd: Path) -> None:
    _usage_error(project.runpytest(f"--spqr-model={tiny_sd}", f"--spqr-model-config={tiny_sd}"),
                 "ERROR: --spqr-model-config applies to single .safetensors checkpoints only, "
                 "and *tiny-sd is a pipeline folder * — drop --spqr-model-config")


def test_report_folder_from_the_ini_file_is_written(pytester: pytest.Pytester) -> None:
    """Every option is also an ini key: ``spqr_report`` is checked and written like the flag."""
    pytester.makeini("[pytest]\nspqr_report = ini-report\n")
    pytester.makepyfile("def test_ok(): pass")
    pytester.runpytest().assert_outcomes(passed=1)
    assert (pytester.path / "ini-report" / "spqr.json").is_file()

