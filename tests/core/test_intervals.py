"""Confidence intervals and gate outcomes: edge cases (hypothesis), exact and simulated coverage.

Coverage is checked two ways: exactly (summing the binomial over every outcome) where that
is cheap, and by simulation with synthetic judges of known rates, 2,000 runs per cell with
fixed seeds, against nominal - 1 point. The big grids live in benchmarks/stats_simulation.py.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_spqr.core.design_effect import cluster_design, paired_design
from pytest_spqr.core.intervals import (
    BINOMIAL_METHODS,
    PAIRED_METHODS,
    HarmfulPrompt,
    Interval,
    PairedCounts,
    binomial_bounds,
    bonferroni_level,
    delta_h_interval,
    expanded_level,
    harmful_rate_interval,
    max_delta_h_pp,
    mean_interval,
    per_prompt_means,
    robustness_interval,
    safety_interval,
    spqr_interval,
    spqr_interval_from_axes,
    z_value,
)
from pytest_spqr.core.outcomes import (
    Outcome,
    apply_policy,
    classify,
    decide,
    more_to_decide,
)
from pytest_spqr.core.scores import robustness_score, spqr_score

moderate = settings(max_examples=150, deadline=None)
RUNS = 2000
NOMINAL = 0.95
FLOOR = NOMINAL - 0.01

levels = st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.999])


@st.composite
def binomial_data(draw: st.DrawFn, max_n: int = 400) -> tuple[int, int]:
    n = draw(st.integers(0, max_n))
    return draw(st.integers(0, n)), n


@st.composite
def paired_counts(draw: st.DrawFn, max_n: int = 300) -> PairedCounts:
    cells = draw(st.lists(st.integers(0, max_n // 4), min_size=4, max_size=4))
    return PairedCounts(*cells)


def exact_binomial_coverage(n: int, p: float, method: str, level: float = NOMINAL) -> float:
    total = 0.0
    for x in range(n + 1):
        low, high = binomial_bounds(x, n, level, method)
        if low <= p <= high:
            total += math.comb(n, x) * p**x * (1 - p) ** (n - x)
    return total


# ---------------------------------------------------------------- binomial: h and S


@moderate
@given(binomial_data(), levels, st.sampled_from(BINOMIAL_METHODS))
def test_rate_interval_is_inside_unit_range_and_contains_estimate(
    data: tuple[int, int], level: float, method: str
) -> None:
    unsafe, n = data
    rate = harmful_rate_interval(unsafe, n, level=level, method=method)
    safety = safety_interval(unsafe, n, level=level, method=method)
    assert 0.0 <= rate.low <= rate.high <= 1.0
    assert 0.0 <= safety.low <= safety.high <= 1.0
    assert safety.low == pytest.approx(1 - rate.high) and safety.high == pytest.approx(1 - rate.low)
    if n == 0:
        assert (rate.low, rate.high) == (0.0, 1.0) and math.isnan(rate.estimate)
        assert math.isnan(safety.estimate)
    else:
        assert rate.low <= unsafe / n <= rate.high
        assert safety.estimate == pytest.approx(1 - unsafe / n)
    assert rate.n == n and rate.level == level and rate.unit == "images"


@moderate
@given(st.integers(1, 2000), levels)
def test_all_safe_and_all_unsafe_touch_the_ends(n: int, level: float) -> None:
    safe = safety_interval(0, n, level=level)
    assert safe.high == 1.0 and safe.estimate == 1.0 and safe.low < 1.0
    unsafe = safety_interval(n, n, level=level)
    assert unsafe.low == 0.0 and unsafe.estimate == 0.0 and unsafe.high > 0.0


@moderate
@given(st.integers(0, 30), st.integers(1, 30), st.integers(2, 6), st.sampled_from(BINOMIAL_METHODS))
def test_more_images_at_the_same_rate_narrow_the_interval(
    unsafe: int, extra: int, factor: int, method: str
) -> None:
    n = unsafe + extra
    small = harmful_rate_interval(unsafe, n, method=method)
    large = harmful_rate_interval(unsafe * factor, n * factor, method=method)
    assert large.width < small.width


@moderate
@given(binomial_data(), st.sampled_from(BINOMIAL_METHODS))
def test_higher_level_widens_the_interval(data: tuple[int, int], method: str) -> None:
    unsafe, n = data
    widths = [harmful_rate_interval(unsafe, n, level=lv, method=method) for lv in (0.8, 0.95, 0.99)]
    for narrow, wide in zip(widths, widths[1:], strict=False):
        assert wide.low <= narrow.low + 1e-12 and narrow.high <= wide.high + 1e-12


@moderate
@given(st.integers(1, 300), st.sampled_from(BINOMIAL_METHODS))
def test_bounds_are_monotone_in_the_count(n: int, method: str) -> None:
    bounds = [binomial_bounds(x, n, NOMINAL, method) for x in range(n + 1)]
    for (low_a, high_a), (low_b, high_b) in zip(bounds, bounds[1:], strict=False):
        assert low_a <= low_b + 1e-12 and high_a <= high_b + 1e-12


def test_wilson_matches_a_textbook_value() -> None:
    # Newcombe (1998a), table II: 81/263 -> 0.2553-0.3662 (method 3), 0.2535-0.3682 (method 4).
    assert binomial_bounds(81, 263, 0.95, "wilson") == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert binomial_bounds(81, 263, 0.95, "wilson-cc") == pytest.approx((0.2535, 0.3682), abs=1e-4)
    # 0/20 with continuity correction: upper 0.2004 (ibid.)
    assert binomial_bounds(0, 20, 0.95, "wilson-cc")[1] == pytest.approx(0.2004, abs=1e-4)


def test_z_value_is_the_normal_quantile() -> None:
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    for bad in (0, 1, 1.5, -0.1, float("nan"), True, "0.95"):
        with pytest.raises(ValueError, match="level"):
            z_value(bad)  # type: ignore[arg-type]  # deliberately wrong: the refusal is tested


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot exceed"):
        harmful_rate_interval(5, 4)
    with pytest.raises(ValueError, match="non-negative integer"):
        safety_interval(-1, 4)
    with pytest.raises(ValueError, match="method"):
        safety_interval(1, 4, method="wald")
    with pytest.raises(ValueError, match="design_effect"):
        safety_interval(1, 4, design_effect=0.5)


def test_continuity_corrected_wilson_has_exact_coverage_on_a_fine_grid() -> None:
    grid = [i / 200 for i in range(1, 200)]
    for n in (20, 56, 100):
        worst = min(exact_binomial_coverage(n, p, "wilson-cc") for p in grid)
        assert worst >= NOMINAL - 0.001, (n, worst)


def test_plain_wilson_undercovers_near_zero_which_is_why_it_is_not_the_default() -> None:
    assert exact_binomial_coverage(56, 0.003, "wilson") < 0.86
    assert exact_binomial_coverage(56, 0.003, "wilson-cc") >= NOMINAL


@pytest.mark.parametrize("n", [20, 56, 200])
@pytest.mark.parametrize("rate", [0.005, 0.02, 0.05, 0.1, 0.3])
def test_simulated_coverage_of_safety_with_a_synthetic_judge(n: int, rate: float) -> None:
    rng = random.Random(f"wilson-{n}-{rate}")
    true_s = 1.0 - rate
    cache: dict[int, Interval] = {}
    covered = 0
    for _ in range(RUNS):
        unsafe = sum(rng.random() < rate for _ in range(n))  # the judge flags w.p. rate
        interval = cache.get(unsafe) or cache.setdefault(unsafe, safety_interval(unsafe, n))
        covered += interval.low <= true_s <= interval.high
    assert covered / RUNS >= FLOOR


def test_design_effect_is_one_for_single_images_and_larger_for_clustered_prompts() -> None:
    assert cluster_design([(1, 1)] * 5 + [(1, 0)] * 50).value == pytest.approx(1.0)
    assert cluster_design([(4, 4)] * 5 + [(4, 0)] * 50).value == pytest.approx(4.0556, abs=1e-3)
    assert cluster_design([(4, 0)] * 10).value == 4.0  # nothing flagged: prompts are the units
    clustered = safety_interval(20, 220, design_effect=4.0)
    plain = safety_interval(20, 220)
    assert clustered.width > plain.width and clustered.estimate == plain.estimate


# ---------------------------------------------------------------- paired: Δh and R


@moderate
@given(paired_counts(), levels, st.sampled_from(PAIRED_METHODS))
def test_delta_h_interval_is_inside_its_range_and_contains_estimate(
    counts: PairedCounts, level: float, method: str
) -> None:
    interval = delta_h_interval(counts, level=level, method=method)
    assert -100.0 <= interval.low <= interval.high <= 100.0
    if counts.n == 0:
        assert (interval.low, interval.high) == (-100.0, 100.0) and math.isnan(interval.estimate)
    else:
        assert interval.low - 1e-9 <= counts.delta_h_pp <= interval.high + 1e-9
    r = robustness_interval(counts, level=level, method=method)
    assert 0.0 <= r.low <= r.high <= 1.0
    if counts.n:
        assert r.low - 1e-12 <= robustness_score(counts.delta_h_pp) <= r.high + 1e-12


@moderate
@given(paired_counts(), st.sampled_from(PAIRED_METHODS))
def test_swapping_the_flips_mirrors_the_interval(counts: PairedCounts, method: str) -> None:
    mirrored = PairedCounts(
        counts.both_unsafe, counts.became_safe, counts.became_unsafe, counts.both_safe
    )
    a = delta_h_interval(counts, method=method)
    b = delta_h_interval(mirrored, method=method)
    assert a.low == pytest.approx(-b.high, abs=1e-7) and a.high == pytest.approx(-b.low, abs=1e-7)


@moderate
@given(paired_counts(), st.sampled_from(PAIRED_METHODS))
def test_paired_interval_widens_with_the_level(counts: PairedCounts, method: str) -> None:
    narrow = delta_h_interval(counts, level=0.8, method=method)
    wide = delta_h_interval(counts, level=0.99, method=method)
    assert wide.low <= narrow.low + 1e-7 and narrow.high <= wide.high + 1e-7


@moderate
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60))
def test_paired_counts_from_pairs(pairs: list[tuple[bool, bool]]) -> None:
    counts = PairedCounts.from_pairs(pairs)
    assert counts.n == len(pairs)
    assert counts.unsafe_before == sum(b for b, _ in pairs)
    assert counts.unsafe_after == sum(a for _, a in pairs)
    half = len(pairs) // 2
    merged = PairedCounts.from_pairs(pairs[:half]).merge(PairedCounts.from_pairs(pairs[half:]))
    assert merged == counts
    if pairs:
        expected = 100 * (counts.unsafe_after - counts.unsafe_before) / len(pairs)
        assert counts.delta_h_pp == pytest.approx(expected)


def test_no_flips_gives_an_interval_around_zero_and_the_robustness_cost() -> None:
    drift = delta_h_interval(PairedCounts(both_safe=200))
    assert drift.estimate == 0.0 and drift.low < 0.0 < drift.high
    # R >= 0.8 needs Δh <= 0.405 pp: even 1,000 unchanged pairs do not prove that yet.
    assert max_delta_h_pp(0.8) == pytest.approx(math.log(1.5))
    assert robustness_interval(PairedCounts(both_safe=1000)).low < 0.8
    assert robustness_interval(PairedCounts(both_safe=2000)).low > 0.8


@moderate
@given(st.floats(0.01, 1.0), st.sampled_from(["normalized", "paper-eq3"]))
def test_max_delta_h_inverts_robustness(r: float, formula: str) -> None:
    dh = max_delta_h_pp(r, formula)
    if formula == "paper-eq3" and r >= 0.5 and dh < -100:
        return
    if -100 <= dh <= 100:
        assert robustness_score(dh, formula) == pytest.approx(r, rel=1e-9)


@pytest.mark.parametrize("n", [56, 200])
@pytest.mark.parametrize(
    ("up", "down"), [(0.0, 0.02), (0.01, 0.05), (0.05, 0.05), (0.1, 0.02)]
)
def test_simulated_coverage_of_delta_h_with_paired_synthetic_judges(
    n: int, up: float, down: float
) -> None:
    rng = random.Random(f"tango-{n}-{up}-{down}")
    true_dh = 100 * (up - down)
    cache: dict[tuple[int, int], Interval] = {}
    covered = 0
    for _ in range(RUNS):
        b = c = 0
        for _ in range(n):
            u = rng.random()
            b += u < up
            c += up <= u < up + down
        key = (b, c)
        if key not in cache:
            cache[key] = delta_h_interval(PairedCounts(0, b, c, n - b - c))
        covered += cache[key].low <= true_dh <= cache[key].high
    assert covered / RUNS >= FLOOR


# ---------------------------------------------------------------- bootstrap and SPQR


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 1, allow_nan=False), max_size=20),
    st.integers(0, 10),
    st.sampled_from(["studentized", "bca", "percentile"]),
)
def test_mean_interval_bounds_and_determinism(values: list[float], seed: int, method: str) -> None:
    a = mean_interval(values, seed=seed, method=method, resamples=200)
    b = mean_interval(values, seed=seed, method=method, resamples=200)
    assert (a.low, a.high) == (b.low, b.high)
    assert 0.0 <= a.low <= a.high <= 1.0
    if len(values) < 2:
        assert (a.low, a.high) == (0.0, 1.0)
    else:
        assert a.low <= a.estimate <= a.high
        assert a.estimate == pytest.approx(sum(values) / len(values))


def test_mean_interval_edge_cases() -> None:
    assert math.isnan(mean_interval([]).estimate)
    assert mean_interval([0.3]).estimate == 0.3
    constant = mean_interval([0.3] * 10)
    assert constant.low < 0.3 < constant.high  # no spread seen is not no spread (Hoeffding)
    with pytest.raises(ValueError, match="finite"):
        mean_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="resamples"):
        mean_interval([0.1, 0.2], resamples=10)


def test_per_prompt_means_groups_images_by_prompt() -> None:
    means = per_prompt_means([("a", 0.2), ("b", 0.4), ("a", 0.4)])
    assert means == pytest.approx([0.3, 0.4])


def test_expanded_level_widens_small_samples_only() -> None:
    assert expanded_level(0.95, 8) == pytest.approx(0.9885, abs=5e-4)
    assert expanded_level(0.95, 56) == pytest.approx(0.9568, abs=5e-4)
    assert expanded_level(0.95, 100_000) == pytest.approx(0.95, abs=1e-4)


def test_simulated_coverage_of_prompt_adherence() -> None:
    """CLIPScore-like per-prompt means (Beta(29, 71), mean 0.29), 16 prompts, 2,000 runs."""
    rng = random.Random("clip")
    covered = 0
    for run in range(RUNS):
        values = [rng.betavariate(29, 71) for _ in range(16)]
        interval = mean_interval(values, resamples=199, seed=run)
        covered += interval.low <= 0.29 <= interval.high
    assert covered / RUNS >= FLOOR


def test_spqr_interval_holds_r_fixed_or_combines_its_interval() -> None:
    rng = random.Random(7)
    harmful = [
        HarmfulPrompt(2, int(rng.random() < 0.1) + int(rng.random() < 0.1)) for _ in range(56)
    ]
    benign = [rng.betavariate(29, 71) for _ in range(32)]
    fixed = spqr_interval(harmful, benign, 0.7, 0.9, resamples=300)
    assert fixed.low <= fixed.estimate <= fixed.high and fixed.level == 0.95
    s = 1 - sum(h.unsafe for h in harmful) / 112
    assert fixed.estimate == pytest.approx(spqr_score(s, sum(benign) / 32, 0.7, 0.9))
    paired = spqr_interval(harmful, benign, 0.7, PairedCounts(both_safe=112), resamples=300)
    assert paired.low < fixed.low and paired.level == pytest.approx(0.95)
    assert paired.method == "bca+tango-cc"
    with pytest.raises(ValueError, match="robustness"):
        # deliberately wrong: the refusal is tested
        spqr_interval(harmful, benign, 0.7, "high", resamples=300)  # type: ignore[arg-type]


def test_spqr_from_axes_is_monotone_and_bonferroni() -> None:
    level = bonferroni_level(0.95, 4)
    assert level == pytest.approx(0.9875)
    s = safety_interval(2, 56, level=level)
    p = mean_interval([0.28, 0.3, 0.31, 0.27, 0.29], level=level)
    q = Interval(0.7, 0.65, 0.75, level, 100, "given")
    r = robustness_interval(PairedCounts(both_safe=300, became_unsafe=1), level=level)
    combined = spqr_interval_from_axes(s, p, q, r)
    assert combined.level == pytest.approx(0.95)
    assert combined.low == pytest.approx(spqr_score(s.low, p.low, q.low, r.low))
    assert combined.high == pytest.approx(spqr_score(s.high, p.high, q.high, r.high))
    assert combined.low <= combined.estimate <= combined.high


# ---------------------------------------------------------------- outcomes


def test_classify_reads_the_whole_interval() -> None:
    def iv(low: float, high: float) -> Interval:
        return Interval((low + high) / 2, low, high, 0.95, 10, "test")

    assert classify(iv(0.9, 0.95), 0.9) is Outcome.PASS  # touching the minimum clears it
    assert classify(iv(0.8, 0.899), 0.9) is Outcome.FAIL
    assert classify(iv(0.85, 0.95), 0.9) is Outcome.INCONCLUSIVE
    assert classify(safety_interval(0, 0), 0.9) is Outcome.INCONCLUSIVE
    assert classify(safety_interval(0, 0), 0.0) is Outcome.PASS
    assert Outcome.PASS == "pass" and str(Outcome.INCONCLUSIVE) == "inconclusive"


@moderate
@given(binomial_data(max_n=120), st.floats(0.5, 0.99))
def test_more_to_decide_is_the_smallest_deciding_sample(
    data: tuple[int, int], minimum: float
) -> None:
    unsafe, n = data
    interval = safety_interval(unsafe, n)
    more, toward = more_to_decide(interval, minimum)
    if classify(interval, minimum) is not Outcome.INCONCLUSIVE:
        assert more == 0
        return
    if n == 0:
        assert (more, toward) == (None, None)
        return
    assert toward is (Outcome.PASS if interval.estimate >= minimum else Outcome.FAIL)
    if more is None:
        return
    assert more >= 1
    strict = decide(interval, minimum)  # same numbers through the public entry
    assert strict.more == more


def test_more_images_would_decide_about_as_often_as_promised() -> None:
    """At the observed rate, the promised sample decides at least ~80% of the time."""
    rng = random.Random("plan")
    interval = safety_interval(2, 56)  # h 3.6%, 95% CI straddles 0.90
    more, toward = more_to_decide(interval, 0.9)
    assert toward is Outcome.PASS and more is not None
    total = 56 + more
    decided = 0
    for _ in range(1000):
        unsafe = sum(rng.random() < 2 / 56 for _ in range(total))
        decided += classify(safety_interval(unsafe, total), 0.9) is Outcome.PASS
    assert 0.75 <= decided / 1000 <= 0.97  # power 0.8 by the normal rule; cc adds some


def test_decision_describes_itself() -> None:
    text = decide(safety_interval(2, 56), 0.9).describe()
    assert text.startswith("95% CI 0.") and "straddles min 0.900: inconclusive" in text
    assert "more images would likely decide it (toward pass)" in text
    assert decide(safety_interval(0, 0), 0.9).describe().endswith("no images measured yet")
    assert decide(safety_interval(40, 56), 0.9).describe().endswith("is below min 0.900: fail")
    assert decide(safety_interval(0, 300), 0.9).describe().endswith("clears min 0.900: pass")


def test_inconclusive_policies() -> None:
    assert apply_policy(Outcome.PASS) == (True, False)
    assert apply_policy(Outcome.FAIL, "pass") == (False, False)
    assert apply_policy(Outcome.INCONCLUSIVE) == (False, False)
    assert apply_policy(Outcome.INCONCLUSIVE, "warn") == (True, True)
    assert apply_policy(Outcome.INCONCLUSIVE, "pass") == (True, False)
    with pytest.raises(ValueError, match="fail, warn, pass"):
        apply_policy(Outcome.PASS, "maybe")


@given(st.lists(st.sampled_from([(1, 0, 0), (1, 1, 0), (1, 0, 1)]), min_size=2, max_size=60))
def test_one_pair_per_prompt_has_no_design_effect(rows) -> None:
    assert paired_design(rows).value == pytest.approx(1.0)


def test_pairs_that_flip_together_count_as_one() -> None:
    # 4 samples per prompt; in 6 of 40 prompts all four flip: 24 flips, but 6 independent events
    together = [(4, 4, 0)] * 6 + [(4, 0, 0)] * 34
    spread = [(4, 1, 0)] * 24 + [(4, 0, 0)] * 16
    deff = paired_design(together).value
    assert deff == pytest.approx(4.0, rel=0.1)
    assert paired_design(spread).value < 1.5
    counts = PairedCounts(both_unsafe=0, became_unsafe=24, became_safe=0, both_safe=136)
    plain = delta_h_interval(counts)
    clustered = delta_h_interval(counts, design_effect=deff)
    assert clustered.estimate == plain.estimate
    assert clustered.low < plain.low and clustered.high > plain.high
    r_plain, r_clustered = robustness_interval(counts), robustness_interval(counts, design_effect=deff)
    assert r_clustered.low <= r_plain.low and r_clustered.high >= r_plain.high


def test_design_effect_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="design_effect must be a number >= 1"):
        delta_h_interval(PairedCounts(0, 1, 0, 9), design_effect=0.5)
