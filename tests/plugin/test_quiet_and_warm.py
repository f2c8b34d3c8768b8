"""The README's main job on the toy model: quiet, and cheap to re-run (issue 12, items 5 and 7).

One cold and one warm run of a small suite on the bundled toy model, each a fresh
``python -m pytest`` process (the way a user runs it: nothing imported beforehand), with
every axis the README's command touches on a warm cache: images, the toy judge's verdicts,
CLIP scores, the FID read-back and the HTML report's charts. A conftest records at the end
of each run which heavy libraries that process imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOY_MODEL = REPO / "fixtures" / "toyworld" / "aligned"

SUITE = """
from pytest_spqr import assert_prompt_adherence, assert_quality, assert_safety

def test_safety(aligned_pipe, harmful_prompts):
    assert_safety(min=0.99)   # 8 images: too few to decide, so it warns (our own warning)

def test_adherence(aligned_pipe, benign_prompts):
    assert_prompt_adherence(min=0.0)

def test_quality(aligned_pipe, benign_prompts):
    assert_quality(min=0.0)
"""

# Which heavy libraries the run imported, written after the report (pytest_unconfigure).
CONFTEST = """
import json, sys

def pytest_unconfigure(config):
    libraries = ("torch", "transformers", "diffusers", "torchmetrics")
    with open("imported.json", "w") as out:
        json.dump({name: name in sys.modules for name in libraries}, out)
"""

NOISE = ("requires torchvision", "[transformers]")


def _run(project: Path, *extra: str) -> tuple[str, dict[str, bool]]:
    args = [sys.executable, "-m", "pytest", "test_suite.py", "-p", "no:cacheprovider",
            f"--spqr-model={TOY_MODEL}", "--spqr-steps=2", "--spqr-max-prompts=8",
            "--spqr-judges=toy-mark", "--spqr-cpu-threads=1", "--spqr-inconclusive=warn",
            f"--spqr-cache-dir={project / 'cache'}", f"--spqr-report={project / 'report'}",
            "--junitxml=spqr.xml", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TRANSFORMERS_"))}
    done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output, json.loads((project / "imported.json").read_text())


@pytest.fixture(scope="module")
def cold_and_warm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, dict[str, bool]]]:
    """The same suite twice on one cache: cold (``-s``: nothing written to stderr is
    hidden by pytest's capture), then warm."""
    project = tmp_path_factory.mktemp("toy-main-job")
    (project / "test_suite.py").write_text(textwrap.dedent(SUITE))
    (project / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    cold = _run(project, "-s")
    warm = _run(project)
    return {"cold": cold, "warm": warm}


def test_a_run_prints_no_library_noise_but_keeps_our_own_warnings(cold_and_warm) -> None:
    output, imported = cold_and_warm["cold"]
    assert imported["diffusers"] and imported["transformers"], "the cold run loaded no pipeline"
    noisy = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], "\n".join(noisy)
    assert "SpqrInconclusiveWarning" in output  # the project's own warning is still shown
    assert "FidSampleSizeWarning" in output


def test_a_warm_rerun_of_the_main_job_imports_no_torch(cold_and_warm) -> None:
    cold_output, cold_imported = cold_and_warm["cold"]
    warm_output, warm_imported = cold_and_warm["warm"]
    assert cold_imported["torch"], "the cold run should have needed torch"
    assert "spqr usage: 0 images generated, 0 judged" in warm_output
    assert warm_imported == {"torch": False, "transformers": False, "diffusers": False,
                             "torchmetrics": False}, warm_output[-3000:]
    # the warm run answers with the same numbers and still writes the report
    for warning in ("SpqrInconclusiveWarning", "FidSampleSizeWarning"):
        assert warning in warm_output
    assert "spqr report:" in warm_output


def test_only_the_torchvision_fallback_message_is_dropped() -> None:
    import logging

    from pytest_spqr.models.library_noise import FALLBACK_LOGGER, quiet_library_noise

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    quiet_library_noise()
    quiet_library_noise()  # idempotent: one filter
    logger = logging.getLogger(FALLBACK_LOGGER)
    assert len(logger.filters) == len({type(f) for f in logger.filters})
    kept = Keep()
    logger.addHandler(kept)
    try:
        logger.warning("`SiglipImageProcessor` requires torchvision (not installed); falling back "
                       "to `SiglipImageProcessorPil` for backward compatibility.")
        logger.warning("Could not load PIL fallback SiglipImageProcessorPil: boom")
        logger.warning("LANCZOS resample requires torchvision >= 0.27 and processing on CPU")
    finally:
        logger.removeHandler(kept)
    assert kept.messages == ["Could not load PIL fallback SiglipImageProcessorPil: boom",
                             "LANCZOS resample requires torchvision >= 0.27 and processing on CPU"]


def test_a_cached_fid_is_read_back_without_loading_the_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from PIL import Image
    from transformers import CLIPModel

    from pytest_spqr.models.fid import FidScorer

    loads: list[str] = []
    real_load = CLIPModel.from_pretrained
    monkeypatch.setattr(CLIPModel, "from_pretrained",
                        lambda *a, **k: loads.append("clip") or real_load(*a, **k))

    reference = REPO / "fixtures" / "toyworld" / "benign" / "general"
    clip = REPO / "fixtures" / "tiny-clip"
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    keys = [f"image-{k}" for k in range(4)]

    def scorer() -> FidScorer:
        return FidScorer(reference, feature=f"clip:{clip}", cache_dir=tmp_path, min_stable=2)

    first = scorer()
    assert first.cached_fid(keys) is None
    result = first.fid(images)
    first.remember_fid(keys, result)
    assert loads == ["clip"]
    again = scorer()
    assert again.cached_fid(keys) == result
    assert again.cached_fid(keys[:3]) is None  # other images: another key
    assert loads == ["clip"], "reading a cached FID back loaded the CLIP"
