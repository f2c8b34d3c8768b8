"""What the cache holds, and pruning it: the logic behind ``spqr cache info|prune``.

The cache directory (``--spqr-cache-dir``, default ``.spqr``) has one folder per kind:
``images/<model fingerprint>/`` (PNG + JSON sidecar per image), ``verdicts/<judge key>/``
(one JSON per image and judge), ``finetunes/<key>/`` (a benign fine-tune: weights +
``bft.json``), ``fid/`` (reference statistics), ``fid-results/`` (an FID per set of
generated images), ``clip-scores/<CLIP key>/`` (one CLIPScore per image and prompt) and
``digests/`` (content digests of model files by their stat identity). An *entry* is what one key names: an
image's sidecar and blob, a verdict file, a fine-tune folder. Pruning deletes whole
entries, sidecar first, so a concurrent reader sees an entry or nothing, never half of
one (a reader that finds a sidecar without its blob recomputes it: see
:mod:`pytest_spqr.models.store`).

A cache is recognised by its ``CACHEDIR.TAG`` (written by the store on its first entry); a
folder without one is pruned only if it holds nothing but the cache's own folders (a cache
written before the tag existed), so a mistyped ``--cache-dir`` never deletes foreign files.
*Leftovers* of killed runs — temporary files of interrupted atomic writes (``.*.tmp``) and
temporary fine-tune folders (``finetunes/.<key>.*``) — are not entries: they are removed by
the next run and by ``spqr cache prune`` once no live writer can own them (see
:func:`leftovers`). Standard library only, except :mod:`filelock` for the fine-tune locks.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pytest_spqr.models.store import MARKER

KINDS: tuple[str, ...] = (
    "images", "verdicts", "finetunes", "fid", "fid-results", "clip-scores", "digests"
)
MARKER_SIGNATURE = "created by pytest-spqr"
TMP_MIN_AGE_S = 3600.0
"""A temporary file of an atomic write older than this has no live writer: one write of
one entry (a PNG, a verdict, FID statistics) takes seconds."""


def is_spqr_cache(root: Path) -> bool:
    """Whether ``root`` carries the marker a pytest-spqr cache writes."""
    try:
        return MARKER_SIGNATURE in (root / MARKER).read_text("utf-8", errors="replace")
    except OSError:
        return False


def _foreign(root: Path) -> list[str]:
    """What in an existing ``root`` shows it is no pytest-spqr cache: for an unmarked folder,
    anything but the cache's own folders (empty for a marked one)."""
    if is_spqr_cache(root):
        return []
    return sorted(p.name for p in root.iterdir() if p.name not in KINDS or not p.is_dir())


