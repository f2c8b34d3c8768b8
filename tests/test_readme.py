"""The README's promises that code can check: every option documented, both commands true."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_spqr.options import OPTIONS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_option_is_in_the_options_table() -> None:
    documented = set(re.findall(r"^\| `(--spqr-[a-z-]+)` \|", README, flags=re.M))
    assert documented == {f"--spqr-{o.name}" for o in OPTIONS}


def test_quick_start_commands_match_ci_and_the_bundled_model() -> None:
    repo = Path(__file__).resolve().parent.parent
    ci = (repo / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m pytest -n 2" in ci and "\npytest -n 2\n" in README
    model = re.search(r"&& pytest suites/ --spqr-model=(\S+)", README).group(1)
    assert (repo / model / "model_index.json").is_file()
    assert (repo / model / "spqr.toml").is_file()
