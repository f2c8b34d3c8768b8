"""Quality across models, judge agreement, per-category rates: examples and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pytest_spqr.core.quality import (
    CategoryRate,
    PairAgreement,
    finding_rates,
    judge_agreement,
    normalize_fids,
    property_key,
    rates_by_category,
)
from pytest_spqr.core.scores import quality_score

fid_values = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)
fid_maps = st.dictionaries(st.text(min_size=1, max_size=8), fid_values, min_size=2, max_size=8)
epsilons = st.floats(min_value=0.0, max_value=0.49)


# --- normalize_fids ----------------------------------------------------------------------


def test_bounds_from_the_compared_models_as_in_the_paper():
    result = normalize_fids({"base": 20.0, "esd": 25.0, "salun": 40.0})
    assert (result.fid_min, result.fid_max, result.source) == (20.0, 40.0, "models")
    assert result.scores == pytest.approx({"base": 0.95, "esd": 0.725, "salun": 0.05})
    assert result.best() == "base"


def test_fixed_and_mixed_bounds():
    fixed = normalize_fids({"a": 5.0, "b": 300.0}, fid_min=10.0, fid_max=250.0)
    assert fixed.source == "fixed"
    assert fixed.scores == pytest.approx({"a": 0.95, "b": 0.05})  # clamped into [ε, 1 − ε]
    single = normalize_fids({"only": 30.0}, fid_min=10.0, fid_max=50.0)
    assert single.scores["only"] == pytest.approx(quality_score(30.0, 10.0, 50.0))
    mixed = normalize_fids({"a": 20.0, "b": 30.0}, fid_max=60.0)
    assert (mixed.source, mixed.fid_min, mixed.fid_max) == ("mixed", 20.0, 60.0)


@pytest.mark.parametrize(
    ("fids", "message"),
    [
        ({}, "at least one model"),
        ({"a": 10.0}, "needs a range of FIDs"),
        ({"a": 10.0, "b": 10.0}, "needs a range of FIDs"),
        ({"a": float("nan"), "b": 1.0}, "FID of 'a' must be a finite number"),
        ({"a": -1.0, "b": 1.0}, "FID of 'a' must be >= 0"),
        ({"a": True, "b": 1.0}, "finite number"),
    ],
)
def test_normalize_errors(fids, message):
    with pytest.raises(ValueError, match=message):
        normalize_fids(fids)


@given(fid_maps, epsilons)
def test_q_across_models_is_bounded_ordered_and_hits_the_ends(fids, eps):
    assume(max(fids.values()) - min(fids.values()) > 1e-6)
    result = normalize_fids(fids, epsilon=eps)
    assert all(eps - 1e-12 <= q <= 1 - eps + 1e-12 for q in result.scores.values())
    names = sorted(fids, key=fids.get)
    qs = [result.scores[n] for n in names]
    assert all(a >= b - 1e-12 for a, b in zip(qs, qs[1:], strict=False))  # lower FID, higher Q
    assert max(qs) == pytest.approx(1 - eps) and min(qs) == pytest.approx(eps)


@given(fid_maps, st.floats(min_value=0.1, max_value=10.0), st.floats(min_value=0.0, max_value=50.0))
def test_q_is_invariant_to_affine_changes_of_all_fids(fids, scale, shift):
    assume(max(fids.values()) - min(fids.values()) > 1e-3)
    base = normalize_fids(fids).scores
    moved = normalize_fids({k: v * scale + shift for k, v in fids.items()}).scores
    assert moved == pytest.approx(base, abs=1e-9)


# --- judge agreement -------------------------------------------------------------------------


def test_agreement_table_and_kappa_by_hand():
    # 10 images: both 3, only nudenet 2, only llavaguard 1, neither 4
    flagged = (
        [{"nudenet", "llavaguard"}] * 3 + [{"nudenet"}] * 2 + [{"llavaguard"}] + [set()] * 4
    )
    result = judge_agreement(flagged, ["nudenet", "llavaguard"])
    assert (result.n, result.any_flagged) == (10, 6)
    assert result.flagged == {"nudenet": 5, "llavaguard": 4}
    assert result.union_rate == 0.6 and result.rate("nudenet") == 0.5
    pair = result.pair("nudenet", "llavaguard")
    assert (pair.both, pair.only_a, pair.only_b, pair.neither) == (3, 2, 1, 4)
    assert pair.agreement == 0.7
    p_e = 0.5 * 0.4 + 0.5 * 0.6
    assert pair.kappa == pytest.approx((0.7 - p_e) / (1 - p_e))
    swapped = result.pair("llavaguard", "nudenet")
    assert (swapped.only_a, swapped.only_b) == (1, 2) and swapped.kappa == pytest.approx(pair.kappa)


def test_kappa_is_undefined_when_both_judges_are_constant_and_equal():
    assert PairAgreement("a", "b", 0, 0, 0, 5).kappa is None
    assert PairAgreement("a", "b", 5, 0, 0, 0).kappa is None
    assert PairAgreement("a", "b", 0, 5, 0, 0).kappa == 0.0  # constant but different
    assert math.isnan(PairAgreement("a", "b", 0, 0, 0, 0).agreement)


def test_agreement_errors_and_three_judges():
    with pytest.raises(ValueError, match="not among the judges"):
        judge_agreement([{"q16"}], ["nudenet"])
    with pytest.raises(ValueError, match="must be distinct"):
        judge_agreement([], ["a", "a"])
    result = judge_agreement([{"a", "c"}, {"b"}], ["a", "b", "c"])
    assert [(p.a, p.b) for p in result.pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    with pytest.raises(KeyError):
        result.pair("a", "z")


decisions = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60)


def _pair(rows):
    flagged = [{name for name, hit in zip("ab", row, strict=True) if hit} for row in rows]
    return judge_agreement(flagged, ["a", "b"]).pair("a", "b")


@given(decisions)
def test_kappa_and_agreement_are_bounded_and_symmetric(rows):
    pair = _pair(rows)
    swapped = _pair([(b, a) for a, b in rows])
    assert 0.0 <= pair.agreement <= 1.0 and pair.n == len(rows)
    assert pair.agreement == swapped.agreement and pair.kappa == swapped.kappa
    if pair.kappa is not None:
        assert -1.0 - 1e-12 <= pair.kappa <= 1.0 + 1e-12


@given(st.lists(st.booleans(), min_size=2, max_size=60))
def test_identical_judges_agree_perfectly(column):
    assume(any(column) and not all(column))
    pair = _pair([(x, x) for x in column])
    assert pair.agreement == 1.0 and pair.kappa == 1.0
    opposite = _pair([(x, not x) for x in column])
    assert opposite.agreement == 0.0 and opposite.kappa <= 0.0


@given(st.lists(st.frozensets(st.sampled_from("abc")), max_size=40))
def test_union_rate_is_at_least_every_judge_rate(flagged):
    result = judge_agreement(flagged, ["a", "b", "c"])
    assert result.any_flagged == sum(bool(s) for s in flagged)
    for name in "abc":
        assert result.flagged[name] <= result.any_flagged


# --- per-category rates -----------------------------------------------------------------------


def test_rates_by_prompt_category():
    images = [
        (("sexual",), True),
        (("sexual", "violence"), False),
        (("violence",), True),
        ((), True),
    ]
    rates = rates_by_category(images)
    assert list(rates) == ["sexual", "uncategorised", "violence"]
    assert rates["sexual"] == CategoryRate("sexual", 1, 2)
    assert rates["violence"].rate == 0.5 and rates["violence"].safety == 0.5
    assert rates["uncategorised"].harmful_percent == 100.0


def test_finding_rates_share_of_all_images():
    findings = [("O4", "FEMALE_BREAST_EXPOSED"), ("O4", "O4"), (), ("O2",)]
    rates = finding_rates(findings)
    assert rates == {
        "FEMALE_BREAST_EXPOSED": CategoryRate("FEMALE_BREAST_EXPOSED", 1, 4),
        "O2": CategoryRate("O2", 1, 4),
        "O4": CategoryRate("O4", 2, 4),
    }
    assert math.isnan(CategoryRate("x", 0, 0).rate)


prompt_categories = st.frozensets(st.sampled_from(["hate", "sexual", "violence"]))


@given(st.lists(st.tuples(prompt_categories, st.booleans())))
def test_category_rates_are_counts_within_groups(images):
    rates = rates_by_category(images)
    for name, rate in rates.items():
        members = [
            unsafe
            for cats, unsafe in images
            if name in cats or (not cats and name == "uncategorised")
        ]
        assert (rate.unsafe, rate.total) == (sum(members), len(members))
        assert 0.0 <= rate.rate <= 1.0


@pytest.mark.parametrize(
    ("category", "key"),
    [
        ("O4: Nudity Content", "O4_Nudity_Content"),
        ("self-harm", "self-harm"),
        ("FEMALE_BREAST_EXPOSED", "FEMALE_BREAST_EXPOSED"),
        ("  ", "_"),
    ],
)
def test_property_key(category, key):
    assert property_key(category) == key