def check_is_cache(root: Path) -> None:
    """Refuse (ValueError, one line) a folder that is neither marked nor made only of the
    cache's own folders: pruning it could delete someone else's files."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no cache here — pass --cache-dir (the pytest run's --spqr-cache-dir)")
    foreign = _foreign(root)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise ValueError(
            f"{root}: not a pytest-spqr cache (no {MARKER} written by pytest-spqr, and it "
            f"holds {shown}) — pass --cache-dir=the pytest run's --spqr-cache-dir"
        )


@dataclass
class Entry:
    """One cache entry: its kind, group (model or judge key), files and last write time."""

    kind: str
    group: str
    files: list[Path]
    mtime: float
    folder: Path | None = None
    """A fine-tune entry is a whole folder."""

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.exists())

    def delete(self) -> None:
        if self.folder is not None:
            # the record first: without bft.json the folder is no longer an entry
            (self.folder / "bft.json").unlink(missing_ok=True)
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        for f in sorted(self.files, key=lambda p: p.suffix != ".json"):  # sidecar first
            f.unlink(missing_ok=True)


@dataclass
class GroupSummary:
    """Entries of one kind and group: images of one model, verdicts of one judge setting,
    fine-tunes of one aligned model (by fingerprint)."""

    kind: str
    group: str
    labels: set[str] = field(default_factory=set)
    entries: int = 0
    bytes: int = 0
    newest: float = 0.0


@dataclass
class CacheSummary:
    root: Path
    groups: list[GroupSummary] = field(default_factory=list)

    def totals(self) -> dict[str, tuple[int, int]]:
        """Entries and bytes per kind."""
        out: dict[str, tuple[int, int]] = {}
        for g in self.groups:
            entries, size = out.get(g.kind, (0, 0))
            out[g.kind] = (entries + g.entries, size + g.bytes)
        return out


def _image_entries(folder: Path) -> Iterator[Entry]:
    for group in sorted(p for p in folder.iterdir() if p.is_dir()):
        for sidecar in sorted(group.rglob("*.json")):
            blobs = [p for p in sidecar.parent.glob(sidecar.stem + ".*") if p != sidecar]
            files = [sidecar, *blobs]
            yield Entry("images", group.name, files, max(f.stat().st_mtime for f in files))


def _file_entries(folder: Path, kind: str) -> Iterator[Entry]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix != ".lock":
            group = path.relative_to(folder).parts[0] if len(path.relative_to(folder).parts) > 1 else ""
            yield Entry(kind, group, [path], path.stat().st_mtime)


def _finetune_entries(folder: Path) -> Iterator[Entry]:
    for entry in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [p for p in entry.rglob("*") if p.is_file()]
        if not files:
            continue
        group = entry.name
        try:
            group = json.loads((entry / "bft.json").read_text("utf-8")).get("aligned_fingerprint", group)
        except (OSError, ValueError):
            pass
        yield Entry("finetunes", group, files, max(f.stat().st_mtime for f in files), folder=entry)


def entries(root: Path, kinds: tuple[str, ...] = KINDS) -> Iterator[Entry]:
    """Every entry under ``root`` of the given kinds."""
    for kind in kinds:
        folder = root / kind
        if not folder.is_dir():
            continue
        if kind == "images":
            yield from _image_entries(folder)
        elif kind == "finetunes":
            yield from _finetune_entries(folder)
        else:
            yield from _file_entries(folder, kind)


def _label(entry: Entry) -> str:
    if entry.kind == "images":
        try:
            payload = json.loads(entry.files[0].read_text("utf-8")).get("payload", {})
            return str(payload.get("model", ""))
        except (OSError, ValueError):
            return ""
    if entry.kind == "finetunes" and entry.folder is not None:
        try:
            record = json.loads((entry.folder / "bft.json").read_text("utf-8"))
            profile = record.get("profile", {})
            name = profile.get("name", "") if isinstance(profile, dict) else str(profile)
            return f"{name} on {record.get('dataset', {}).get('name', '')}".strip()
        except (OSError, ValueError, AttributeError):
            return ""
    return ""


def summarize(root: Path) -> CacheSummary:
    """Entries, bytes and newest write per kind and group (model, judge, fine-tune base)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no cache here — pass --cache-dir (the pytest run's --spqr-cache-dir)")
    summary = CacheSummary(root)
    index: dict[tuple[str, str], GroupSummary] = {}
    for entry in entries(root):
        g = index.get((entry.kind, entry.group))
        if g is None:
            g = index[(entry.kind, entry.group)] = GroupSummary(entry.kind, entry.group)
            summary.groups.append(g)
        if entry.kind == "finetunes" or not g.labels:  # an image group is one model
            g.labels.add(_label(entry))
        g.entries += 1
        g.bytes += entry.bytes
        g.newest = max(g.newest, entry.mtime)
    return summary


def check_prune_selectors(older_than_days: float | None, group: str | None) -> None:
    """One line for selectors that would select everything or nothing by accident."""
    if older_than_days is not None and not (math.isfinite(older_than_days) and older_than_days >= 0):
        raise ValueError(f"--older-than {older_than_days}: give a finite number of days ≥ 0, e.g. 30")
    if group is not None and not group.strip():
        raise ValueError("--model is empty: it would select every model — give a fingerprint "
                         "prefix from `spqr cache info`")


def prune(root: Path, *, older_than_days: float | None = None, group: str | None = None,
          kinds: tuple[str, ...] = KINDS, dry_run: bool = False) -> tuple[int, int]:
    """Delete entries last written more than ``older_than_days`` ago and/or of groups whose
    name starts with ``group`` (a model fingerprint prefix); returns (entries, bytes)."""
    check_prune_selectors(older_than_days, group)
    if older_than_days is None and group is None:
        raise ValueError("say what to prune: --older-than DAYS and/or --model FINGERPRINT")
    check_is_cache(root)
    group = group.strip() if group is not None else None
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    count = size = 0
    for entry in list(entries(root, kinds)):
        if cutoff is not None and entry.mtime >= cutoff:
            continue
        if group is not None and not entry.group.startswith(group):
            continue
        count += 1
        size += entry.bytes
        if not dry_run:
            entry.delete()
    return count, size


# ------------------------------------------------------------------ leftovers of killed runs


def _finetune_lock(folder: Path) -> Path:
    """``finetunes/.<key>.<random>`` (or ``.<key>.stale.<random>``) is made under
    ``finetunes/.<key>.lock`` by :class:`~pytest_spqr.models.finetune.FinetuneCache`."""
    key = folder.name[1:].split(".", 1)[0]
    return folder.parent / f".{key}.lock"


def _lock_is_free(lock: Path) -> bool:
    from filelock import FileLock, Timeout

    held = FileLock(str(lock))
    try:
        held.acquire(timeout=0)
    except Timeout:
        return False
    held.release()
    return True


def leftovers(root: Path, *, removable: bool = True) -> list[Path]:
    """Temporary files and fine-tune folders of runs that died mid-write. With
    ``removable``, only those no live writer can own: ``.*.tmp`` files older than
    :data:`TMP_MIN_AGE_S`, and temporary fine-tune folders whose key's lock is free (their
    trainer holds it while it writes); without, every one (what ``spqr cache info`` shows).
    None in a folder that is not a pytest-spqr cache (a mistyped ``--spqr-cache-dir``)."""
    now = time.time()
    found: list[Path] = []
    if not root.is_dir() or _foreign(root):
        return found
    for kind in KINDS:
        folder = root / kind
        if not folder.is_dir():
            continue
        if kind == "finetunes":
            for temp in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(".")):
                if not removable or _lock_is_free(_finetune_lock(temp)):
                    found.append(temp)
        for tmp in sorted(folder.rglob(".*.tmp")):
            try:
                old = now - tmp.stat().st_mtime > TMP_MIN_AGE_S
            except OSError:
                continue
            if tmp.is_file() and (old or not removable):
                found.append(tmp)
    return found


def leftover_bytes(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(f.stat().st_size for f in files if f.exists())
    return total


def remove_leftovers(found: list[Path]) -> None:
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def clean_leftovers(root: Path) -> list[Path]:
    """Remove :func:`leftovers`: what a run does on start (``spqr cache prune`` too)."""
    found = leftovers(root)
    remove_leftovers(found)
    return found
