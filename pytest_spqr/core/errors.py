"""Errors a user can fix, each rendered as one line that names the file and the fix."""

from __future__ import annotations


class SpqrConfigError(ValueError):
    """Bad user input: a missing path, a malformed file, a wrong value.

    The message is a single line of the form ``<where>: <what is wrong> — <how to fix>``;
    the pytest plugin turns it into ``pytest.UsageError`` (no traceback).
    """


def first_line(exc: BaseException) -> str:
    """An exception's first line of text, or its type name: what a one-line error quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
