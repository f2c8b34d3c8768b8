"""The leaderboard as text: plain lines for the terminal, Markdown and HTML in the paper's
Table 1 layout, CSV in long form.

Table 1 puts one model per line: Safety, Prompt adherence and Quality once (they do not
depend on the fine-tune), then Robustness and SPQR for each benign fine-tuning scenario.
The CSV has one row per model × scenario, for spreadsheets and scripts.
"""

from __future__ import annotations

import csv
import io
from html import escape

from pytest_spqr.core.record import Leaderboard, RunRecord

SHARED = (("safety", "S"), ("prompt_adherence", "P"), ("quality", "Q"))
PER_SCENARIO = (("robustness", "R"), ("score", "SPQR"))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _columns(board: Leaderboard) -> list[tuple[str | None, str | None]]:
    """Scenario groups to show: the board's, or one unnamed group when only scores exist."""
    if board.columns:
        return list(board.columns)
    if any(r.score is not None for r in board.rows):
        return [(None, None)]
    return []


def _best(board: Leaderboard) -> dict[tuple[str, tuple[str | None, str | None] | None], float]:
    """The highest value of each shared column and each scenario column."""
    best: dict[tuple[str, tuple[str | None, str | None] | None], float] = {}
    for row in board.rows:
        for axis, _ in SHARED:
            value = getattr(row, axis)
            if value is not None and value > best.get((axis, None), -1.0):
                best[(axis, None)] = value
        for axis, _ in PER_SCENARIO:
            value = getattr(row, axis)
            if value is not None and value > best.get((axis, row.column), -1.0):
                best[(axis, row.column)] = value
    return best


def leaderboard_markdown(board: Leaderboard) -> str:
    """A GitHub-flavoured Markdown table; the best value of each column in bold."""
    columns = _columns(board)
    best = _best(board)
    header = ["#", "Model", "S", "P", "Q"]
    for column in columns:
        label = Leaderboard.column_label(column) if column != (None, None) else ""
        header += [f"R {label}".strip(), f"SPQR {label}".strip()]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(
        [":-:", ":--"] + ["--:"] * (len(header) - 2)) + "|"]

    def cell(value: float | None, key: tuple[str, tuple[str | None, str | None] | None]) -> str:
        text = _fmt(value)
        return f"**{text}**" if value is not None and best.get(key) == value else text

    for rank, model in enumerate(board.models, 1):
        s, p, q = board.shared(model)
        cells = [str(rank), f"`{model}`", cell(s, ("safety", None)),
                 cell(p, ("prompt_adherence", None)), cell(q, ("quality", None))]
        for column in columns:
            row = board.row(model, column)
            for axis, _ in PER_SCENARIO:
                cells.append(cell(getattr(row, axis) if row else None, (axis, column)))
        lines.append("| " + " | ".join(cells) + " |")
    if board.quality_note:
        lines += ["", f"_{board.quality_note}_"]
    return "\n".join(lines) + "\n"


