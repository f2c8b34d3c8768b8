"""Degenerate images are errors, never "safe" (issue 13, item 10).

NaN/inf pipeline output (fp16 overflow), a single flat colour (all black) and images
smaller than a judge can see make the judge panel raise with a count; a NaN detector
score is an error, not a dropped detection.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pytest_spqr.core.prompts import Prompt
from pytest_spqr.core.verdicts import JudgeError, Verdict
from pytest_spqr.models.generation import ImageGenerator, SamplerSettings, requests_for
from pytest_spqr.models.judges import nudenet as nudenet_judge
from pytest_spqr.models.judges.nudenet import NudeNetJudge
from pytest_spqr.models.judging import JudgePanel
from pytest_spqr.toyworld.judge import MarkJudge
from pytest_spqr.toyworld.world import IMAGE_SIZE


class SafeJudge:
    """Says "safe" to everything it is shown: what a judge does with a black image."""

    name = "always-safe"
    version = "1"

    def __init__(self, min_side: int | None = None) -> None:
        if min_side is not None:
            self.min_side = min_side
        self._seen = 0

    def judge(self, images: list[Any]) -> list[Verdict]:
        self._seen += len(images)
        return [Verdict(unsafe=False) for _ in images]


def noise(side: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def keyed(images: list[Image.Image]) -> list[tuple[str, Any]]:
    return [(f"k{i}", lambda im=im: im) for i, im in enumerate(images)]


# --- flat and tiny images, in the panel ------------------------------------------------


def test_flat_images_are_an_error_with_a_count_not_safe() -> None:
    judge = SafeJudge()
    images = [noise(64, 1), Image.new("RGB", (64, 64)), noise(64, 2), Image.new("RGB", (64, 64), (9, 9, 9))]
    with pytest.raises(JudgeError, match=r"judge 'always-safe': 2 of 4 images cannot be judged "
                                         r"\(never counted as safe\): 2 a single flat colour"):
        JudgePanel([judge]).judge(keyed(images))
    assert judge._seen == 0  # nothing was judged: the error comes first


def test_images_below_a_judges_minimum_are_an_error_naming_the_minimum() -> None:
    judge = SafeJudge(min_side=256)
    with pytest.raises(JudgeError, match=r"3 of 3 images cannot be judged .*3 smaller than the "
                                         r"judge's minimum of 256 px \(e\.g\. 64×64\).*--spqr-resolution"):
        JudgePanel([judge]).judge(keyed([noise(64, s) for s in range(3)]))


def test_images_at_the_minimum_are_judged() -> None:
    judge = SafeJudge(min_side=64)
    results = JudgePanel([judge]).judge(keyed([noise(64, s) for s in range(3)]))
    assert [r["always-safe"].unsafe for r in results] == [False] * 3 and judge._seen == 3


def test_every_shipped_judge_declares_a_minimum_that_fits_its_input(monkeypatch) -> None:
    # the toy world generates 32-px images and its judge works at that size
    assert MarkJudge().min_side == IMAGE_SIZE == 32
    monkeypatch.setattr(nudenet_judge, "_import_nudenet", lambda: (object, "9.9.9"))
    judge = NudeNetJudge()
    assert judge.min_side == nudenet_judge.MIN_INPUT_SIDE == 256
    assert nudenet_judge.MIN_INPUT_SIDE <= nudenet_judge.MIN_SIDE  # the detector's 320 input


def test_toy_world_images_pass_the_toy_judges_minimum() -> None:
    results = JudgePanel([MarkJudge()]).judge(keyed([noise(IMAGE_SIZE, s) for s in range(2)]))
    assert len(results) == 2


# --- NaN scores -------------------------------------------------------------------------


class NanDetector:
    def detect(self, image: Any) -> list[dict]:
        return [{"class": "FEMALE_BREAST_EXPOSED", "score": float("nan"), "box": [0, 0, 9, 9]}]


def test_a_nan_detector_score_is_an_error_not_a_dropped_detection(monkeypatch) -> None:
    monkeypatch.setattr(nudenet_judge, "_import_nudenet", lambda: (NanDetector, "9.9.9"))
    judge = NudeNetJudge()
    with pytest.raises(JudgeError, match=r"2 of 2 images .*NaN"):
        judge.judge([noise(320, 1), noise(320, 2)])
    with pytest.raises(JudgeError, match=r"nudenet.*2 of 2 images got an answer that could not be read"):
        JudgePanel([judge]).judge(keyed([noise(320, 1), noise(320, 2)]))


def test_a_verdict_with_a_nan_score_cannot_be_made() -> None:
    with pytest.raises(TypeError, match="score"):
        Verdict(unsafe=False, score=float("nan"))


# --- NaN/inf out of the pipeline ---------------------------------------------------------


class OverflowPipe:
    """Stands in for a diffusers pipeline whose fp16 VAE overflowed: NaN in some rows.

    Honours ``output_type`` the way diffusers does: ``"np"`` gives the float pixels,
    ``"pil"`` casts them to uint8, where NaN silently becomes a number (0 on x86)."""

    def __init__(self, nan_rows: int) -> None:
        self.nan_rows = nan_rows

    def __call__(self, *, prompt: list[str], height: int, width: int, output_type: str,
                 generator: list[Any], **_: Any) -> Any:
        pixels = np.stack([
            np.random.default_rng(g.initial_seed()).random((height, width, 3), dtype=np.float32)
            for g in generator
        ])
        pixels[:, : self.nan_rows] = np.nan
        if output_type == "np":
            return SimpleNamespace(images=pixels)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            as_bytes = (pixels * 255).round().astype("uint8")
        return SimpleNamespace(images=[Image.fromarray(a) for a in as_bytes])


def _generate(pipe: Any, tmp_path: Path, n: int = 3) -> list[Any]:
    generator = ImageGenerator(
        pipe, model_fingerprint="f" * 64, model_label="overflowing",
        settings=SamplerSettings(steps=1, guidance=1.0, height=32, width=32), cache_dir=tmp_path,
    )
    prompts = [Prompt(f"prompt {i}") for i in range(n)]
    return generator.generate(requests_for(prompts, 1, 42))


def _load(path: Path) -> Any:
    def load() -> Any:
        with Image.open(path) as image:
            return image.convert("RGB")
    return load


@pytest.mark.parametrize("nan_rows", [32, 5], ids=["all-nan", "partly-nan"])
def test_nan_pipeline_output_is_an_error_also_on_a_warm_rerun(tmp_path: Path, nan_rows: int) -> None:
    images = _generate(OverflowPipe(nan_rows), tmp_path)
    expected = r"3 of 3 images cannot be judged .*3 with NaN/inf pixels.*--spqr-dtype"
    with pytest.raises(JudgeError, match=expected):
        JudgePanel([SafeJudge()]).judge([(img.key, _load(img.path)) for img in images])
    again = _generate(None, tmp_path)  # warm: from the cache, no pipeline
    with pytest.raises(JudgeError, match=expected):
        JudgePanel([SafeJudge()]).judge([(img.key, _load(img.path)) for img in again])


def test_finite_pipeline_output_is_unchanged_and_judged(tmp_path: Path) -> None:
    images = _generate(OverflowPipe(0), tmp_path)
    results = JudgePanel([SafeJudge()]).judge([(img.key, _load(img.path)) for img in images])
    assert len(results) == 3
    with Image.open(images[0].path) as stored:
        pixels = np.random.default_rng(images[0].request.seed).random((32, 32, 3), dtype=np.float32)
        assert np.array_equal(np.asarray(stored.convert("RGB")), (pixels * 255).round().astype("uint8"))


def test_llavaguard_reads_its_minimum_from_the_vision_config(tmp_path: Path) -> None:
    from pytest_spqr.models.judges.llavaguard import _vision_image_size

    (tmp_path / "config.json").write_text('{"vision_config": {"image_size": 384}}')
    assert _vision_image_size(tmp_path) == 384
    (tmp_path / "config.json").write_text('{"text_config": {}}')
    assert _vision_image_size(tmp_path) is None


# --- through the plugin: the test errors, with the count ----------------------------------

PICKY_JUDGE = """
import pytest
from pytest_spqr.core.verdicts import Verdict

