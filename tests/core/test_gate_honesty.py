"""No wrong pass (issue 13): the statistics behind a gate never claim more than the data holds.

Repeated prompts count once, unmeasured clustering is not independence, ``warn`` lets doubt
pass but not a measured shortfall, a mean interval keeps its width, the t quantile is exact,
and the SPQR score reads R through the same paired design effect as the robustness gate.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

from pytest_spqr.core.design_effect import cluster_design, paired_design
from pytest_spqr.core.intervals import (
    expanded_level,
    mean_interval,
    safety_interval,
)
from pytest_spqr.core.outcomes import Outcome, apply_policy, decide
from pytest_spqr.core.prompts import Prompt, PromptSet, load_prompt_set

# --- item 4: repeated prompts are not independent evidence -------------------------------------


def test_a_prompt_repeated_56_times_is_one_prompt(tmp_path: Path) -> None:
    prompts = tmp_path / "same.txt"
    prompts.write_text("a violent street fight\n" * 56, encoding="utf-8")
    with pytest.warns(UserWarning, match=r"same\.txt: 55 of 56 prompts repeat an earlier "
                                         r"\(prompt, seed\) and are counted once"):
        loaded = load_prompt_set(str(prompts))
    assert len(loaded) == 1 and loaded.duplicates_dropped == 55


def test_repeats_with_their_own_seeds_are_distinct_and_categories_merge() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no duplicate: no warning
        seeded = PromptSet("s", (Prompt("a cat", seed=1), Prompt("a cat", seed=2)))
    assert len(seeded) == 2 and seeded.duplicates_dropped == 0
    with pytest.warns(UserWarning, match="1 of 3 prompts repeat"):
        merged = PromptSet("m", (Prompt("a", ("hate",)), Prompt("b"), Prompt("a", ("violence",))))
    assert [p.text for p in merged] == ["a", "b"]
    assert merged[0].categories == ("hate", "violence")


# --- item 8: no evidence is not independence -----------------------------------------------------


def test_nothing_flagged_over_several_samples_falls_back_to_prompts_as_units() -> None:
    groups = [(10, 0)] * 56  # 56 prompts x 10 samples, all safe
    assert cluster_design(groups).value == pytest.approx(10.0)
    interval = safety_interval(0, 560, design_effect=cluster_design(groups).value)
    assert interval.low < 0.99  # 560 "independent" images would certify S >= 0.99
    assert decide(interval, 0.99).outcome is Outcome.INCONCLUSIVE
    assert cluster_design([(1, 0)] * 56).value == 1.0  # one image per prompt: no clustering


def test_the_fallback_is_named_in_the_method() -> None:
    design = cluster_design([(10, 0)] * 56)
    assert design.value == pytest.approx(10.0) and not design.estimated
    interval = safety_interval(0, 560, design_effect=design)
    assert interval.method.startswith("wilson-cc")
    assert "prompts as units" in interval.method and "nothing flagged" in interval.method
    estimated = cluster_design([(4, 4)] * 5 + [(4, 0)] * 50)
    assert estimated.estimated and safety_interval(20, 220, design_effect=estimated).method == "wilson-cc"


def test_no_flipped_pair_falls_back_to_prompts_as_units() -> None:
    from pytest_spqr.core.intervals import PairedCounts, robustness_interval

    rows = [(10, 0, 0)] * 56
    assert paired_design(rows).value == pytest.approx(10.0)
    counts = PairedCounts(both_safe=560)
    conservative = robustness_interval(counts, design_effect=paired_design(rows))
    naive = robustness_interval(counts)
    assert conservative.low < naive.low
    assert "prompts as units" in conservative.method and "no pair flipped" in conservative.method


# --- item 9: warn is for doubt, not for failure ---------------------------------------------------


def test_an_inconclusive_gate_whose_estimate_misses_the_minimum_fails_under_every_policy() -> None:
    interval = safety_interval(2, 8)  # S = 0.75, interval reaches above 0.9
    decision = decide(interval, 0.9)
    assert decision.outcome is Outcome.INCONCLUSIVE and decision.short_of_minimum
    for policy in ("fail", "warn", "pass"):
        assert apply_policy(decision.outcome, policy, short=decision.short_of_minimum) == (False, False)
    near = decide(safety_interval(0, 8), 0.9)  # S = 1.0: only doubt
    assert not near.short_of_minimum
    assert apply_policy(near.outcome, "warn", short=near.short_of_minimum) == (True, True)


# --- mean_interval keeps honest width --------------------------------------------------------------


def test_equal_per_prompt_means_do_not_give_a_zero_width_interval() -> None:
    interval = mean_interval([0.3] * 10)
    assert interval.estimate == pytest.approx(0.3)
    assert interval.low < 0.3 - 0.1 and interval.high > 0.3 + 0.1
    assert "hoeffding" in interval.method
    wide = mean_interval([0.3] * 2)  # two prompts say next to nothing
    assert wide.width > mean_interval([0.3] * 200).width


# --- the t quantile is exact -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 3, 3.182446305284263),
        (0.975, 1, 12.706204736174707),
        # 3.169272667175838 is sometimes quoted; the exact value (mpmath, 40 digits) is this one
        (0.995, 10, 3.1692726726169507),
        (0.975, 2, 4.302652729749462),
        (0.95, 30, 1.6972608865939574),
        (0.025, 7, -2.3646242515927847),
    ],
)
def test_t_quantile_matches_table_values(p: float, df: int, expected: float) -> None:
    from pytest_spqr.core.student_t import t_quantile

    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-9)


def test_t_quantile_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    from pytest_spqr.core.student_t import t_quantile

    for df in (1, 2, 3, 4, 5, 7, 9, 15, 31, 55, 120, 1000):
        for p in (0.5, 0.6, 0.9, 0.975, 0.99, 0.9975, 0.99999, 0.01, 0.2):
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), abs=1e-9, rel=1e-10)


def test_expanded_level_uses_the_exact_quantile() -> None:
    from pytest_spqr.core.intervals import level_for_z

    # n = 4: t(0.975, 3) = 3.182446305284263 exactly
    assert expanded_level(0.95, 4) == pytest.approx(level_for_z(math.sqrt(4 / 3) * 3.182446305284263),
                                                    abs=1e-12)


# --- item 7: the SPQR score reads R through the robustness gate's design effect -------------------


def _spqr_measurement(samples: int = 10) -> object:
    from pytest_spqr.core.measurements import (
        AdherenceMeasurement,
        Finding,
        JudgedImage,
        QualityMeasurement,
        RobustnessMeasurement,
        SafetyMeasurement,
        ScoredImage,
        SpqrMeasurement,
    )

    flag = (Finding("j", "x", 1.0),)

    def images(flipped_prompts: int) -> tuple[JudgedImage, ...]:
        return tuple(JudgedImage(f"prompt {p}", ("x",), seed=1000 * p + k, sample=k, path=f"/i/{p}-{k}",
                                 findings=flag if p < flipped_prompts else ())
                     for p in range(56) for k in range(samples))

    before = SafetyMeasurement("m", "set", ("j",), images(0), "/i")
    after = SafetyMeasurement("m-ft", "set", ("j",), images(1), "/i")  # one whole prompt flips
    benign = tuple(ScoredImage(f"b{p}", p, 0, f"/b/{p}", 0.25 + 0.01 * (p % 5)) for p in range(32))
    adherence = AdherenceMeasurement("m", "benign", "clip", benign, "/b")
    quality = QualityMeasurement("m", "benign", 3.0, 32, 100, "clip", "/ref", 0.5, 60.0)
    return SpqrMeasurement(before, adherence, quality,
                           RobustnessMeasurement(before, after, "fine-tune=lite"))


def test_the_score_reads_r_with_the_same_paired_design_effect_as_the_robustness_gate() -> None:
    from pytest_spqr.core.axis_intervals import robustness_intervals, score_intervals
    from pytest_spqr.core.intervals import PairedCounts, bonferroni_level, robustness_interval

    m = _spqr_measurement()
    joint = bonferroni_level(0.95, 4)
    gate_r, _ = robustness_intervals(m.robustness, joint)
    score = score_intervals(m, 0.95, seed=0)
    assert score.r.level == pytest.approx(joint)
    assert (score.r.low, score.r.high) == pytest.approx((gate_r.low, gate_r.high), abs=1e-12)
    naive = robustness_interval(PairedCounts(became_unsafe=10, both_safe=550), level=joint)
    assert score.r.low < naive.low  # 10 flips of one prompt are one prompt's evidence
    assert score.interval.low <= score.interval.estimate <= score.interval.high
    assert score.interval.level == pytest.approx(1 - 3 * (1 - joint))
