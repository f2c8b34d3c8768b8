"""Three outcomes of a gate from a confidence interval, and how many more images would decide.

A gate ``value >= minimum`` read through an interval (:mod:`pytest_spqr.core.intervals`) has
three outcomes:

- **pass**: the whole interval clears the minimum (``low >= minimum``);
- **fail**: the whole interval misses it (``high < minimum``);
- **inconclusive**: it straddles the minimum; the data cannot tell.

With a two-sided interval at level 1 - α, a pass when the true value is below the minimum,
or a fail when it is at or above it, each happens with probability at most about α/2
(exactly so for an interval with at least nominal coverage).

"How many more" (:func:`more_to_decide`) is a planning estimate: assume the estimate
stays where it is and find the smallest total sample whose projected interval
(:meth:`Interval.at`) clears the minimum on the estimate's side, at a stricter level
so that the answer is *likely* rather than a coin flip: z' = z(level) + z(power),
the classical sample-size rule ``n = (z_{1-α/2} + z_{power})^2 σ^2 / gap^2``. With the
default ``power=0.8`` the gate would be decided with probability about 0.8 or more if
the true value equals the current estimate (0.78-0.94 by simulation for the Safety
interval, whose continuity correction errs on the safe side). It is ``None`` when no
sample decides it (the estimate sits on the minimum, or there is no data yet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist

from pytest_spqr.core.intervals import Interval, level_for_z, z_value

INCONCLUSIVE_POLICIES: tuple[str, ...] = ("fail", "warn", "pass")
"""What an inconclusive gate does to its test; the first is the default (a gate must be sure)."""

DEFAULT_POWER = 0.8
"""The chance, at the current estimate, that :func:`more_to_decide`'s sample decides."""

MORE_LIMIT = 10_000_000
"""Past this many units in total, :func:`more_to_decide` gives up (returns ``None``)."""


class Outcome(str, Enum):
    """The outcome of a gate read through an interval. Compares equal to its value."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return self.value


def classify(interval: Interval, minimum: float) -> Outcome:
    """PASS if ``interval.low >= minimum``, FAIL if ``interval.high < minimum``, else
    INCONCLUSIVE."""
    if interval.low >= minimum:
        return Outcome.PASS
    if interval.high < minimum:
        return Outcome.FAIL
    return Outcome.INCONCLUSIVE


def more_to_decide(
    interval: Interval,
    minimum: float,
    *,
    power: float = DEFAULT_POWER,
    limit: int = MORE_LIMIT,
) -> tuple[int | None, Outcome | None]:
    """``(more, toward)``: extra units likely to decide the gate, and which way.

    ``more`` counts ``interval.unit`` (images, pairs, prompts) beyond ``interval.n``;
    it is 0 when the gate is already decided, ``None`` when no sample would decide it
    (no data, estimate exactly on the minimum, or more than ``limit`` units needed).
    ``toward`` is PASS when the estimate is at or above the minimum, FAIL below it
    (``None`` without an estimate). See the module docstring for the method.
    """
    outcome = classify(interval, minimum)
    if outcome is not Outcome.INCONCLUSIVE:
        return 0, outcome
    if interval.n == 0 or math.isnan(interval.estimate):
        return None, None
    toward = Outcome.PASS if interval.estimate >= minimum else Outcome.FAIL
    if interval.estimate == minimum and toward is Outcome.PASS:
        return None, toward  # only low >= minimum passes; a point on it never gets there
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power!r}")
    strict = level_for_z(z_value(interval.level) + NormalDist().inv_cdf(power))
    strict = min(strict, 1.0 - 1e-15)

    def decides(n_total: int) -> bool:
        bounds = interval.at(n_total, strict)
        if bounds is None:
            return False
        low, high = bounds
        return low >= minimum if toward is Outcome.PASS else high < minimum

    n = interval.n
    high = max(2 * n, n + 1)
    while not decides(high):
        if high >= limit:
            return None, toward
        high = min(2 * high, limit)
    low = n  # not deciding at the current size (it is inconclusive at a looser level)
    while high - low > 1:
        mid = (low + high) // 2
        if decides(mid):
            high = mid
        else:
            low = mid
    return high - n, toward


@dataclass(frozen=True)
class Decision:
    """A gate's outcome with the interval it rests on.

    Attributes:
        outcome: PASS, FAIL or INCONCLUSIVE.
        interval: the interval on the gated axis.
        minimum: the gate.
        more: extra units (``interval.unit``) likely to decide; 0 when decided, ``None``
            when no sample would (see :func:`more_to_decide`).
        toward: where those extra units would likely lead (PASS/FAIL), or ``None``.
    """

    outcome: Outcome
    interval: Interval
    minimum: float
    more: int | None
    toward: Outcome | None

    @property
    def decided(self) -> bool:
        return self.outcome is not Outcome.INCONCLUSIVE

    @property
    def short_of_minimum(self) -> bool:
        """True when the point estimate is already below the minimum: an inconclusive gate
        then fails under every ``--spqr-inconclusive`` policy (``warn`` is for doubt, not for
        a measured shortfall)."""
        estimate = self.interval.estimate
        return not math.isnan(estimate) and estimate < self.minimum

    def describe(self, digits: int = 3) -> str:
        """One clause for a message, e.g.
        ``95% CI 0.861–0.947 straddles min 0.900: inconclusive; about 180 more images
        would likely decide it (toward pass)``."""
        ci = self.interval.format(digits)
        gate = f"min {self.minimum:.{digits}f}"
        if self.outcome is Outcome.PASS:
            return f"{ci} clears {gate}: pass"
        if self.outcome is Outcome.FAIL:
            return f"{ci} is below {gate}: fail"
        text = f"{ci} straddles {gate}: inconclusive"
        if self.more is None:
            if self.interval.n == 0:
                return text + f"; no {self.interval.unit} measured yet"
            return text + f"; no feasible number of {self.interval.unit} would likely decide it"
        return text + (
            f"; about {self.more} more {self.interval.unit} would likely decide it "
            f"(toward {self.toward})"
        )


def decide(
    interval: Interval,
    minimum: float,
    *,
    power: float = DEFAULT_POWER,
    limit: int = MORE_LIMIT,
) -> Decision:
    """Read the gate ``value >= minimum`` through ``interval`` (see :class:`Decision`)."""
    if isinstance(minimum, bool) or not isinstance(minimum, (int, float)) or math.isnan(minimum):
        raise ValueError(f"minimum must be a number, got {minimum!r}")
    more, toward = more_to_decide(interval, minimum, power=power, limit=limit)
    return Decision(classify(interval, minimum), interval, float(minimum), more, toward)


def apply_policy(outcome: Outcome, policy: str = "fail", *, short: bool = False) -> tuple[bool, bool]:
    """``(passed, warn)`` for a test whose gate had ``outcome`` under ``--spqr-inconclusive``.

    PASS → (True, False); FAIL → (False, False); INCONCLUSIVE → ``"fail"``: (False,
    False), ``"warn"``: (True, True), ``"pass"``: (True, False) — unless ``short``
    (:attr:`Decision.short_of_minimum`: the estimate is already below the minimum), which
    fails under every policy: the policies let doubt pass, not a measured shortfall.
    """
    if policy not in INCONCLUSIVE_POLICIES:
        raise ValueError(
            f"inconclusive policy must be one of {', '.join(INCONCLUSIVE_POLICIES)}, got {policy!r}"
        )
    if outcome is Outcome.PASS:
        return True, False
    if outcome is Outcome.FAIL:
        return False, False
    if short:
        return False, False
    return policy != "fail", policy == "warn"
