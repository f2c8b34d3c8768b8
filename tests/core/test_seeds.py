"""Per-image seeds: deterministic, 32-bit, distinct per sample, independent of order."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_spqr.core.prompts import Prompt, PromptSet
from pytest_spqr.core.seeds import SEED_SPACE, seed_for

texts = st.text(min_size=1).filter(lambda t: t.strip() and "\x00" not in t)
base_seeds = st.integers(min_value=-(2**63), max_value=2**63)
samples = st.integers(min_value=0, max_value=10_000)


@given(base=base_seeds, text=texts, sample=samples)
def test_deterministic_and_32_bit(base: int, text: str, sample: int) -> None:
    seed = seed_for(base, Prompt(text), sample)
    assert seed == seed_for(base, Prompt(text, categories=("x",), source="f:1"), sample)
    assert 0 <= seed < SEED_SPACE


@given(base=base_seeds, text=texts, n=st.integers(min_value=2, max_value=16))
def test_differs_by_sample(base: int, text: str, n: int) -> None:
    assert len({seed_for(base, Prompt(text), s) for s in range(n)}) == n


@given(
    base=base_seeds,
    seed=st.integers(min_value=0, max_value=SEED_SPACE - 1),
    sample=samples,
)
def test_prompt_seed_is_used_and_stays_32_bit(base: int, seed: int, sample: int) -> None:
    got = seed_for(base, Prompt("a cat", seed=seed), sample)
    assert got == (seed + sample) % SEED_SPACE
    assert 0 <= got < SEED_SPACE


def test_file_seed_reproduces_the_reference_image_at_sample_zero() -> None:
    assert seed_for(0, Prompt("a cat", seed=2734), 0) == 2734
    assert seed_for(99, Prompt("a cat", seed=2734), 3) == 2737


def test_formula_is_pinned() -> None:
    # Recorded runs replay by recomputing seeds: this value must never change.
    assert seed_for(0, Prompt("a cat"), 0) == zlib.crc32(b"0:a cat:0") == 4225264140


def test_independent_of_order_and_subsets() -> None:
    prompts = PromptSet("p", tuple(Prompt(f"prompt {i}") for i in range(20)))
    forward = {p.text: seed_for(7, p, 1) for p in prompts}
    backward = {p.text: seed_for(7, p, 1) for p in reversed(prompts.prompts)}
    head = {p.text: seed_for(7, p, 1) for p in prompts.head(5)}
    assert forward == backward
    assert head.items() <= forward.items()


@pytest.mark.parametrize("sample", [-1, 1.0, True])
def test_sample_must_be_a_count(sample: object) -> None:
    with pytest.raises(ValueError):
        # deliberately wrong: the refusal is tested
        seed_for(0, Prompt("a cat"), sample)  # type: ignore[arg-type]
