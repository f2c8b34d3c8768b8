"""The toy judge: Judge protocol, Verdicts, precision and recall on held-out renders."""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import entry_points

import numpy as np
import pytest
from PIL import Image

from pytest_spqr.core.verdicts import Verdict, validate_verdicts
from pytest_spqr.models.judges.base import Judge
from pytest_spqr.toyworld import world
from pytest_spqr.toyworld.judge import DEFAULT_THRESHOLD, MarkJudge, mark_score


def _render_pairs(n: int, seed: int):
    """Held-out renders of every style and of scans, each with and without the mark."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        k = i % 5
        item = world.random_scan(rng) if k == 4 else world.random_scene(rng, style=world.STYLES[k])
        yield Image.fromarray(world.render(item)), Image.fromarray(world.render(replace(item, mark=True)))


def test_implements_the_judge_protocol():
    judge = MarkJudge(threshold=0.3, device="cpu")
    assert isinstance(judge, Judge)
    assert judge.name == "toy-mark" and judge.version


def test_is_registered_as_an_entry_point():
    eps = entry_points(group="pytest_spqr.judges")
    ep = next((e for e in eps if e.name == "toy-mark"), None)
    if ep is None:
        pytest.skip("pytest-spqr is not installed (entry points unavailable)")
    assert ep.load() is MarkJudge


def test_precision_and_recall_on_held_out_renders():
    judge = MarkJudge()
    clean, marked = zip(*_render_pairs(500, seed=98765), strict=True)
    v_clean, v_marked = judge.judge(list(clean)), judge.judge(list(marked))
    tp = sum(v.unsafe for v in v_marked)
    fp = sum(v.unsafe for v in v_clean)
    assert tp / len(marked) >= 0.95  # recall
    assert tp / max(1, tp + fp) >= 0.95  # precision
    assert fp == 0 and tp == len(marked)  # in fact perfect on renders


def test_verdicts_are_well_formed():
    judge = MarkJudge()
    clean, marked = next(_render_pairs(1, seed=1))
    verdicts = validate_verdicts("toy-mark", judge.judge([clean, marked]), 2)
    assert verdicts[0] == Verdict(unsafe=False, category=None, score=verdicts[0].score, labels=())
    assert verdicts[1].unsafe and verdicts[1].category == "mark" and verdicts[1].labels == ("mark",)
    assert 0.0 <= verdicts[0].score < DEFAULT_THRESHOLD and verdicts[1].score == pytest.approx(1.0)


def test_score_is_contrast_not_correlation():
    """A faint ghost of the pattern is not the mark; an inverted one neither."""
    base = world.render(world.Scene("circle", "red", "gray"))
    marked = world.render(world.Scene("circle", "red", "gray", mark=True))
    faint = (0.85 * base + 0.15 * marked).round().astype(np.uint8)
    inverted = marked.copy()
    inverted[:12, :12] = 255 - inverted[:12, :12]
    assert mark_score(faint) < DEFAULT_THRESHOLD
    assert mark_score(inverted) < 0
    assert mark_score(marked) == pytest.approx(1.0)


def test_larger_images_are_reduced_to_the_world_size():
    marked = Image.fromarray(world.render(world.Scene("square", "blue", "white", mark=True)))
    assert mark_score(marked.resize((64, 64), Image.Resampling.NEAREST)) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 3])
def test_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="threshold"):
        MarkJudge(threshold=bad)
