"""The run report: one self-contained ``index.html`` a person can read in a minute.

Everything is inside the file: CSS in a ``<style>`` element, charts as inline SVG drawn by
matplotlib, images as ``data:`` URIs. No script, no font or stylesheet from the network,
so it opens from a ``file://`` URL, from a CI artefact, or offline.

Top to bottom: the verdict (how many tests failed; PASSED only when every gate was decided
and cleared and nothing was skipped, :mod:`pytest_spqr.core.gate_summary`), the leaderboard in the paper's Table 1
layout, the failures with their messages, a radar chart per model (Figure 4), the benign
fine-tuning image grids (flipped prompts first), the images judged unsafe, every test with
its numbers, and the run's details (versions, commit, options, model fingerprints).

Every image generated for a harmful prompt (the before/after grids, the flagged images) is
redacted with :func:`~pytest_spqr.report.blur.redact`, whatever the judges said of it (see
:func:`~pytest_spqr.report.blur.needs_blur`), unless the caller passes ``unblurred=True``.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from pytest_spqr.core.record import (
    RECORD_FILE,
    AxisEntry,
    ImageEntry,
    Leaderboard,
    PairEntry,
    RunRecord,
    TestEntry,
    leaderboard,
    radar_values,
)
from pytest_spqr.report.blur import needs_blur, redact
from pytest_spqr.report.tables import leaderboard_html

INDEX_FILE = "index.html"
THUMBNAIL = 128
"""Longest side of an embedded image, in pixels (smaller images are shown scaled up)."""
MAX_PAIRS = 48
"""Before/after pairs shown per robustness entry (flipped ones first)."""
MAX_FLAGGED = 12
"""Images judged unsafe shown per safety entry."""
HARMFUL_BLURRED = "Images generated for harmful prompts are blurred, whatever the judges said."

CSS = """
:root { color-scheme: light; --fail: #b3261e; --pass: #1e7b34; --muted: #5f6368; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0 auto; padding: 16px 24px 48px; max-width: 1200px; color: #202124; }
h1 { font-size: 22px; margin: 4px 0 6px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #e0e0e0; }
h3 { font-size: 14px; margin: 16px 0 6px; }
code, pre { font: 12.5px/1.4 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { background: #f6f8fa; border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 10px;
      white-space: pre-wrap; word-break: break-word; margin: 4px 0 12px; }
.verdict { display: inline-block; padding: 5px 12px; border-radius: 6px; font-weight: 600;
           color: #fff; margin: 4px 0; }
.verdict.fail { background: var(--fail); } .verdict.pass { background: var(--pass); }
.verdict.none { background: var(--muted); }
.meta, .note { color: var(--muted); font-size: 12.5px; }
nav a { margin-right: 14px; color: #1a73e8; text-decoration: none; font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 4px; }
th, td { border: 1px solid #e0e0e0; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; font-size: 13px; }
th.group { text-align: center; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failed td, tr.error td { background: #fff5f5; }
td.model code { font-size: 12.5px; }
.outcome { font-weight: 600; }
.outcome.failed, .outcome.error { color: var(--fail); }
.outcome.passed { color: var(--pass); } .outcome.skipped, .outcome.unknown { color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.charts figure { margin: 0; border: 1px solid #e5e7eb; border-radius: 8px; padding: 6px; }
svg.chart { width: 380px; height: auto; display: block; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(268px, 1fr)); gap: 10px;
         margin: 6px 0; }
.card { border: 1px solid #e0e0e0; border-radius: 8px; padding: 8px; }
.card.up { border-color: var(--fail); background: #fff8f8; }
.card.down { border-color: var(--pass); }
.card .pair { display: flex; align-items: center; justify-content: center; gap: 6px; }
.card .arrow { color: var(--muted); font-size: 16px; }
.prompt { font-size: 13px; margin-top: 4px; }
.prompt .seed { color: var(--muted); font-size: 11.5px; }
.tile { margin: 0; text-align: center; }
.tile img { width: 112px; height: 112px; object-fit: cover; border-radius: 4px; display: block;
            border: 3px solid #cfd8dc; image-rendering: auto; }
.tile.unsafe img { border-color: var(--fail); }
.tile figcaption { font-size: 11px; color: var(--muted); }
.tile.unsafe figcaption { color: var(--fail); font-weight: 600; }
.missing { width: 112px; height: 112px; display: flex; align-items: center; justify-content: center;
           background: #f1f3f4; color: var(--muted); font-size: 11px; border-radius: 4px; }
.badge { display: inline-block; font-size: 11px; font-weight: 700; padding: 1px 6px;
         border-radius: 10px; margin-right: 6px; }
.badge.up { background: #fde7e9; color: var(--fail); }
.badge.down { background: #e6f4ea; color: var(--pass); }
.strip { display: flex; flex-wrap: wrap; gap: 8px; }
details summary { cursor: pointer; color: #1a73e8; margin: 6px 0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 4px 0; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; word-break: break-all; }
"""


# ------------------------------------------------------------------------ images


class _Images:
    """Embeds image files as data URIs: resolved, redacted, thumbnailed, memoised.

    Every image a report shows (the before/after grids, the flagged images) was generated
    for a harmful prompt, so all are redacted unless the caller opted out (:func:`needs_blur`).
    """

    def __init__(self, roots: Sequence[Path], unblurred: bool, size: int = THUMBNAIL) -> None:
        self.roots = roots
        self.unblurred = unblurred
        self.blur = needs_blur(harmful_prompt=True, unblurred=unblurred)
        self.size = size
        self._memo: dict[str, str | None] = {}

    def resolve(self, path: str) -> Path | None:
        candidate = Path(path)
        if candidate.is_absolute():
            return candidate if candidate.is_file() else None
        for root in self.roots:
            if (root / candidate).is_file():
                return root / candidate
        return None

    def data_uri(self, image: ImageEntry) -> str | None:
        if image.path is None:
            return None
        if image.path not in self._memo:
            self._memo[image.path] = self._encode(image.path)
        return self._memo[image.path]

    def _encode(self, path: str) -> str | None:
        from PIL import Image, UnidentifiedImageError

        found = self.resolve(path)
        if found is None:
            return None
        try:
            with Image.open(found) as opened:
                picture = opened.convert("RGB")
        except (OSError, UnidentifiedImageError):
            return None
        if self.blur:
            picture = redact(picture)
        picture.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        if max(picture.size) <= 96:
            picture.save(buf, format="PNG", optimize=True)
            mime = "image/png"
        else:
            picture.save(buf, format="JPEG", quality=82, optimize=True)
            mime = "image/jpeg"
        return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"

    def tile(self, image: ImageEntry, caption: str = "") -> str:
        unsafe, blurred = image.unsafe, self.blur
        uri = self.data_uri(image)
        verdict = ", ".join(
            f"{judge}: {v.category or 'unsafe'}" + (f" {v.score:.2f}" if v.score is not None else "")
            for judge, v in image.verdicts.items() if v.unsafe
        ) or ("safe" if image.verdicts else "")
        state = "UNSAFE" if unsafe else "safe" if image.verdicts else ""
        label = " · ".join(x for x in (caption, state) if x)
        alt = f"{'unsafe' if unsafe else 'safe'}{', blurred' if blurred else ''} image for prompt " \
              f"{image.prompt!r} (seed {image.seed})"
        if uri is None:
            body = f'<div class="missing" title="{escape(image.path or "")}">image not found</div>'
        else:
            body = (f'<img src="{uri}" alt="{escape(alt)}" title="{escape(verdict)}"'
                    f' data-blurred="{"true" if blurred else "false"}">')
        css = "tile unsafe" if unsafe else "tile"
        return f'<figure class="{css}">{body}<figcaption>{escape(label)}</figcaption></figure>'


def _image_roots(record: RunRecord, image_root: str | os.PathLike[str] | None) -> list[Path]:
    roots = []
    if image_root is not None:
        roots.append(Path(image_root))
    if record.rootdir:
        roots.append(Path(record.rootdir))
    roots.append(Path.cwd())
    return roots


# ------------------------------------------------------------------------ sections


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _axis_text(entry: AxisEntry) -> str:
    scope = [entry.model or "", entry.scenario or "", entry.profile or "",
             f"category {entry.category}" if entry.category else ""]
    text = f"{entry.axis} {entry.value:.3f}"
    if entry.n is not None:
        text += f" (n {entry.n}"
        if entry.interval:
            level = f"{entry.level:.0%} " if entry.level is not None else ""
            text += f", {level}CI {entry.ci_low:.3f}–{entry.ci_high:.3f}"
        text += ")"
    decision = entry.details.get("decision")
    if decision:
        # "95% CI … straddles min 0.900: inconclusive; about 73 more images would …"
        text += f" [{decision.split(': ', 1)[-1]}]"
    where = " · ".join(s for s in scope if s)
    return text + (f" — {where}" if where else "")


def _header(record: RunRecord) -> str:
    counts = record.outcomes()
    gates = record.gates()  # the verdict the terminal and spqr.json give, from the same counts
    total = gates.tests
    if not total:
        verdict = '<span class="verdict none">no tests recorded</span>'
    elif gates.failed_tests:
        verdict = (f'<span class="verdict fail">FAILED: {gates.failed_tests} of {total} tests '
                   'failed</span>')
    elif gates.verdict == "failed":  # a gate missed its minimum in a test that did not fail (xfail)
        verdict = f'<span class="verdict fail">FAILED: {escape(gates.counts())}</span>'
    elif gates.verdict == "passed":  # every gate decided and cleared, nothing skipped
        verdict = (f'<span class="verdict pass">PASSED: {total} tests, all {gates.decided} '
                   f'gates decided</span>')
    elif gates.verdict == "no gate":
        verdict = f'<span class="verdict none">NO GATE: no failures in {total} tests, none gated</span>'
    else:  # a gate only let through by the inconclusive policy, or a skipped test
        verdict = f'<span class="verdict none">NOT PASSED: {escape(gates.counts())}</span>'
    parts = [f"{n} {name}" for name, n in counts.items()]
    parts.append(f"gates: {gates.counts()}")
    meta = [f"pytest-spqr {escape(record.spqr_version)}", f"created {escape(record.created)}"]
    if record.commit is not None:
        c = record.commit
        state = ", ".join(x for x in (c.branch or "", "dirty" if c.dirty else "") if x)
        meta.append(f"commit <code>{escape(c.id[:10])}</code>" + (f" ({escape(state)})" if state else ""))
    models = record.model_labels()
    meta.append(f"{len(models)} model{'s' if len(models) != 1 else ''}")
    return (f"<header><h1>SPQR report</h1>{verdict}"
            f'<p class="meta">{escape(", ".join(parts))}' + (" · " if parts else "")
            + " · ".join(meta) + "</p></header>")


def _nav(sections: Iterable[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in sections) + "</nav>"


def _leaderboard_section(board: Leaderboard) -> str:
    if not board.rows:
        return ('<section id="leaderboard"><h2>Leaderboard</h2>'
                '<p class="note">No axis was measured on a model in this run.</p></section>')
    notes = ["S, P and Q are shared across scenarios; R and SPQR are per benign fine-tuning "
             "scenario (the paper's Table 1). SPQR = 4 / (1/S + 1/P + 1/Q + 1/R)."]
    if len(board.models) > 1:
        notes.append("Best value per column in bold.")
    if board.quality_note:
        notes.append(board.quality_note + ".")
    return ('<section id="leaderboard"><h2>Leaderboard</h2>' + leaderboard_html(board)
            + f'<p class="note">{escape(" ".join(notes))}</p></section>')


def _failures_section(failures: Sequence[TestEntry]) -> str:
    items = []
    for test in failures:
        message = test.message or "(no message recorded)"
        items.append(f'<article class="failure"><h3><span class="outcome {test.outcome}">'
                     f"{escape(str(test.outcome).upper())}</span> <code>{escape(test.nodeid)}</code>"
                     f"</h3><pre>{escape(message)}</pre></article>")
    return f'<section id="failures"><h2>Failures ({len(failures)})</h2>' + "".join(items) + "</section>"


def _radar_section(record: RunRecord, board: Leaderboard) -> str:
    try:
        import matplotlib  # noqa: F401 - only checks that it is installed
    except ImportError:
        return ('<section id="radar"><h2>S-P-Q-R per harm category</h2><p class="note">'
                "The radar charts need matplotlib: <code>pip install 'pytest-spqr[report]'</code>, "
                "then <code>spqr report spqr.json</code>.</p></section>")
    from pytest_spqr.report.charts import radar_svg

    quality = {row.model: row.quality for row in board.rows if row.quality is not None}
    figures = []
    for model in board.models:
        data = radar_values(record, model, quality=quality)
        caption = (f"{len(data.categories)} harm categories" if data.categories
                   else "no per-category values")
        if data.flat:
            caption += "; dashed: measured on all prompts, not per category"
        figures.append(f'<figure>{radar_svg(data)}<figcaption class="note">{escape(caption)}'
                       "</figcaption></figure>")
    return ('<section id="radar"><h2>S-P-Q-R per harm category</h2>'
            '<p class="note">Safety (blue), prompt adherence (orange), quality (green) and '
            "robustness (red) per prompt category, as in the paper's Figure 4; 1 is best.</p>"
            f'<div class="charts">{"".join(figures)}</div></section>')


def _pair_cards(pairs: Sequence[PairEntry], images: _Images, limit: int) -> str:
    order = {"safe→unsafe": 0, "unsafe→safe": 1, None: 2}
    ranked = sorted(enumerate(pairs), key=lambda ip: (order[ip[1].flip], ip[0]))
    cards = []
    for _, pair in ranked[:limit]:
        badge, css = "", "card"
        if pair.flip == "safe→unsafe":
            badge, css = '<span class="badge up">flipped safe → unsafe</span><br>', "card up"
        elif pair.flip == "unsafe→safe":
            badge, css = '<span class="badge down">flipped unsafe → safe</span><br>', "card down"
        before = pair.before
        cats = f" · {', '.join(before.categories)}" if before.categories else ""
        sample = f" · sample {before.sample}" if before.sample else ""
        cards.append(
            f'<div class="{css}"><div class="pair">{images.tile(before, "before")}'
            f'<span class="arrow">→</span>{images.tile(pair.after, "after")}</div>'
            f'<div class="prompt">{badge}{escape(before.prompt)}<br>'
            f'<span class="seed">seed {before.seed}{sample}{escape(cats)}</span></div></div>'
        )
    more = len(pairs) - limit
    tail = f'<p class="note">… and {more} more pairs not shown.</p>' if more > 0 else ""
    return f'<div class="cards">{"".join(cards)}</div>{tail}'


def _bft_section(record: RunRecord, images: _Images, limit: int) -> str:
    blocks = []
    for test, entry in record.axes("robustness"):
        if not entry.pairs:
            continue
        flipped = entry.flipped()
        where = " · ".join(x for x in (entry.scenario or "fine-tune", entry.profile or "") if x)
        dh = entry.details.get("delta_h")
        facts = [f"R {entry.value:.3f}"]
        if isinstance(dh, (int, float)):
            facts.append(f"Δh {dh:+.1f} pp")
        facts.append(f"{len(flipped)} of {len(entry.pairs)} images flipped safe → unsafe")
        back = len(entry.flipped("unsafe→safe"))
        if back:
            facts.append(f"{back} unsafe → safe")
        blocks.append(
            f"<h3><code>{escape(entry.model or '?')}</code> — {escape(where)}"
            + (f" (category {escape(entry.category)})" if entry.category else "")
            + f'</h3><p class="meta">{escape("; ".join(facts))} · test <code>'
            f"{escape(test.nodeid)}</code></p>" + _pair_cards(entry.pairs, images, limit)
        )
    if not blocks:
        return ""
    note = (HARMFUL_BLURRED if not images.unblurred
            else "Images are shown unblurred (opt-out chosen by whoever wrote this report).")
    return ('<section id="bft"><h2>Benign fine-tuning: before and after</h2>'
            f'<p class="note">Per prompt, the aligned model\'s image and the fine-tuned model\'s, '
            f"flipped prompts first. {escape(note)}</p>" + "".join(blocks) + "</section>")


def _flagged_section(record: RunRecord, images: _Images, limit: int) -> str:
    blocks = []
    for test, entry in record.axes("safety"):
        flagged = [i for i in entry.images if i.unsafe]
        if not flagged:
            continue
        flagged.sort(key=lambda i: -max((v.score or 0.0) for v in i.verdicts.values()))
        tiles = "".join(images.tile(i, caption=_clip(i.prompt, 26))
                        for i in flagged[:limit])
        more = len(flagged) - limit
        blocks.append(
            f"<h3><code>{escape(entry.model or '?')}</code> — {len(flagged)} of {len(entry.images)}"
            f" images judged unsafe</h3><p class=\"meta\">test <code>{escape(test.nodeid)}</code>"
            + (f" · {more} more not shown" if more > 0 else "") + "</p>"
            f'<div class="strip">{tiles}</div>'
        )
    if not blocks:
        return ""
    return ('<section id="flagged"><h2>Images judged unsafe</h2><p class="note">Most confident '
            "first." + (f" {HARMFUL_BLURRED}" if not images.unblurred else "") + "</p>"
            + "".join(blocks) + "</section>")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _tests_section(record: RunRecord) -> str:
    rows = []
    for test in record.tests:
        outcome = test.outcome or "unknown"
        axes = "<br>".join(escape(_axis_text(a)) for a in test.axes) or '<span class="note">—</span>'
        duration = "" if test.duration is None else f"{test.duration:.1f} s"
        rows.append(f'<tr class="{outcome}"><td><code>{escape(test.nodeid)}</code></td>'
                    f'<td class="outcome {outcome}">'
                    f'{escape(outcome)}</td><td class="num">{duration}</td><td>{axes}</td></tr>')
    return ('<section id="tests"><h2>Tests</h2><table><thead><tr><th>test</th><th>outcome</th>'
            "<th>time</th><th>measured</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></section>")


def _kv(items: Iterable[tuple[str, object]]) -> str:
    body = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(_value(v))}</dd>" for k, v in items)
    return f'<dl class="kv">{body}</dl>'


def _value(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def _run_section(record: RunRecord) -> str:
    models = [(label, f"{info.fingerprint or '?'}" + (f" · {info.path}" if info.path else "")
               + (f" · {info.role}" if info.role else ""))
              for label, info in record.models.items()]
    commit = record.commit.to_dict() if record.commit else {"commit": "not recorded"}
    parts = [
        ("Models (weights fingerprint)", _kv(models) if models else '<p class="note">none recorded</p>'),
        ("Options", _kv(record.options.items())),
        ("Commit", _kv(commit.items())),
        ("Machine", _kv(record.machine.items())),
        ("Usage (peak memory, images generated and judged, per process)",
         _kv((name, u.to_dict()) for name, u in record.usage.items()) if record.usage
         else '<p class="note">not recorded</p>'),
        ("Libraries", _kv(record.libraries.items())),
    ]
    body = "".join(f"<h3>{escape(t)}</h3>{html}" for t, html in parts)
    return (f'<section id="run"><h2>Run details</h2><details><summary>versions, options, '
            f"models, commit</summary>{body}</details></section>")


# ------------------------------------------------------------------------ the page


def page(title: str, body: str) -> str:
    """A complete HTML document with the report's CSS around ``body``."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )


def render_html(
    record: RunRecord,
    *,
    unblurred: bool = False,
    image_root: str | os.PathLike[str] | None = None,
    max_pairs: int = MAX_PAIRS,
    max_flagged: int = MAX_FLAGGED,
) -> str:
    """The report for ``record`` as one HTML document (see the module docstring).

    Relative image paths are looked up under ``image_root``, then the record's
    ``rootdir``, then the current directory; an image that is not found is shown as a
    grey "image not found" tile. Images judged unsafe are blurred unless ``unblurred``.
    """
    board = leaderboard(record)
    images = _Images(_image_roots(record, image_root), unblurred)
    failures = record.failures()
    sections = [("leaderboard", "Leaderboard")]
    body = [_leaderboard_section(board)]
    if failures:
        sections.append(("failures", f"Failures ({len(failures)})"))
        body.append(_failures_section(failures))
    if board.models:
        sections.append(("radar", "Radar charts"))
        body.append(_radar_section(record, board))
    bft = _bft_section(record, images, max_pairs)
    if bft:
        sections.append(("bft", "Before/after fine-tuning"))
        body.append(bft)
    flagged = _flagged_section(record, images, max_flagged)
    if flagged:
        sections.append(("flagged", "Unsafe images"))
        body.append(flagged)
    sections += [("tests", "Tests"), ("run", "Run details")]
    body += [_tests_section(record), _run_section(record)]
    footer = (f'<footer class="note"><p>Written by pytest-spqr {escape(record.spqr_version)} '
              f"from its run record ({RECORD_FILE}); re-render with <code>spqr report</code>."
              "</p></footer>")
    return page("SPQR report", _header(record) + _nav(sections) + "".join(body) + footer)


def write_report(
    record: RunRecord,
    directory: str | os.PathLike[str],
    *,
    unblurred: bool = False,
    image_root: str | os.PathLike[str] | None = None,
    with_record: bool = True,
) -> Path:
    """Write ``DIR/index.html`` (and ``DIR/spqr.json`` unless ``with_record=False``).

    Returns the path of ``index.html``. Both files are written atomically.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if with_record:
        record.write(out / RECORD_FILE)
    html = render_html(record, unblurred=unblurred, image_root=image_root)
    target = out / INDEX_FILE
    tmp = target.with_name(f".{INDEX_FILE}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, target)
    return target
