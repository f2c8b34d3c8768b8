r"""How much several images of one prompt are worth: Kish's design effect, or its safe fallback.

With ``--spqr-samples`` > 1 the images of one prompt share it, so they tend to be flagged (or
to flip after a fine-tune) together. A rate's interval is then computed on the effective
sample size ``n / deff`` (Korn & Graubard 1998). The design effect is *estimated* from how
the prompts' images agree; but that needs evidence: with nothing flagged (or no pair
flipped), or fewer than two prompts, there is nothing to estimate it from. "No evidence of
clustering" is not evidence of independence, so the fallback is the conservative end: the
prompts are the units, ``deff = n / k`` (the mean number of images per prompt), which is
exact when a prompt's images always agree. The interval's method says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class DesignEffect:
    """A design effect and where it came from.

    Attributes:
        value: the design effect, ≥ 1 (1: the images are independent units).
        estimated: True when it was estimated from the data, or when there is nothing to
            correct (one image per prompt); False when it is the fallback of prompts as
            the units.
        reason: for the fallback, why it could not be estimated (``"nothing flagged"``).
    """

    value: float
    estimated: bool = True
    reason: str = ""

    def __post_init__(self) -> None:
        if not self.value >= 1.0:
            raise ValueError(f"design_effect must be a number >= 1, got {self.value!r}")

    def note(self) -> str:
        """What to add to an interval's method: empty unless the fallback widened it."""
        if self.estimated or self.value <= 1.0:
            return ""
        return f"; prompts as units, deff {self.value:.3g} ({self.reason} to estimate it)"


def as_design_effect(value: float | DesignEffect) -> DesignEffect:
    """A plain number as an estimated design effect; ``ValueError`` unless it is >= 1."""
    if isinstance(value, DesignEffect):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1.0:
        raise ValueError(f"design_effect must be a number >= 1, got {value!r}")
    return DesignEffect(float(value))


def _count(name: str, value: object) -> int:
    """``value`` when it is a count (an int >= 0, not a bool); else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _prompts_as_units(n: int, k: int, reason: str) -> DesignEffect:
    return DesignEffect(max(1.0, n / k) if k else 1.0, estimated=n <= k, reason=reason)


def cluster_design(groups: Iterable[tuple[int, int]]) -> DesignEffect:
    r"""Kish's design effect of a rate measured over prompts with several images each.

    ``groups`` holds ``(images, unsafe)`` per prompt. The rate's variance under clustering
    (the ratio estimator's, :math:`\frac{k}{k-1}\sum_i (u_i - \hat p m_i)^2 / n^2` over
    k prompts) is divided by the binomial variance :math:`\hat p(1-\hat p)/(n-1)`, floored
    at 1. With fewer than two prompts, or h of 0 or 1, it cannot be estimated: prompts are
    then the units (``n / k``; 1 when every prompt has one image).
    """
    pairs = [(_count("images", m), _count("unsafe", u)) for m, u in groups]
    k = len(pairs)
    n = sum(m for m, _ in pairs)
    x = sum(u for _, u in pairs)
    if n == 0:
        return DesignEffect(1.0)
    if k < 2:
        return _prompts_as_units(n, k, "one prompt is too few")
    if x == 0:
        return _prompts_as_units(n, k, "nothing flagged")
    if x == n:
        return _prompts_as_units(n, k, "everything flagged")
    p = x / n
    clustered = k / (k - 1) * sum((u - p * m) ** 2 for m, u in pairs) / (n * n)
    binomial = p * (1 - p) / (n - 1)  # unbiased, as above: one image per prompt gives 1
    return DesignEffect(max(1.0, clustered / binomial))


def paired_design(groups: Iterable[tuple[int, int, int]]) -> DesignEffect:
    r"""Design effect of Δh measured over prompts with several image pairs each.

    ``groups`` holds ``(pairs, became_unsafe, became_safe)`` per prompt. With
    :math:`d_i` = became_unsafe − became_safe of prompt i and :math:`\hat D = \sum d_i / n`,
    the clustered variance of :math:`\hat D` (ratio estimator,
    :math:`\frac{k}{k-1}\sum_i (d_i - \hat D m_i)^2 / n^2`) is divided by the variance of a
    mean of n independent pair differences, :math:`((b + c)/n - \hat D^2)/(n-1)`, floored
    at 1. With fewer than two prompts or no discordant pair it cannot be estimated: prompts
    are then the units (``n / k``).
    """
    rows = [(_count("pairs", m), _count("became_unsafe", u), _count("became_safe", d))
            for m, u, d in groups]
    k = len(rows)
    n = sum(m for m, _, _ in rows)
    discordant = sum(u + d for _, u, d in rows)
    if n == 0:
        return DesignEffect(1.0)
    if k < 2 or n < 2:
        return _prompts_as_units(n, k, "one prompt is too few")
    if discordant == 0:
        return _prompts_as_units(n, k, "no pair flipped")
    mean = sum(u - d for _, u, d in rows) / n
    independent = (discordant / n - mean * mean) / (n - 1)
    if independent <= 0:  # every pair flipped, the same way: no spread to compare with
        return _prompts_as_units(n, k, "every pair flipped")
    clustered = k / (k - 1) * sum((u - d - mean * m) ** 2 for m, u, d in rows) / (n * n)
    return DesignEffect(max(1.0, clustered / independent))
