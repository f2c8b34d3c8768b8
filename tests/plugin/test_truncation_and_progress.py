"""Nothing happens silently (issue 13, items 21 and 23): prompts the text encoder cuts are
counted in the header and the run record; long work shows progress, or a line per phase."""

from __future__ import annotations

import io
import json

import pytest

from tests.plugin.conftest import JUDGE_CONFTEST

LONG = "a very long prompt about a quiet lake " * 12  # well over 77 tokens
PROMPTS = f"{LONG}\n{LONG} at night\na short prompt\n"


# --- item 21: prompts longer than the text encoder's window ---------------------------------


def test_cut_prompts_are_counted_in_the_header_and_the_record(
    pytester: pytest.Pytester, spqr_args: list[str]
) -> None:
    pytester.makefile(".txt", long=PROMPTS)
    pytester.makepyfile("def test_x(aligned_pipe):\n    pass\n")
    result = pytester.runpytest(*spqr_args, "--spqr-prompts=long.txt", "--spqr-report=rep")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "spqr: note: prompts longer than the text encoder's window are cut: 2 of 3 harmful "
        "prompts to 77 tokens (tokenizer; longest *), 0 of 7 benign (the pipeline ignores *",
    ])
    record = json.loads((pytester.path / "rep" / "spqr.json").read_text(encoding="utf-8"))
    cut = record["options"]["prompt_truncation"]
    assert {"tokenizer": "tokenizer", "max_tokens": 77, "prompt_set": "harmful", "cut": 2,
            "total": 3} == {k: v for k, v in cut[0].items() if k != "longest"}
    assert cut[0]["longest"] > 77
    assert cut[1]["prompt_set"] == "benign" and cut[1]["cut"] == 0


def test_prompts_are_counted_without_loading_the_pipeline(
    pytester: pytest.Pytester, spqr_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_spqr.models import evaluate

    monkeypatch.setattr(evaluate, "load_pipeline", lambda *a, **k: pytest.fail("pipeline loaded"))
    pytester.makefile(".txt", long=PROMPTS)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*spqr_args, "--spqr-prompts=long.txt")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*2 of 3 harmful prompts to 77 tokens*"])


def test_prompts_that_fit_add_no_note(pytester: pytest.Pytester, spqr_args: list[str]) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*spqr_args)
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*are cut*")


# --- item 23: progress on a terminal, a line per finished phase otherwise -------------------


def test_quiet_ci_logs_get_a_line_per_finished_phase(
    pytester: pytest.Pytester, spqr_args: list[str]
) -> None:
    pytester.makeconftest(JUDGE_CONFTEST)
    pytester.makepyfile(
        "from pytest_spqr import assert_safety\n"
        "def test_s(aligned_pipe):\n    assert_safety(min=0.0)\n"
    )
    result = pytester.runpytest(*spqr_args, "-q")  # stderr is not a terminal here
    result.assert_outcomes(passed=1)
    result.stderr.fnmatch_lines([
        "spqr: generating 7 images (*tiny-sd): done, 7 img in * s",
        "spqr: judging 7 images (parity): done, 7 img in * s",
    ])


SMOKE = (
    "[gates]\nrobustness = 0.8\n[statistics]\ninconclusive = \"warn\"\n"
    "[bft.budgets.smoke]\nbase = \"toy\"\nmax_steps = 3\nbatch_size = 2\nresolution = 32\n"
)


def test_a_quiet_fine_tune_reports_steps_loss_and_time(
    pytester: pytest.Pytester, spqr_args: list[str]
) -> None:
    pytester.makeconftest(JUDGE_CONFTEST)
    pytester.makefile(".toml", thresholds=SMOKE)
    pytester.makepyfile(
        "from pytest_spqr import assert_robustness\n"
        "def test_r(aligned_pipe, bft_profile, bft_scenario, harmful_prompts):\n"
        "    assert_robustness(min=0.0)\n"
    )
    result = pytester.runpytest(*spqr_args, "-q", "--spqr-max-prompts=3", "--spqr-bft-budget=smoke",
                                "--spqr-bft-profile=lite", "--spqr-bft-scenario=general")
    result.assert_outcomes(passed=1)
    result.stderr.fnmatch_lines(["spqr: fine-tuning lite/general: done, 3 steps in * s, loss *.* → *.*"])


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_even_quiet_runs_show_steps_loss_and_eta() -> None:
    from pytest_spqr.progress import PhaseProgress

    terminal = Terminal()
    progress = PhaseProgress(terminal, quiet=True, mininterval=0)  # draw every step
    with progress(4, "spqr: fine-tuning lite/general", unit="step") as advance:
        for step in range(4):
            advance(1, loss=0.5 - 0.1 * step)
    shown = terminal.getvalue()
    assert "spqr: fine-tuning lite/general" in shown and "4/4" in shown
    assert "loss=0.2" in shown and "<" in shown  # tqdm's elapsed<remaining
    assert "done" not in shown  # quiet on a terminal: the bar, no phase line


def test_off_a_terminal_there_is_no_bar_only_the_phase_line() -> None:
    from pytest_spqr.progress import PhaseProgress

    log = io.StringIO()
    with PhaseProgress(log, quiet=True)(2, "spqr: judging 2 images (x)") as advance:
        advance(2)
    assert log.getvalue().splitlines()[-1].startswith("spqr: judging 2 images (x): done, 2 img in ")
    assert "\r" not in log.getvalue()


def test_clip_vocab_and_merges_alone_count_like_tokenizer_json(tiny_sd, tmp_path) -> None:
    """SD 1.5's tokenizer folder has no tokenizer.json: rebuilt, it counts the same."""
    import shutil

    from pytest_spqr.models.truncation import _counter

    bare = tmp_path / "tokenizer"
    bare.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tiny_sd / "tokenizer" / name, bare / name)
    full, rebuilt = _counter(tiny_sd / "tokenizer"), _counter(bare)
    assert full is not None and rebuilt is not None
    for text in (LONG, "Hello, World! It's 42 — naïve café", "a  photo\tof   a DOG's toy"):
        assert rebuilt(text) == full(text)
