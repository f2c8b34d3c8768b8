"""A gate file that names no judge is refused at start-up, naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.settings import resolve_settings


def test_a_gate_file_with_an_empty_judge_list_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text("[judges]\nuse = []\n", encoding="utf-8")
    with pytest.raises(SpqrConfigError) as refused:
        resolve_settings({"thresholds": str(path)}, tmp_path)
    assert str(refused.value).startswith(f"{path}: [judges] use = [] names no judge — ")
