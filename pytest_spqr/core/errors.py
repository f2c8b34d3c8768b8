"""Errors a user can fix, each rendered as one line that names the file and the fix."""

from __future__ import annotations


class SpqrConfigError(ValueError):
    """Bad user input: a missing path, a malformed file, a wrong value.

    The message is a single line of the form ``<where>: <what is wrong> — <how to fix>``;
    the pytest plugin turns it into ``pytest.UsageError`` (no traceback).
    """
