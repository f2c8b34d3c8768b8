"""The ``spqr`` command: work with run records after (or without) a pytest run.

::

    spqr report RUN.json [-o DIR] [--unblurred]      re-render DIR/index.html
    spqr compare A.json B.json [--fail-on-flip]      per-axis deltas and flipped prompts
    spqr leaderboard RUN.json... [--format md|csv|html|text] [-o FILE]
    spqr cache info [--cache-dir DIR]                 entries and bytes per kind and model
    spqr cache prune [--older-than DAYS] [--model FP] [--kind K] [--leftovers] [--dry-run]

``RUN.json`` may also be a report directory holding ``spqr.json``. A bad or foreign file
is one line on stderr (``spqr: error: <file>: <problem> — <fix>``) and exit status 2,
like a usage error. ``spqr compare --fail-on-flip`` exits 1 when a prompt flipped
safe → unsafe.

New commands go in :data:`COMMANDS`: a name, a function adding the sub-parser's arguments, and a function
running it that returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.record import RECORD_FILE, leaderboard, load_record

EXIT_OK, EXIT_FLIPPED, EXIT_USAGE = 0, 1, 2


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("record", metavar="RUN.json", help="a run record, or a report directory")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="where to write index.html (default: the record's directory)")
    p.add_argument("--unblurred", action="store_true",
                   help="show harmful-prompt images without blurring (default: all blurred, "
                   "whatever the judges said)")
    p.add_argument("--image-root", metavar="DIR",
                   help="look up relative image paths here first (default: the record's rootdir,"
                   " then the current directory)")


def _run_report(args: argparse.Namespace) -> int:
    from pytest_spqr.report.html import write_report

    record = load_record(args.record)
    source = Path(args.record)
    out = Path(args.output) if args.output else (source if source.is_dir() else source.parent)
    target = write_report(record, out, unblurred=args.unblurred, image_root=args.image_root,
                          with_record=False)
    print(target)
    return EXIT_OK


def _add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A.json", help="the baseline run record")
    p.add_argument("b", metavar="B.json", help="the run record to compare with it")
    p.add_argument("--fail-on-flip", action="store_true",
                   help="exit with status 1 when any prompt flipped safe → unsafe")


def _run_compare(args: argparse.Namespace) -> int:
    from pytest_spqr.report.compare import compare_records, format_comparison

    result = compare_records(load_record(args.a), load_record(args.b))
    print("\n".join(format_comparison(result, args.a, args.b)))
    if args.fail_on_flip and result.flipped_to_unsafe():
        return EXIT_FLIPPED
    return EXIT_OK


def _add_leaderboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("records", metavar="RUN.json", nargs="+",
                   help="run records (several runs: the newest wins per model and scenario)")
    p.add_argument("--format", choices=("md", "csv", "html", "text"), default="md",
                   help="md: Table 1 as Markdown; csv: one row per model × scenario; "
                   "html: a self-contained page; text: plain columns (default: md)")
    p.add_argument("--quality", choices=("auto", "recorded", "models"), default="auto",
                   help="Q as recorded, or normalised over the models' FIDs (default: auto)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")


def _run_leaderboard(args: argparse.Namespace) -> int:
    from pytest_spqr.report import tables

    board = leaderboard(*(load_record(p) for p in args.records), quality=args.quality)
    if args.format == "md":
        text = tables.leaderboard_markdown(board)
    elif args.format == "csv":
        text = tables.leaderboard_csv(board)
    elif args.format == "text":
        text = "".join(line + "\n" for line in tables.leaderboard_lines(board))
    else:
        from html import escape

        from pytest_spqr.report.html import page

        note = f"<p>{escape(board.quality_note)}</p>" if board.quality_note else ""
        text = page("SPQR leaderboard", "<h1>SPQR leaderboard</h1>"
                    + tables.leaderboard_html(board) + note)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _add_cache(p: argparse.ArgumentParser) -> None:
    from pytest_spqr.models.cache_admin import KINDS

    p.add_argument("action", choices=("info", "prune"), help="info: what the cache holds; "
                   "prune: delete entries (whole entries, never half of one)")
    p.add_argument("--cache-dir", default=".spqr", metavar="DIR",
                   help="the cache (pytest's --spqr-cache-dir; default .spqr)")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="prune: entries last written more than DAYS days ago")
    p.add_argument("--model", metavar="FINGERPRINT",
                   help="prune: entries of models whose fingerprint starts with this (see info)")
    p.add_argument("--kind", choices=KINDS, action="append",
                   help="prune: only this kind (repeatable; default: all)")
    p.add_argument("--leftovers", action="store_true",
                   help="prune: only the leftovers of killed runs (temporary files and fine-tune "
                   "folders no live run owns; any prune also removes them)")
    p.add_argument("--dry-run", action="store_true", help="prune: say what would go, delete nothing")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _run_cache(args: argparse.Namespace) -> int:
    import time

    from pytest_spqr.models import cache_admin

    root = Path(args.cache_dir)
    try:
        if args.action == "info":
            summary = cache_admin.summarize(root)
            print(f"cache {root}")
            for kind, (n, size) in summary.totals().items():
                print(f"  {kind:<10} {n:>7} entries  {_size(size):>9}")
            for g in summary.groups:
                if g.kind in ("images", "finetunes"):
                    age = (time.time() - g.newest) / 86400
                    shown = ", ".join(sorted(x for x in g.labels if x))
                    label = f"  {shown[:90]}" if shown else ""
                    print(f"    {g.kind:<10} {g.group[:16]:<16} {g.entries:>6}  {_size(g.bytes):>9}  "
                          f"newest {age:.1f} d ago{label}")
            left = cache_admin.leftovers(root, removable=False)
            if left:
                removable = len(cache_admin.leftovers(root))
                print(f"  leftovers  {len(left):>7} files/folders  "
                      f"{_size(cache_admin.leftover_bytes(left)):>9}  of killed runs ({removable} "
                      "removable now: spqr cache prune --leftovers)")
            return EXIT_OK
        return _prune(args, root)
    except (FileNotFoundError, ValueError) as exc:
        print(f"spqr: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _prune(args: argparse.Namespace, root: Path) -> int:
    from pytest_spqr.models import cache_admin

    verb = "would delete" if args.dry_run else "deleted"
    cache_admin.check_prune_selectors(args.older_than, args.model)
    cache_admin.check_is_cache(root)
    parts = []
    if args.older_than is not None or args.model is not None or not args.leftovers:
        kinds = tuple(args.kind) if args.kind else cache_admin.KINDS
        count, size = cache_admin.prune(root, older_than_days=args.older_than, group=args.model,
                                        kinds=kinds, dry_run=args.dry_run)
        parts.append(f"{count} entries ({_size(size)})")
    left = cache_admin.leftovers(root)
    size = cache_admin.leftover_bytes(left)
    if not args.dry_run:
        cache_admin.remove_leftovers(left)
    parts.append(f"{len(left)} leftovers of killed runs ({_size(size)})")
    print(f"{verb} {' and '.join(parts)} from {root}")
    return EXIT_OK


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None],
                          Callable[[argparse.Namespace], int]]] = {
    "report": ("re-render the HTML report of a run record", _add_report, _run_report),
    "compare": ("per-axis deltas and flipped prompts between two run records",
                _add_compare, _run_compare),
    "leaderboard": ("the leaderboard of one or more run records (Table 1 layout)",
                    _add_leaderboard, _run_leaderboard),
    "cache": ("inspect or prune the image, verdict and fine-tune cache", _add_cache, _run_cache),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spqr",
        description=f"Work with pytest-spqr run records ({RECORD_FILE}, written by "
        "`pytest --spqr-report DIR`).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add, _) in COMMANDS.items():
        add(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``spqr``; returns the exit status (0 ok, 1 flipped with --fail-on-flip, 2 error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command][2](args)
    except SpqrConfigError as exc:
        print(f"spqr: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = exc.filename or "output"
        print(f"spqr: error: {where}: {exc.strerror} — check the path and permissions",
              file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
