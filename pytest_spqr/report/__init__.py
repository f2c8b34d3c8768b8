"""Human-facing output of a run record: HTML report, leaderboards, comparisons, snapshots.

- :mod:`~pytest_spqr.report.html`: the self-contained ``index.html``;
- :mod:`~pytest_spqr.report.charts`: the radar charts (matplotlib, inline SVG);
- :mod:`~pytest_spqr.report.blur`: unsafe images are blurred before they are shown;
- :mod:`~pytest_spqr.report.tables`: the leaderboard as terminal lines, Markdown, CSV, HTML;
- :mod:`~pytest_spqr.report.compare`: per-axis deltas and flipped prompts of two records;
- :mod:`~pytest_spqr.report.snapshots`: a syrupy extension for per-prompt verdicts;
- :mod:`~pytest_spqr.report.environment`: the test suite's git commit for the record;
- :mod:`~pytest_spqr.report.cli`: the ``spqr`` command.

Never imports pytest; numpy, PIL and matplotlib are imported only where images or charts
are drawn, so reading records and printing leaderboards needs none of them.
"""
