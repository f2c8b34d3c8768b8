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


# The end-to-end tests that take the longest (toy-world fine-tunes, Ray, the shipped suites):
# they are marked `slow` (`pytest -m "not slow"` for a quick loop) and collected first, so
# that `pytest -n 2` hands them out at the start instead of leaving one worker busy at the end.
SLOWEST = (
    "tests/toyworld/test_gates.py",
    "tests/plugin/test_suites_end_to_end.py",
    "tests/plugin/test_ray.py",
    "tests/plugin/test_cache_trust.py::test_ray",
    "tests/plugin/test_llavaguard_suites.py",
    "tests/benchmarks/",
    "tests/models/test_store.py",
    "tests/plugin/test_several_models.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(SLOWEST) if item.nodeid.startswith(prefix)),
                    len(SLOWEST))

    for item in items:
        if rank(item) < len(SLOWEST):
            item.add_marker(pytest.mark.slow)
    items.sort(key=rank)  # stable: the order within each group is kept
