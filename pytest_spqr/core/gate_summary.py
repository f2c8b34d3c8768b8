"""What a run's gates decided, counted honestly: decided, inconclusive, skipped.

A green pytest run is not a certified model: a gate whose interval straddled its minimum
passes under ``--spqr-inconclusive=warn``/``pass``, and a skipped test checked nothing. The
terminal summary, the run record (``"gates"`` in ``spqr.json``) and the HTML report read
the run through :func:`gate_summary`, and say PASSED only when every gate was decided and
passed and nothing was skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

VERDICTS: tuple[str, ...] = ("passed", "failed", "not passed", "no gate")
"""``passed``: every gate decided and cleared, nothing skipped, nothing failed; ``failed``:
a test failed or errored; ``not passed``: no failure, but a gate was only let through
(inconclusive) or a test was skipped; ``no gate``: nothing was gated."""


@dataclass(frozen=True)
class GateSummary:
    """Counts over a run's gates (axis entries that carry an outcome) and tests.

    Attributes:
        passed, failed: gates whose interval (or Q's point value) cleared, or missed, the
            minimum (together: :attr:`decided`).
        inconclusive: gates whose interval straddled the minimum.
        let_through: of those, how many are in tests that passed anyway (the ``warn`` or
            ``pass`` inconclusive policy).
        skipped: skipped tests (a skipped test may have held a gate that nobody checked).
        failed_tests: tests that failed or errored.
        tests: tests recorded.
    """

    passed: int = 0
    failed: int = 0
    inconclusive: int = 0
    let_through: int = 0
    skipped: int = 0
    failed_tests: int = 0
    tests: int = 0

    @property
    def decided(self) -> int:
        """Gates whose interval (or Q's point value) cleared or missed the minimum."""
        return self.passed + self.failed

    @property
    def verdict(self) -> str:
        """One of :data:`VERDICTS`."""
        if self.failed_tests or self.failed:
            return "failed"
        if self.inconclusive or self.skipped:
            return "not passed"
        return "passed" if self.decided else "no gate"

    def counts(self) -> str:
        """``3 decided (2 pass, 1 fail), 7 inconclusive (7 let through by the inconclusive
        policy), 1 skipped``."""
        text = f"{self.decided} decided ({self.passed} pass, {self.failed} fail), "
        text += f"{self.inconclusive} inconclusive"
        if self.let_through:
            text += f" ({self.let_through} let through by the inconclusive policy)"
        return text + f", {self.skipped} skipped"

    def line(self) -> str:
        """The terminal's line: ``spqr gates: NOT PASSED — 0 decided (…), 1 inconclusive …``."""
        return f"spqr gates: {self.verdict.upper()} — {self.counts()}"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "decided": self.decided, **asdict(self)}


def gate_summary(tests: Iterable[Any]) -> GateSummary:
    """Count the gates of ``tests`` (:class:`~pytest_spqr.core.record.TestEntry` values:
    ``outcome`` and ``axes``, each axis's ``details["outcome"]`` when it was gated)."""
    counts = {"passed": 0, "failed": 0, "inconclusive": 0, "let_through": 0, "skipped": 0,
              "failed_tests": 0, "tests": 0}
    for test in tests:
        counts["tests"] += 1
        if test.outcome == "skipped":
            counts["skipped"] += 1
        elif test.outcome in ("failed", "error"):
            counts["failed_tests"] += 1
        for entry in test.axes:
            outcome = entry.details.get("outcome")
            if outcome in ("pass", "fail"):
                counts["passed" if outcome == "pass" else "failed"] += 1
            elif outcome == "inconclusive":
                counts["inconclusive"] += 1
                counts["let_through"] += test.outcome in ("passed", "xpassed")
    return GateSummary(**counts)
