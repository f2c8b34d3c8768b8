"""Charts for the HTML report, drawn with matplotlib and returned as inline SVG text.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global
backend or figure registry), so drawing is safe anywhere and leaves no state behind. SVG
output is deterministic: fixed hash salt, no date, text kept as text.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from pytest_spqr.core.record import RadarData

if TYPE_CHECKING:  # matplotlib is the optional [report] extra, imported when drawing
    from matplotlib.figure import Figure
    from matplotlib.projections.polar import PolarAxes

AXIS_STYLE: dict[str, tuple[str, str]] = {
    "safety": ("Safety", "#1f77b4"),
    "prompt_adherence": ("Prompt adherence", "#ff7f0e"),
    "quality": ("Quality", "#2ca02c"),
    "robustness": ("Robustness", "#d62728"),
}
"""Axis → (legend label, colour): the paper's Figure 4 colours (blue, orange, green, red)."""

_RC: dict[Any, Any] = {
    "svg.hashsalt": "pytest-spqr",
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.edgecolor": "#888888",
}


def _svg(fig: Figure, label: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    safe = (label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))
    return re.sub(r"^<svg ", f'<svg class="chart" role="img" aria-label="{safe}" ', text, count=1)


def _short(text: str, width: int = 34) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def radar_svg(data: RadarData) -> str:
    """Figure 4 for one model: S, P, Q, R per harm category on a radar (inline SVG).

    With fewer than three categories a radar has no area, so the same values are drawn
    as grouped horizontal bars instead.
    """
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        if len(data.categories) >= 3:
            fig = _radar(data, Figure(figsize=(4.2, 4.6)))
        else:
            fig = _bars(data, Figure(figsize=(4.2, 2.6)))
    title = f"S-P-Q-R profile of {data.model} across harm categories"
    return _svg(fig, title)


def _legend(fig: Figure, data: RadarData, handles: Sequence[Any]) -> None:
    labels = []
    for axis in AXIS_STYLE:
        name = AXIS_STYLE[axis][0]
        if axis in data.flat:
            name += " (all prompts)"
        if all(v is None for v in data.series.get(axis, ())):
            name += " (not measured)"
        labels.append(name)
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False,
               fontsize=8.5, handlelength=1.4, columnspacing=1.0)


def _radar(data: RadarData, fig: Figure) -> Figure:
    n = len(data.categories)
    angles = [2 * math.pi * i / n for i in range(n)]
    ax = cast("PolarAxes", fig.add_axes((0.18, 0.25, 0.64, 0.56), projection="polar"))
    ax.set_theta_offset(math.pi / 2)
    ax.set_theta_direction(-1)
    ax.set_ylim(0, 1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels(["", "0.5", "", "1"], fontsize=7, color="#777777")
    ax.set_xticks(angles)
    ax.set_xticklabels([_short(c, 16) for c in data.categories], fontsize=9)
    ax.grid(color="#dddddd", linewidth=0.6)
    handles = []
    for axis, (_, colour) in AXIS_STYLE.items():
        values = data.series.get(axis, ())
        points = [(a, v) for a, v in zip(angles, values, strict=True) if v is not None]
        if not points:
            (line,) = ax.plot([], [], color=colour, linewidth=1.8)
            handles.append(line)
            continue
        xs = [a for a, _ in points] + [points[0][0]]
        ys = [v for _, v in points] + [points[0][1]]
        style = "--" if axis in data.flat else "-"
        (line,) = ax.plot(xs, ys, color=colour, linewidth=1.8, linestyle=style, marker="o",
                          markersize=3)
        ax.fill(xs, ys, color=colour, alpha=0.08)
        handles.append(line)
    title = _short(data.model)
    if data.scenario:
        title += f"\nR after benign fine-tuning: {data.scenario}"
    fig.suptitle(title, fontsize=10, y=0.985)
    _legend(fig, data, handles)
    return fig


def _bars(data: RadarData, fig: Figure) -> Figure:
    ax = fig.add_axes((0.30, 0.34, 0.64, 0.52))
    groups = list(data.categories) or ["all prompts"]
    height = 0.8 / len(AXIS_STYLE)
    handles = []
    for k, (axis, (_, colour)) in enumerate(AXIS_STYLE.items()):
        values = list(data.series.get(axis, ())) or [None]
        ys = [g + (k - 1.5) * height for g in range(len(groups))]
        widths = [0.0 if v is None else v for v in values]
        handles.append(ax.barh(ys, widths, height=height * 0.9, color=colour))
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([_short(g, 18) for g in groups], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(_short(data.model) + (f" — R: {data.scenario}" if data.scenario else ""),
                 fontsize=9.5, y=0.98)
    _legend(fig, data, handles)
    return fig
