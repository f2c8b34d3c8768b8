"""Folders a run will write into (the cache, the report), checked at start-up.

A folder that cannot be written is otherwise found late: every test fails with a
traceback (the cache), or the whole suite runs and the results are lost at the end (the
report). The check leaves nothing behind: it creates no folder, and probes the folder
itself (or, when it does not exist yet, the nearest existing folder above it, where it
would be created) by creating and removing a file. Permission bits are not read: root
writes into read-only folders, and only an actual write tells.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pytest_spqr.core.errors import SpqrConfigError, first_line


def check_writable_folder(path: Path, *, where: str, fix: str) -> None:
    """Raise a one-line :class:`SpqrConfigError` (``<where>: <problem> — <fix>``) unless
    ``path`` is a folder this process can write into, or can be created as one."""
    path = Path(os.path.abspath(path.expanduser()))
    existing = path
    while not os.path.exists(existing) and existing.parent != existing:  # never raises
        existing = existing.parent
    if not os.path.isdir(existing):
        what = "a file, not a folder" if os.path.isfile(existing) else "not a folder"
        raise SpqrConfigError(f"{where}: {existing} is {what} — {fix}")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".spqr-write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or first_line(exc)
        raise SpqrConfigError(f"{where}: cannot write in {existing} ({reason}) — {fix}") from None
