"""Content digests of files, each file read once per content — across runs, not just tests.

Fingerprinting a 5 GB model folder means reading 5 GB; a warm re-run should not. A file's
digest is remembered under its stat identity (resolved path, size, mtime, inode, ctime),
as git's index does: in this process, and, once :func:`remember_in` names a cache
directory, in that directory's content-addressed store, so the next run only stats the
file. Any write to a file changes its mtime/ctime and therefore its identity; an entry
that fails its checksum is recomputed (the store reports it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pytest_spqr.models.store import Store, digest

NAMESPACE = "digests"
ALGORITHM = "blake2b"

_memo: dict[tuple[str, int, int, int, int], str] = {}
_store: Store | None = None
hashed_bytes = 0
"""Bytes this process actually read to compute digests (for benchmarks and tests)."""


def remember_in(cache_dir: Path | None) -> None:
    """Persist digests under ``cache_dir`` (``None``: in this process only)."""
    global _store
    _store = None if cache_dir is None else Store(Path(cache_dir))


def _identity(path: Path) -> tuple[str, int, int, int, int]:
    stat = os.stat(path)
    return (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)


def file_digest(path: str | os.PathLike[str]) -> str:
    """The blake2b hex digest of a file's content, read at most once per content."""
    global hashed_bytes
    resolved = Path(path).resolve()
    identity = _identity(resolved)
    if identity in _memo:
        return _memo[identity]
    key = digest({"algorithm": ALGORITHM, "file": identity})
    stored = _store.get_json(NAMESPACE, key) if _store is not None else None
    if isinstance(stored, str):
        _memo[identity] = stored
        return stored
    value = hash_file(resolved)
    hashed_bytes += identity[1]
    if _identity(resolved) == identity:  # unchanged while read: safe to remember
        _memo[identity] = value
        if _store is not None:
            try:
                _store.put_json(NAMESPACE, key, value)
            except OSError:  # a read-only cache still gets the right answer
                pass
    return value


def forget() -> None:
    """Drop the in-process memo (tests; the persisted entries stay)."""
    _memo.clear()


def hash_file(path: str | os.PathLike[str], algorithm: str = ALGORITHM) -> str:
    """The file's hex digest, read in 1 MiB blocks (``hashlib.file_digest`` is Python ≥ 3.11)."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()
