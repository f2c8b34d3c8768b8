"""``spqr cache`` never deletes what is not its own, refuses selectors that select
everything, and cleans the leftovers of killed runs (issue 13, items 13, 21, 22)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from filelock import FileLock

from pytest_spqr.models import cache_admin
from pytest_spqr.models.store import MARKER, Store
from pytest_spqr.report.cli import main

DAY = 86400


def _cache(root: Path) -> Store:
    store = Store(root)
    store.put_blob("images/aaaa1111", "a" * 64, "png", b"\x89PNG one", {"model": "m"})
    store.put_json("verdicts/judge1", "e" * 64, {"unsafe": False})
    return store


def _age(path: Path, days: float) -> None:
    old = time.time() - days * DAY
    os.utime(path, (old, old))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_cache_written_by_the_store_carries_the_marker(tmp_path: Path) -> None:
    _cache(tmp_path / ".spqr")
    assert (tmp_path / ".spqr" / MARKER).is_file()
    assert cache_admin.is_spqr_cache(tmp_path / ".spqr")


def test_prune_refuses_a_folder_that_is_not_a_spqr_cache(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # a photo library that happens to have an images/ folder, pointed at by mistake
    photos = tmp_path / "photos"
    (photos / "images" / "holiday").mkdir(parents=True)
    (photos / "images" / "holiday" / "beach.json").write_text("{}")
    (photos / "images" / "holiday" / "beach.png").write_bytes(b"png")
    (photos / "README.md").write_text("my photos")
    before = _files(photos)
    assert main(["cache", "prune", "--cache-dir", str(photos), "--older-than", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not a pytest-spqr cache" in err and "README.md" in err
    assert _files(photos) == before


def test_prune_refuses_an_empty_model_selector(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / ".spqr"
    _cache(root)
    before = _files(root)
    for empty in ("", "  "):
        assert main(["cache", "prune", "--cache-dir", str(root), "--model", empty]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--model" in err and "empty" in err
    assert _files(root) == before


@pytest.mark.parametrize("age", ["-5", "nan", "inf", "-inf"])
def test_prune_refuses_negative_or_nan_ages(tmp_path: Path, age: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / ".spqr"
    _cache(root)
    before = _files(root)
    assert main(["cache", "prune", "--cache-dir", str(root), f"--older-than={age}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--older-than" in err
    assert _files(root) == before


def test_prune_still_accepts_a_cache_from_before_the_marker(tmp_path: Path) -> None:
    root = tmp_path / ".spqr"
    _cache(root)
    (root / MARKER).unlink()  # written by an older pytest-spqr: only the cache's own folders
    assert main(["cache", "prune", "--cache-dir", str(root), "--older-than", "0"]) == 0
    assert not list((root / "images").rglob("*.png"))


def _leftovers(root: Path) -> dict[str, Path]:
    """A torn write and a fine-tune folder left by killed runs, a fresh temporary file a
    live writer may own, and a fine-tune folder whose writer still holds its lock."""
    old_tmp = root / "images" / "aaaa1111" / "aa" / f".{'b' * 64}.png.x1y2.tmp"
    old_tmp.write_bytes(b"half a png")
    _age(old_tmp, 2)
    young_tmp = root / "verdicts" / "judge1" / "ee" / f".{'c' * 64}.json.z9.tmp"
    young_tmp.write_bytes(b"{")
    dead = root / "finetunes" / ".k1.abc123"
    dead.mkdir(parents=True)
    (dead / "pytorch_lora_weights.safetensors").write_bytes(b"w" * 100)
    live = root / "finetunes" / ".k2.def456"
    live.mkdir()
    (live / "unet_changed.safetensors").write_bytes(b"w" * 10)
    return {"old_tmp": old_tmp, "young_tmp": young_tmp, "dead": dead, "live": live}


def test_info_shows_leftovers_of_killed_runs(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / ".spqr"
    _cache(root)
    _leftovers(root)
    assert main(["cache", "info", "--cache-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "leftovers" in out and "4 files/folders" in out
    assert "images           1 entries" in out  # leftovers are not entries


def test_prune_removes_only_leftovers_no_live_writer_can_own(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / ".spqr"
    store = _cache(root)
    left = _leftovers(root)
    with FileLock(str(root / "finetunes" / ".k2.lock")):  # k2's trainer is still running
        assert main(["cache", "prune", "--cache-dir", str(root), "--leftovers"]) == 0
    out = capsys.readouterr().out
    assert "2 leftovers of killed runs" in out
    assert not left["old_tmp"].exists() and not left["dead"].exists()
    assert left["young_tmp"].exists() and left["live"].exists()
    assert store.get_blob("images/aaaa1111", "a" * 64, "png") is not None  # entries untouched
    assert store.get_json("verdicts/judge1", "e" * 64) == {"unsafe": False}


def test_leftover_cleaning_is_what_the_next_run_calls(tmp_path: Path) -> None:
    root = tmp_path / ".spqr"
    _cache(root)
    left = _leftovers(root)
    removed = cache_admin.clean_leftovers(root)
    assert sorted(p.name for p in removed) == sorted(
        [left["old_tmp"].name, left["dead"].name, left["live"].name])  # no lock held here
    assert left["young_tmp"].exists()
