"""Review rB: a judge's identity does not depend on when it is taken."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pytest_spqr.core.verdicts import Verdict
from pytest_spqr.models.judging import JudgePanel, judge_identity
from pytest_spqr.models.store import Store


class CountingJudge:
    """A conftest's judge with a setting and a public running count."""

    name = "counting"
    version = "1"

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.seen = 0

    def judge(self, images: list[Image.Image]) -> list[Verdict]:
        self.seen += len(images)
        return [Verdict(unsafe=False) for _ in images]


def test_a_running_count_is_not_part_of_the_identity_but_a_setting_is() -> None:
    judge = CountingJudge(threshold=0.5)
    before = judge_identity(judge)
    judge.judge([Image.new("RGB", (8, 8))] * 3)
    assert judge_identity(judge) == before
    assert judge_identity(CountingJudge(threshold=0.9)) != before


def test_a_later_panel_finds_the_verdicts_an_earlier_one_stored(tmp_path: Path) -> None:
    judge = CountingJudge()
    image = Image.effect_noise((64, 64), 64).convert("RGB")
    keyed = [("a" * 64, lambda: image)]
    JudgePanel([judge], store=Store(tmp_path)).judge(keyed)
    JudgePanel([judge], store=Store(tmp_path)).judge(keyed)  # e.g. another set of judges' panel
    assert judge.seen == 1  # the second panel read the verdict from disk


class KeywordJudge:
    name = "keywords"
    version = "1"

    def __init__(self, **settings: float) -> None:
        self.threshold = settings.get("threshold", 0.5)

    def judge(self, images: list[Image.Image]) -> list[Verdict]:
        return [Verdict(unsafe=False) for _ in images]


def test_a_judge_taking_keywords_is_identified_by_its_public_attributes() -> None:
    assert judge_identity(KeywordJudge(threshold=0.2)) != judge_identity(KeywordJudge(threshold=0.9))


# ------------------------------------------------------------------ cache leftovers and advice


def _killed_run_leftovers(root: Path) -> list[Path]:
    """A torn write older than any live writer and a fine-tune folder nobody's lock holds."""
    import os
    import time

    torn = root / "images" / "aa" / ".x.png.1.tmp"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"half")
    old = time.time() - 2 * 86400
    os.utime(torn, (old, old))
    dead = root / "finetunes" / ".k1.abc"
    dead.mkdir(parents=True)
    (dead / "w.safetensors").write_bytes(b"w" * 10)
    return [torn, dead]


def test_a_run_cleans_no_leftovers_in_a_folder_that_is_no_cache(tmp_path: Path) -> None:
    from pytest_spqr.models import cache_admin

    left = _killed_run_leftovers(tmp_path)  # a mistyped --spqr-cache-dir: someone's project
    (tmp_path / "notes.txt").write_text("mine")
    assert cache_admin.clean_leftovers(tmp_path) == []
    assert all(p.exists() for p in left)


def test_prune_dry_run_counts_leftovers_and_any_prune_removes_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_spqr.report.cli import main

    Store(tmp_path).put_json("verdicts/j", "e" * 64, {"unsafe": False})
    left = _killed_run_leftovers(tmp_path)
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--leftovers", "--dry-run"]) == 0
    assert "would delete 2 leftovers of killed runs" in capsys.readouterr().out
    assert all(p.exists() for p in left)
    assert main(["cache", "prune", "--cache-dir", str(tmp_path), "--older-than", "30"]) == 0
    assert "deleted 0 entries (0 B) and 2 leftovers" in capsys.readouterr().out
    assert not any(p.exists() for p in left)


def test_the_recheck_failure_names_a_prune_command_that_deletes_the_verdicts(tmp_path: Path) -> None:
    import shlex

    from pytest_spqr.models.recheck import recheck_failure
    from pytest_spqr.report.cli import main

    store = Store(tmp_path / "cache dir")
    store.put_json("verdicts/j", "e" * 64, {"unsafe": False})
    store.put_blob("images/m", "a" * 64, "png", b"png", {})
    message = recheck_failure("toy-mark", ["image e…: cached safe, now unsafe (mark)"], 1, store)
    command = message.split("(spqr ", 1)[1].split("), or", 1)[0]
    assert main(shlex.split(command)) == 0, command
    assert store.get_json("verdicts/j", "e" * 64) is None
    assert store.get_blob("images/m", "a" * 64, "png") is not None  # only the verdicts go