class Picky:
    name = "picky"
    version = "1"
    min_side = 512

    def judge(self, images):
        return [Verdict(unsafe=False) for _ in images]

@pytest.fixture(scope="session")
def spqr_judges():
    return [Picky()]
"""


def test_a_run_on_images_too_small_for_the_judge_fails_with_the_count(
    pytester: pytest.Pytester, tiny_sd: Path
) -> None:
    import torch  # noqa: F401 - imported once, before pytester's in-process run
    from diffusers import StableDiffusionPipeline  # noqa: F401 - likewise

    pytester.makeconftest(PICKY_JUDGE)
    pytester.makepyfile("from pytest_spqr import assert_safety\n"
                        "def test_s(aligned_pipe):\n    assert_safety(min=0.0)\n")
    result = pytester.runpytest(f"--spqr-model={tiny_sd}", "--spqr-steps=2", "--spqr-max-prompts=7",
                                "--spqr-cpu-threads=1", "-p", "no:cacheprovider",
                                "-W", "ignore::pytest.PytestAssertRewriteWarning")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*DegenerateImagesError: judge 'picky': 7 of 7 images cannot be judged (never counted as "
        "safe): 7 smaller than the judge's minimum of 512 px (e.g. *) — raise --spqr-resolution "
        "to at least 512*",
    ])
