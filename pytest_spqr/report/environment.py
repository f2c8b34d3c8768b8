"""Facts about the environment that need a subprocess: the test suite's git commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pytest_spqr.core.record import CommitInfo


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def commit_info(path: str | os.PathLike[str]) -> CommitInfo | None:
    """The git commit checked out at ``path`` (id, branch, dirty, commit time), or None.

    None when git is missing, ``path`` is not in a work tree, or there is no commit yet.
    ``dirty`` is true when tracked files differ from the commit (untracked files are
    ignored: caches and reports live in the work tree).
    """
    cwd = Path(path)
    if not cwd.is_dir():
        cwd = cwd.parent
    commit = _git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd)
    if not commit:
        return None
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    when = _git(["show", "-s", "--format=%cI", "HEAD"], cwd)
    return CommitInfo(
        id=commit,
        branch=None if branch in (None, "HEAD") else branch,
        dirty=None if status is None else bool(status),
        time=when or None,
    )
