"""Long work is never silent: a progress bar on a terminal, a line per finished phase in logs.

Generation, judging and benign fine-tuning each run as a *phase* inside
:class:`PhaseProgress`, a progress factory (``progress(total, desc, unit)`` → a context
yielding ``advance(n, **postfix)``) handed to the evaluator, the judge panel and the trainer:

* on a terminal, a tqdm bar with the count, rate, ETA and what the work reports (a
  fine-tune's ``loss``), even under ``-q``: a fine-tune can take many minutes;
* when the phase is done, one line ``<desc>: done, N <unit> in T s[, loss a → b]`` — always
  when the stream is not a terminal (CI logs, where a bar is noise), and on a terminal
  unless ``-q``.

pytest-xdist workers' output reaches no terminal, so the session passes ``enabled=False``
there. The stream writes past pytest's capture (:class:`CaptureFreeStderr`), as
pytest-benchmark does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Advance = Callable[..., None]
"""``advance(n, **postfix)``: n more units done; postfix values (``loss=0.12``) are shown."""


class CaptureFreeStderr:
    """stderr for the bars and lines, written past pytest's output capture (pytest-benchmark
    does the same); ``capture_manager`` None: plain stderr."""

    def __init__(self, capture_manager: Any) -> None:
        self._capman = capture_manager

    def write(self, text: str) -> int:
        if self._capman is None:
            return sys.stderr.write(text)
        with self._capman.global_and_fixture_disabled():
            return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        if self._capman is None:
            return sys.stderr.isatty()
        with self._capman.global_and_fixture_disabled():
            return sys.stderr.isatty()


class PhaseProgress:
    """A progress factory that shows a bar on a terminal and logs each finished phase."""

    def __init__(self, stream: Any, *, quiet: bool = False, enabled: bool = True,
                 mininterval: float = 0.1) -> None:
        self.stream = stream
        self.quiet = quiet
        self.enabled = enabled
        self.mininterval = mininterval
        """Seconds between redraws of a bar (tqdm's default; 0 redraws on every advance)."""

    @contextmanager
    def __call__(self, total: int, desc: str, unit: str = "img") -> Iterator[Advance]:
        if not self.enabled:
            yield _ignore
            return
        from tqdm.auto import tqdm  # type: ignore[import-untyped]  # tqdm ships no type hints

        terminal = _isatty(self.stream)
        started = time.perf_counter()
        done = 0
        losses: list[float] = []
        with tqdm(total=total, desc=desc, unit=unit, file=self.stream, disable=not terminal,
                  leave=False, dynamic_ncols=True, mininterval=self.mininterval) as bar:

            def advance(n: int, **postfix: Any) -> None:
                nonlocal done
                done += n
                loss = postfix.get("loss")
                if isinstance(loss, (int, float)):
                    losses.append(float(loss))
                if postfix:
                    bar.set_postfix(postfix, refresh=False)
                bar.update(n)

            yield advance
        if terminal and self.quiet:
            return
        seconds = time.perf_counter() - started
        line = f"{desc}: done, {done} {unit}{'s' if unit != 'img' and done != 1 else ''} in {seconds:.1f} s"
        if losses:
            line += f", loss {losses[0]:.4f} → {losses[-1]:.4f}"
        self.stream.write(line + "\n")
        self.stream.flush()


def _ignore(n: int, **postfix: Any) -> None:
    del n, postfix


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
