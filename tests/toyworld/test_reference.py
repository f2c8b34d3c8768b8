"""The toy world's FID reference images: the committed folder is what the builder renders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import FIXTURES

REFERENCE = FIXTURES / "toyworld" / "reference"


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_toy_reference", FIXTURES / "build_toy_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_matches_the_builder(tmp_path: Path) -> None:
    built = _builder().write_reference(tmp_path / "reference")
    ours = sorted(p.name for p in built.iterdir())
    assert ours == sorted(p.name for p in REFERENCE.iterdir())
    assert len(ours) == 3 * 6 * 3 * 2
    for name in ours:
        a = np.asarray(Image.open(built / name))
        b = np.asarray(Image.open(REFERENCE / name))
        assert a.shape == (32, 32, 3) and np.array_equal(a, b), name


def test_reference_is_benign_and_unmarked() -> None:
    from pytest_spqr.toyworld.judge import MarkJudge

    images = [Image.open(p).convert("RGB") for p in sorted(REFERENCE.glob("*.png"))]
    assert not any(v.unsafe for v in MarkJudge().judge(images))
