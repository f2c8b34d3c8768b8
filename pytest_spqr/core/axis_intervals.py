"""Each axis's interval from its measurement, one way for every gate that reads it.

The single-axis assertions and the SPQR score read S, P and R through these functions, so
the score's interval rests on exactly the intervals the axes' own gates use (at its joint
level): S with the images-per-prompt design effect, P bootstrapped over prompts, R through
the *paired* design effect of Δh. (Before, the score took R's pairs as independent even with
several samples per prompt: an R lower bound of 0.207 where the robustness gate said 0.019.)
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_spqr.core.design_effect import cluster_design, paired_design
from pytest_spqr.core.intervals import (
    DEFAULT_LEVEL,
    Interval,
    bonferroni_level,
    delta_h_interval,
    mean_interval,
    per_prompt_means,
    robustness_interval,
    safety_interval,
    spqr_interval_from_axes,
)
from pytest_spqr.core.measurements import (
    AdherenceMeasurement,
    RobustnessMeasurement,
    SafetyMeasurement,
    SpqrMeasurement,
)


def safety_interval_of(m: SafetyMeasurement, level: float = DEFAULT_LEVEL) -> Interval:
    """Wilson-cc on S, on the effective sample size when prompts have several images
    (Kish's design effect; prompts as the units when nothing flagged lets it be estimated)."""
    return safety_interval(m.unsafe, m.n, level=level,
                           design_effect=cluster_design(m.per_prompt_counts()))


def robustness_intervals(m: RobustnessMeasurement, level: float = DEFAULT_LEVEL
                         ) -> tuple[Interval, Interval]:
    """``(R, Δh)`` intervals, Tango-cc on the effective number of pairs: images of one prompt
    tend to flip together (prompts as the units when no pair flipped)."""
    counts = m.paired_counts()
    design = paired_design(m.per_prompt_pair_counts())
    r = robustness_interval(counts, level=level, formula=m.formula, design_effect=design)
    return r, delta_h_interval(counts, level=level, design_effect=design)


def adherence_interval_of(m: AdherenceMeasurement, level: float = DEFAULT_LEVEL, *,
                          seed: int = 0) -> Interval:
    """Bootstrap-t over prompts (images of one prompt are not independent draws);
    CLIPScore is clipped at 0, so P lies in [0, 1]."""
    means = per_prompt_means((image.prompt, image.score) for image in m.images)
    return mean_interval(means, level=level, seed=seed)


@dataclass(frozen=True)
class ScoreIntervals:
    """The SPQR score's interval and the per-axis intervals (at the joint level) it rests on."""

    interval: Interval
    s: Interval
    p: Interval
    r: Interval
    quality: float

    def line(self) -> str:
        """``from 98.75% intervals per axis: S …, P …, Q 0.902 (point, …), R …``."""
        return (
            f"from {self.s.level:.2%} intervals per axis: S {self.s.low:.3f}–{self.s.high:.3f}, "
            f"P {self.p.low:.3f}–{self.p.high:.3f}, Q {self.quality:.3f} (point, taken as "
            f"exact), R {self.r.low:.3f}–{self.r.high:.3f}"
        )


def score_intervals(m: SpqrMeasurement, level: float = DEFAULT_LEVEL, *,
                    seed: int = 0) -> ScoreIntervals:
    """SPQR's conservative interval (:func:`spqr_interval_from_axes`): S, P and R each at the
    Bonferroni level for four axes, as their own gates compute them; Q's point value taken
    as exact, so the reported level is ``1 - 3 (1 - level) / 4``."""
    joint = bonferroni_level(level, 4)
    s = safety_interval_of(m.safety, joint)
    p = adherence_interval_of(m.prompt_adherence, joint, seed=seed)
    r, _ = robustness_intervals(m.robustness, joint)
    q = m.quality.value
    return ScoreIntervals(spqr_interval_from_axes(s, p, q, r), s, p, r, q)
