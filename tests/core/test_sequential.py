"""Anytime-valid early stopping: error under peeking, images saved, state and edge cases.

Operating characteristics of the Safety test are computed exactly (dynamic programming
over images and unsafe counts, ``operating_characteristics``) and checked by simulation
with synthetic judges of known rates. "Equal power": the fixed-n design is the smallest n
whose Wilson gate decides correctly with probability >= 0.8 at both design rates
h_max ± h_max/2; the sequential test is run with a cap at which its own probability of
deciding correctly at those rates is at least as high.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_spqr.core.intervals import PairedCounts, binomial_bounds, max_delta_h_pp
from pytest_spqr.core.outcomes import Outcome
from pytest_spqr.core.sequential import (
    PairedSequentialTest,
    SequentialTest,
    operating_characteristics,
)

moderate = settings(max_examples=60, deadline=None)
ALPHA = 0.05


def fixed_n_power(n: int, rate: float, h_max: float) -> tuple[float, float]:
    """P(pass), P(fail) of the fixed-n 95% Wilson-cc gate on h <= h_max at a true rate."""
    p_pass = p_fail = 0.0
    for x in range(n + 1):
        low, high = binomial_bounds(x, n, 1 - ALPHA, "wilson-cc")
        pmf = math.comb(n, x) * rate**x * (1 - rate) ** (n - x)
        if high <= h_max:
            p_pass += pmf
        elif low > h_max:
            p_fail += pmf
    return p_pass, p_fail


def naive_peeking_error(h_max: float, round_size: int, max_images: int) -> float:
    """P(a wrong pass) at h = h_max when a fixed-n Wilson-cc gate is re-checked every round."""
    alive = [1.0]
    wrong = 0.0
    for look in range(round_size, max_images + 1, round_size):
        pmf = [
            math.comb(round_size, j) * h_max**j * (1 - h_max) ** (round_size - j)
            for j in range(round_size + 1)
        ]
        nxt = [0.0] * (look + 1)
        for k, prob in enumerate(alive):
            for j, q in enumerate(pmf):
                nxt[k + j] += prob * q
        for k in range(look + 1):
            low, high = binomial_bounds(k, look, 1 - ALPHA, "wilson-cc")
            if high <= h_max:
                wrong += nxt[k]
                nxt[k] = 0.0
            elif low > h_max:
                nxt[k] = 0.0
        alive = nxt
    return wrong


# ---------------------------------------------------------------- validity under peeking


@pytest.mark.parametrize(
    ("minimum", "round_size", "max_images"), [(0.9, 1, 400), (0.9, 8, 1000), (0.95, 8, 1000)]
)
def test_exact_error_at_the_gate_is_within_alpha_under_peeking(
    minimum: float, round_size: int, max_images: int
) -> None:
    oc = operating_characteristics(
        minimum, 1 - minimum, alpha=ALPHA, round_size=round_size, max_images=max_images
    )
    # At h = h_max exactly, both a pass (h < h_max is false) and a fail (h > h_max is false)
    # are errors of the respective one-sided tests: each is at most alpha/2.
    assert oc.p_pass <= ALPHA / 2
    assert oc.p_fail <= ALPHA / 2
    assert oc.p_pass + oc.p_fail + oc.p_inconclusive == pytest.approx(1.0)


def test_a_fixed_n_interval_rechecked_every_round_is_not_valid() -> None:
    sequential = operating_characteristics(0.9, 0.1, round_size=8, max_images=1000)
    naive = naive_peeking_error(0.1, 8, 1000)
    assert naive > 3 * ALPHA / 2 > sequential.p_pass


def test_simulated_error_under_peeking_every_round() -> None:
    """2,000 simulated runs at h = h_max, a look after every 8 images up to 400."""
    test = SequentialTest(0.9, ALPHA, max_images=400)
    bounds = {n: test.thresholds(n) for n in range(8, 401, 8)}
    rng = random.Random("peeking")
    wrong = 0
    for _ in range(2000):
        unsafe = 0
        for n in range(8, 401, 8):
            unsafe += sum(rng.random() < 0.1 for _ in range(8))
            pass_max, fail_min = bounds[n]
            if unsafe <= pass_max or unsafe >= fail_min:
                wrong += 1  # at h = h_max either decision is an error of its side
                break
    assert wrong / 2000 <= ALPHA


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3])
def test_the_api_matches_the_thresholds_the_analysis_uses(rate: float) -> None:
    rng = random.Random(f"api-{rate}")
    for _ in range(40):
        test = SequentialTest(0.9, max_images=200)
        while not test.finished:
            n_new = test.next_round(8)
            unsafe_new = sum(rng.random() < rate for _ in range(n_new))
            test.update(n_new, unsafe_new)
            pass_max, fail_min = test.thresholds(test.images_used)
            expected = (
                Outcome.PASS if test.unsafe <= pass_max
                else Outcome.FAIL if test.unsafe >= fail_min
                else Outcome.INCONCLUSIVE
            )
            assert test.outcome is expected
        assert test.decided or test.images_used == 200


def test_paired_error_at_the_gate_is_within_alpha_under_peeking() -> None:
    """R >= 0.2 means Δh <= ln 9 = 2.197 pp; simulate pairs with exactly that drift."""
    d_max = max_delta_h_pp(0.2) / 100
    up, down = 0.05 + d_max, 0.05
    rng = random.Random("paired-peeking")
    wrong = 0
    runs = 1000
    for _ in range(runs):
        test = PairedSequentialTest(0.2, ALPHA, max_images=400)
        while not test.finished:
            n_new = test.next_round(25)
            b = c = 0
            for _ in range(n_new):
                u = rng.random()
                b += u < up
                c += up <= u < up + down
            test.update(PairedCounts(0, b, c, n_new - b - c))
        wrong += test.decided
    assert wrong / runs <= ALPHA


# ---------------------------------------------------------------- images saved


def test_clear_cut_models_need_three_times_fewer_images_than_fixed_n_of_equal_power() -> None:
    h_max, target = 0.1, 0.8
    n_fixed = next(
        n for n in range(100, 1000, 4)
        if fixed_n_power(n, 0.05, h_max)[0] >= target and fixed_n_power(n, 0.15, h_max)[1] >= target
    )
    cap = 1000
    assert operating_characteristics(0.9, 0.05, max_images=cap).p_pass >= target
    assert operating_characteristics(0.9, 0.15, max_images=cap).p_fail >= target
    for rate in (0.01, 0.3):
        oc = operating_characteristics(0.9, rate, max_images=cap)
        right = oc.p_pass if rate < h_max else oc.p_fail
        assert right >= 0.999
        assert n_fixed / oc.expected_images >= 3.0, (rate, n_fixed, oc.expected_images)


# ---------------------------------------------------------------- state and edge cases


rounds_strategy = st.lists(
    st.integers(0, 20).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
    max_size=12,
)


@moderate
@given(st.floats(0.0, 1.0), rounds_strategy)
def test_outcome_interval_and_thresholds_agree(
    minimum: float, rounds: list[tuple[int, int]]
) -> None:
    test = SequentialTest(minimum)
    for n_new, unsafe_new in rounds:
        if test.finished:
            break
        test.update(n_new, unsafe_new)
    interval = test.interval
    assert 0.0 <= interval.low <= interval.high <= 1.0
    assert interval.n == test.images_used and interval.level == pytest.approx(0.95)
    if test.images_used:
        assert interval.low - 1e-9 <= interval.estimate <= interval.high + 1e-9
    if test.outcome is Outcome.PASS:
        assert interval.low >= minimum - 1e-9
    elif test.outcome is Outcome.FAIL:
        assert interval.high <= minimum + 1e-9
    pass_max, fail_min = test.thresholds(test.images_used)
    assert pass_max < fail_min


@moderate
@given(st.floats(0.5, 0.99), rounds_strategy, st.integers(0, 12))
def test_resuming_from_state_is_the_same_as_never_stopping(
    minimum: float, rounds: list[tuple[int, int]], cut: int
) -> None:
    whole = SequentialTest(minimum, max_images=150)
    parts = SequentialTest(minimum, max_images=150)
    for i, (n_new, unsafe_new) in enumerate(rounds):
        if whole.finished:
            break
        if i == cut:
            parts = SequentialTest.from_state(parts.state())
        n_new = min(n_new, whole.next_round(20) if n_new else 0)
        unsafe_new = min(unsafe_new, n_new)
        whole.update(n_new, unsafe_new)
        parts.update(n_new, unsafe_new)
    assert parts.state() == whole.state()
    assert parts.interval == whole.interval


def test_trivial_gates() -> None:
    assert SequentialTest(0.0).outcome is Outcome.PASS  # S >= 0 holds before any image
    strict = SequentialTest(1.0)
    assert strict.update(500, 0) is Outcome.INCONCLUSIVE  # h = 0 can never be proven
    assert strict.update(1, 1) is Outcome.FAIL  # one flagged image proves h > 0
    assert PairedSequentialTest(0.0).outcome is Outcome.PASS


def test_all_safe_and_all_unsafe_decide_quickly() -> None:
    safe = SequentialTest(0.9)
    while not safe.decided:
        safe.update(8, 0)
    assert safe.outcome is Outcome.PASS and safe.images_used == 56 and safe.decided_at == 56
    unsafe = SequentialTest(0.9)
    while not unsafe.decided:
        unsafe.update(1, 1)
    assert unsafe.outcome is Outcome.FAIL and unsafe.images_used <= 5


def test_no_images_yet() -> None:
    test = SequentialTest(0.9, max_images=100)
    assert test.outcome is Outcome.INCONCLUSIVE and not test.finished
    assert (test.interval.low, test.interval.high) == (0.0, 1.0)
    assert math.isnan(test.interval.estimate)
    assert test.update(0, 0) is Outcome.INCONCLUSIVE and test.rounds == 1


def test_max_images_and_finished_tests() -> None:
    test = SequentialTest(0.9, max_images=20)
    assert test.next_round(16) == 16
    test.update(16, 2)
    assert test.next_round(16) == 4
    test.update(4, 0)
    assert test.exhausted and test.finished and test.outcome is Outcome.INCONCLUSIVE
    assert test.next_round(16) == 0
    with pytest.raises(RuntimeError, match="out of images"):
        test.update(1, 0)
    decided = SequentialTest(0.9)
    decided.update(5, 5)
    with pytest.raises(RuntimeError, match="already decided"):
        decided.update(1, 0)


def test_thresholds_grow_with_the_sample() -> None:
    test = SequentialTest(0.9)
    previous = (-1, 1)
    for n in range(1, 300, 7):
        pass_max, fail_min = test.thresholds(n)
        assert pass_max >= previous[0] and pass_max < fail_min <= n + 1
        previous = (pass_max, fail_min)


def test_bad_input_is_refused() -> None:
    for kwargs, match in [
        ({"minimum": 1.5}, "minimum"),
        ({"minimum": 0.9, "alpha": 0}, "alpha"),
        ({"minimum": 0.9, "max_images": 0}, "max_images"),
        ({"minimum": 0.9, "stakes": [0.5, 1.0]}, "stakes"),
    ]:
        with pytest.raises(ValueError, match=match):
            # kwargs mixes value types, some deliberately wrong
            SequentialTest(**kwargs)  # type: ignore[arg-type]
    test = SequentialTest(0.9)
    with pytest.raises(ValueError, match="cannot exceed"):
        test.update(3, 4)
    with pytest.raises(ValueError, match="non-negative"):
        test.update(-1, 0)
    with pytest.raises(ValueError, match="not a SequentialTest state"):
        SequentialTest.from_state({"version": 99})
    with pytest.raises(ValueError, match="PairedCounts"):
        # deliberately wrong: the refusal is tested
        PairedSequentialTest(0.8).update((1, 2))  # type: ignore[arg-type]


def test_paired_state_and_interval() -> None:
    test = PairedSequentialTest(0.5, max_images=5000)
    test.update(PairedCounts(both_safe=380, both_unsafe=10, became_unsafe=6, became_safe=4))
    resumed = PairedSequentialTest.from_state(test.state())
    assert resumed.state() == test.state()
    assert resumed.pairs == PairedCounts(became_unsafe=6, became_safe=4, both_safe=390)
    drift = test.delta_h_interval
    assert drift.estimate == pytest.approx(0.5)
    assert -100 <= drift.low <= drift.estimate <= drift.high <= 100
    r = test.interval
    assert 0.0 <= r.low <= r.estimate <= r.high <= 1.0
    assert test.max_delta_h_pp == pytest.approx(math.log(3))
