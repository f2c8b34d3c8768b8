"""``spqr cache info|prune`` on a cache written by the real store: whole entries, never half."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pytest_spqr.models import cache_admin
from pytest_spqr.models.store import Store
from pytest_spqr.report.cli import main


def _image(store: Store, model: str, key: str, label: str) -> None:
    blob = store.path(f"images/{model}", key, "png")
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(b"\x89PNG fake")
    store.put_json(f"images/{model}", key, {"model": label, "blob": blob.name})


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / ".spqr"
    store = Store(root)
    for i in range(3):
        _image(store, "aaaa1111", f"{i:064x}", "models/aligned")
    _image(store, "bbbb2222", "f" * 64, "models/aligned + bft lite/general")
    store.put_json("verdicts/judge1", "e" * 64, {"unsafe": False})
    ft = root / "finetunes" / "k1"
    ft.mkdir(parents=True)
    (ft / "pytorch_lora_weights.safetensors").write_bytes(b"w" * 100)
    (ft / "bft.json").write_text(json.dumps({"aligned_fingerprint": "aaaa1111ffff",
                                             "profile": {"name": "lite"}, "dataset": {"name": "general"}}))
    return root


def test_info_counts_entries_per_kind_and_model(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "info", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "images           4 entries" in out and "verdicts         1 entries" in out
    assert "finetunes        1 entries" in out
    assert "aaaa1111" in out and "models/aligned" in out and "lite on general" in out


def test_prune_by_model_deletes_whole_entries_and_keeps_the_rest(cache: Path) -> None:
    assert main(["cache", "prune", "--cache-dir", str(cache), "--model", "aaaa1111", "--dry-run"]) == 0
    assert len(list((cache / "images" / "aaaa1111").rglob("*.png"))) == 3
    assert main(["cache", "prune", "--cache-dir", str(cache), "--model", "aaaa1111"]) == 0
    assert not list((cache / "images" / "aaaa1111").rglob("*.*"))  # no sidecar, no blob left
    assert not (cache / "finetunes" / "k1").exists()  # its fine-tune too
    store = Store(cache)
    assert store.get_json("images/bbbb2222", "f" * 64) is not None  # other models untouched
    assert store.get_json("verdicts/judge1", "e" * 64) == {"unsafe": False}


def test_prune_by_age(cache: Path) -> None:
    old = time.time() - 40 * 86400
    for path in (cache / "verdicts").rglob("*.json"):
        os.utime(path, (old, old))
    count, _ = cache_admin.prune(cache, older_than_days=30)
    assert count == 1 and not list((cache / "verdicts").rglob("*.json"))
    assert len(list(cache_admin.entries(cache, ("images",)))) == 4


def test_prune_needs_a_criterion_and_info_needs_a_cache(tmp_path: Path, cache: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "prune", "--cache-dir", str(cache)]) == 2
    assert "say what to prune: --older-than DAYS and/or --model FINGERPRINT" in capsys.readouterr().err
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "none")]) == 2
    assert "no cache here — pass --cache-dir" in capsys.readouterr().err
