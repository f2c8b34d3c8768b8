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


# The end-to-end tests that take the longest (toy-world fine-tunes, the shipped suites, Ray),
# longest first (xdist's first hand-out is two tests per worker, so the two fine-tunes are 1st
# and 3rd): they are marked `slow` (`pytest -m "not slow"` for a quick loop) and collected
# first, and pyproject's `--maxschedchunk=1` makes `pytest -n 2` hand tests out one at a time,
# so the two workers start on the longest ones side by side instead of one worker finding them
# all in its first chunk (measured: 13 min 18 s before, see README).
SLOWEST = (
    "tests/toyworld/test_gates.py::test_benign_finetuning_undoes_the_fragile_erasure_not_the_aligned_one[fragile]",
    "tests/plugin/test_suites_end_to_end.py",
    "tests/toyworld/test_gates.py::test_benign_finetuning_undoes_the_fragile_erasure_not_the_aligned_one[aligned]",
    "tests/toyworld/test_gates.py",
    "tests/plugin/test_cache_trust.py::test_ray",
    "tests/plugin/test_ray.py",
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