def leaderboard_csv(board: Leaderboard) -> str:
    """One row per model × scenario: ``model,scenario,profile,safety,…,spqr`` (full precision)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "model", "scenario", "profile", "safety", "prompt_adherence",
                     "quality", "robustness", "spqr"])
    for row in board.rows:
        writer.writerow([
            board.models.index(row.model) + 1, row.model, row.scenario or "", row.profile or "",
            *("" if v is None else repr(v) for v in (
                row.safety, row.prompt_adherence, row.quality, row.robustness, row.score)),
        ])
    return out.getvalue()


def _tint(value: float | None) -> str:
    if value is None:
        return ""
    hue = round(120 * max(0.0, min(1.0, value)))
    return f' style="background:hsl({hue},70%,92%)"'


def leaderboard_html(board: Leaderboard) -> str:
    """The leaderboard as an HTML ``<table>`` (Table 1 layout, cells tinted red → green)."""
    columns = _columns(board)
    best = _best(board)
    head1 = ['<th rowspan="2">#</th>', '<th rowspan="2">Model</th>',
             '<th colspan="3" class="group">Shared axes</th>']
    head2 = ['<th title="Safety">S</th>', '<th title="Prompt adherence (CLIPScore cosine)">P</th>',
             '<th title="Quality (normalised FID)">Q</th>']
    for column in columns:
        label = Leaderboard.column_label(column) if column != (None, None) else "Overall"
        head1.append(f'<th colspan="2" class="group">{escape(label)}</th>')
        head2 += ['<th title="Robustness to benign fine-tuning">R</th>',
                  '<th title="Harmonic mean of S, P, Q, R">SPQR</th>']

    def cell(value: float | None, key: tuple[str, tuple[str | None, str | None] | None],
             tint: bool = True) -> str:
        text = escape(_fmt(value))
        if value is not None and best.get(key) == value and len(board.models) > 1:
            text = f"<b>{text}</b>"
        return f'<td class="num"{_tint(value) if tint else ""}>{text}</td>'

    body = []
    for rank, model in enumerate(board.models, 1):
        s, p, q = board.shared(model)
        cells = [f"<td>{rank}</td>", f'<td class="model"><code>{escape(model)}</code></td>',
                 cell(s, ("safety", None)), cell(p, ("prompt_adherence", None), tint=False),
                 cell(q, ("quality", None))]
        for column in columns:
            row = board.row(model, column)
            for axis, _ in PER_SCENARIO:
                cells.append(cell(getattr(row, axis) if row else None, (axis, column)))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<table class="leaderboard">\n<thead>\n<tr>' + "".join(head1) + "</tr>\n<tr>"
        + "".join(head2) + "</tr>\n</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"
    )


def leaderboard_lines(board: Leaderboard, *, width: int = 36) -> list[str]:
    """Plain fixed-width lines (Table 1 layout) for pytest's terminal summary; no colour.

    Model labels longer than ``width`` are shortened from the left (the end of a path is
    what tells models apart). Empty when nothing was measured.
    """
    if not board.rows:
        return []
    columns = _columns(board)
    groups = [("shared axes", ["S", "P", "Q"])] + [
        (Leaderboard.column_label(c) if c != (None, None) else "overall", ["R", "SPQR"])
        for c in columns]
    rows = []
    for rank, model in enumerate(board.models, 1):
        label = model if len(model) <= width else "…" + model[-(width - 1):]
        values: list[tuple[float | None, ...]] = [board.shared(model)]
        for column in columns:
            row = board.row(model, column)
            values.append((row.robustness, row.score) if row else (None, None))  # R, SPQR
        rows.append((str(rank), label, [[_fmt(v) for v in vs] for vs in values]))
    name_w = max(5, *(len(label) for _, label, _ in rows))
    cell_w = 6
    group_w = [max(len(title), len(heads) * (cell_w + 1) - 1) for title, heads in groups]

    def line(rank: str, name: str, cells: list[list[str]]) -> str:
        parts = [f"{rank:>3}  {name:<{name_w}}"]
        parts += [" ".join(f"{c:<{cell_w}}" for c in group).ljust(w) for group, w in zip(cells, group_w, strict=True)]
        return "   ".join(parts).rstrip()

    lines = [
        line("", "", [[title] for title, _ in groups]),
        line("#", "model", [heads for _, heads in groups]),
        *(line(rank, name, cells) for rank, name, cells in rows),
    ]
    if board.quality_note:
        lines.append(board.quality_note)
    return lines


def usage_line(record: RunRecord) -> str | None:
    """One line on what the run used: images made and judged, peak memory (None: no work)."""
    if not record.usage:
        return None
    totals = record.totals()
    per = ", ".join(f"{name} {u.images_generated}" for name, u in record.usage.items())
    remote = f" (+{totals['images_remote']} by Ray tasks)" if totals["images_remote"] else ""
    rss = totals["peak_rss_mib"]
    gpu = totals["peak_gpu_mib"]
    memory = f"peak RSS {rss:.0f} MiB" if rss is not None else "peak RSS unknown"
    if gpu is not None:
        memory += f", peak GPU {gpu:.0f} MiB"
    return (f"{totals['images_generated']} images generated{remote}"
            + (f" ({per})" if len(record.usage) > 1 else "")
            + f", {totals['images_judged']} judged"
            + (f" ({totals['images_judged_remote']} by Ray)" if totals["images_judged_remote"] else "")
            + f"; {memory} (largest process)")
