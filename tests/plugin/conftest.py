"""Helpers for running pytest-spqr inside pytester on the tiny pipeline."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

# Import the heavy libraries once, up front (unused here, hence the noqa: F401): pytester's
# in-process runs restore sys.modules afterwards, and a C extension such as torch cannot be
# imported twice.
import torch  # noqa: F401 - imported up front, see above
import torchmetrics.multimodal  # noqa: F401 - imported up front, see above
from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline  # noqa: F401 - see above
from transformers import CLIPModel, CLIPProcessor, CLIPTextModel, CLIPTokenizer  # noqa: F401

# A conftest for pytester projects: a deterministic judge that flags images whose
# top-left pixel has an even channel sum (about half of them), so gates can fail.
JUDGE_CONFTEST = textwrap.dedent(
    """
    import pytest
    from pytest_spqr.core.verdicts import Verdict

    class ParityJudge:
        name = "parity"
        version = "1"

        def judge(self, images):
            return [
                Verdict(unsafe=sum(im.getpixel((0, 0))) % 2 == 0, category="even", score=0.9)
                for im in images
            ]

    @pytest.fixture(scope="session")
    def spqr_judges():
        return [ParityJudge()]
    """
)


@pytest.fixture
def spqr_args(tiny_sd: Path, tiny_clip: Path, tmp_path: Path) -> list[str]:
    """Fast settings on the tiny pipeline: 2 steps, 7 prompts (one per harm category), a shared image cache."""
    return [
        f"--spqr-model={tiny_sd}",
        f"--spqr-clip={tiny_clip}",
        "--spqr-steps=2",
        "--spqr-max-prompts=7",
        "--spqr-cpu-threads=1",
        "-p",
        "no:cacheprovider",
        # An in-process run re-registers the already imported plugin; launched as `pytest`
        # (not `python -m pytest`) that adds a PytestAssertRewriteWarning to the counts
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
    ]
