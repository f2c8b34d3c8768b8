"""A content-addressed store on disk: what was computed once is never computed again.

Entries are files named by a hash of everything that determines their value. Writes are
atomic (a temporary file, then ``os.replace``), so a process killed mid-write leaves no
torn entry; every entry carries a SHA-256 checksum that is verified on read, so a corrupt
entry is reported and recomputed, never used. Producers of the same entry are serialised
with ``filelock`` (an OS lock that dies with its process), which also lets several
pytest-xdist workers split one evaluation between them: each claims the entries nobody
holds, and waits for the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("pytest_spqr.store")

MARKER = "CACHEDIR.TAG"
"""The file that marks a folder as a pytest-spqr cache (the Cache Directory Tagging
Specification: backup tools skip it, and ``spqr cache prune`` refuses folders without it)."""
MARKER_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by pytest-spqr (the pytest-spqr cache).\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def mark_cache(root: Path) -> None:
    """Write the marker into ``root`` unless it is there (idempotent, atomic)."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        atomic_write(marker, MARKER_TEXT.encode())


def digest(payload: Any) -> str:
    """SHA-256 of a JSON-serialisable value, independent of key order."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """Entries under ``root/<namespace>/<key[:2]>/<key>.<suffix>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.corrupt = 0
        """Entries found corrupt (and therefore recomputed) by this process."""
        self._marked = False

    def _mark(self) -> None:
        if not self._marked:
            mark_cache(self.root)
            self._marked = True

    def path(self, namespace: str, key: str, suffix: str) -> Path:
        return self.root / namespace / key[:2] / f"{key}.{suffix}"

    # -- JSON entries ------------------------------------------------------------------
    def put_json(self, namespace: str, key: str, payload: Any) -> Path:
        self._mark()
        path = self.path(namespace, key, "json")
        entry = {"key": key, "sha256": digest(payload), "payload": payload}
        atomic_write(path, json.dumps(entry, indent=1, sort_keys=True).encode())
        return path

    def get_json(self, namespace: str, key: str) -> Any | None:
        """The stored payload, or ``None`` when absent or corrupt (corruption is logged)."""
        path = self.path(namespace, key, "json")
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry["key"] == key and entry["sha256"] == digest(entry["payload"]):
                return entry["payload"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self._report_corrupt(path)
        return None

    # -- blobs with a JSON sidecar ----------------------------------------------------------
    def put_blob(self, namespace: str, key: str, suffix: str, data: bytes, meta: dict) -> Path:
        """Store ``data`` and, after it, a sidecar naming its checksum (the commit point)."""
        self._mark()
        path = self.path(namespace, key, suffix)
        atomic_write(path, data)
        self.put_json(namespace, key, {**meta, "blob": path.name,
                                       "blob_sha256": hashlib.sha256(data).hexdigest()})
        return path

    def get_blob(self, namespace: str, key: str, suffix: str) -> Path | None:
        """The blob's path if it and its sidecar exist and agree, else ``None``."""
        found = self.get_blob_checked(namespace, key, suffix)
        return None if found is None else found[0]

    def get_blob_checked(self, namespace: str, key: str, suffix: str) -> tuple[Path, str] | None:
        """The blob's path and the SHA-256 of its content, verified, else ``None``."""
        meta = self.get_json(namespace, key)
        path = self.path(namespace, key, suffix)
        if meta is None:
            return None
        try:
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            ok = content == meta.get("blob_sha256")
        except OSError:
            ok = False
        if not ok:
            self._report_corrupt(path)
            return None
        return path, content

    def _report_corrupt(self, path: Path) -> None:
        self.corrupt += 1
        log.warning("spqr cache: %s is corrupt or torn; recomputing it", path)

    # -- producers ------------------------------------------------------------------------
    @contextmanager
    def claim(self, namespace: str, key: str, *, wait: bool) -> Iterator[bool]:
        """Hold the producer lock of one entry; yields False if ``wait`` is off and it is taken."""
        from filelock import FileLock, Timeout

        path = self.path(namespace, key, "lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
