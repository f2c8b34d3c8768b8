"""Review rD: the prompts' truncation is counted once per run, from the tokenizer files, however
many tests and header lines ask; a model load leaves transformers' progress bars as it found them."""

from __future__ import annotations

import pytest


def test_truncation_is_counted_once_per_run(
    pytester: pytest.Pytester, spqr_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_spqr.models import truncation

    calls: list[object] = []
    counter = truncation._counter

    def counting(sub):  # type: ignore[no-untyped-def]
        calls.append(sub)
        return counter(sub)

    monkeypatch.setattr(truncation, "_counter", counting)
    pytester.makefile(".txt", long="a very long prompt about a quiet lake " * 12 + "\nshort\n")
    pytester.makepyfile("def test_a(aligned_pipe):\n    pass\n\ndef test_b(aligned_pipe):\n    pass\n")
    result = pytester.runpytest_inprocess(*spqr_args, "--spqr-prompts=long.txt")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*1 of 2 harmful prompts to 77 tokens*"])
    assert len(calls) == 1, calls  # tiny-sd has one tokenizer: read once, for header and record


@pytest.mark.parametrize("bars_on", [True, False])
def test_loading_quietly_restores_the_bars(bars_on: bool) -> None:
    from transformers.utils import logging as transformers_logging

    from pytest_spqr.models.library_noise import loading_quietly

    was = transformers_logging.is_progress_bar_enabled()
    try:
        (transformers_logging.enable_progress_bar if bars_on
         else transformers_logging.disable_progress_bar)()
        with loading_quietly():
            assert not transformers_logging.is_progress_bar_enabled()
        assert transformers_logging.is_progress_bar_enabled() is bars_on
    finally:
        (transformers_logging.enable_progress_bar if was
         else transformers_logging.disable_progress_bar)()
