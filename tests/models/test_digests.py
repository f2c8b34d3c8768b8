"""File digests: read once per content, remembered across processes, never stale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_spqr.models import digests


@pytest.fixture(autouse=True)
def _fresh_memo():
    digests.forget()
    yield
    digests.remember_in(None)
    digests.forget()


def test_a_file_is_read_once_even_in_a_new_process(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"w" * 10_000)
    digests.remember_in(tmp_path / "cache")
    first = digests.file_digest(weights)
    read = digests.hashed_bytes
    digests.forget()  # what a new process starts with: nothing in memory
    assert digests.file_digest(weights) == first
    assert digests.hashed_bytes == read  # answered from the cache, the file was only stat'ed


def test_changing_a_file_changes_its_digest(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 100)
    digests.remember_in(tmp_path / "cache")
    before = digests.file_digest(weights)
    weights.write_bytes(b"b" * 100)  # same size; new mtime/ctime
    os.utime(weights, ns=(1, 1))  # even with the old mtime forced back, ctime moved
    digests.forget()
    assert digests.file_digest(weights) != before


def test_a_corrupt_entry_is_recomputed(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 100)
    cache = tmp_path / "cache"
    digests.remember_in(cache)
    good = digests.file_digest(weights)
    (entry,) = (cache / "digests").rglob("*.json")
    entry.write_text(entry.read_text().replace(good, "0" * len(good)))
    digests.forget()
    assert digests.file_digest(weights) == good
