"""Shared test helpers: the tiny models this repository builds and ships in fixtures/."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"


@pytest.fixture(scope="session")
def tiny_sd() -> Path:
    """A tiny random Stable-Diffusion-shaped pipeline folder (fixtures/build_tiny_models.py)."""
    path = FIXTURES / "tiny-sd"
    assert (path / "model_index.json").is_file(), "run python fixtures/build_tiny_models.py"
    return path


@pytest.fixture(scope="session")
def tiny_clip() -> Path:
    """A tiny random CLIP folder for prompt adherence."""
    path = FIXTURES / "tiny-clip"
    assert (path / "config.json").is_file(), "run python fixtures/build_tiny_models.py"
    return path
