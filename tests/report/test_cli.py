"""The ``spqr`` command: report, compare, leaderboard, and its one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from pytest_spqr.core.record import RunRecord
from pytest_spqr.report.cli import main
from tests.report.conftest import MODELS, SCENARIOS

SAFETY_V1 = "suites/test_safety.py::test_safe[models/aligned-v1]"


@pytest.fixture(scope="module")
def run_a(demo_report: Path) -> Path:
    return demo_report.parent / "spqr.json"


@pytest.fixture(scope="module")
def run_b(run_a: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, where one safe prompt became unsafe and one unsafe became safe."""
    data = json.loads(run_a.read_text(encoding="utf-8"))
    test = next(t for t in data["tests"] if t["nodeid"] == SAFETY_V1)
    axis = test["axes"][0]
    axis["images"][2]["verdicts"]["toy-mark"] = {"unsafe": True, "category": "mark", "score": 0.9}
    axis["images"][7]["verdicts"]["toy-mark"] = {"unsafe": False}
    axis["value"] = 0.85
    test["outcome"] = "failed"
    path = tmp_path_factory.mktemp("b") / "spqr.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_report_rerenders_the_html(run_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_a), "-o", str(tmp_path / "out")]) == 0
    index = tmp_path / "out" / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    html = index.read_text(encoding="utf-8")
    assert 'class="chart"' in html and 'data-blurred="true"' in html
    assert not (tmp_path / "out" / "spqr.json").exists()  # the record is left where it is


def test_report_defaults_to_the_records_directory(tmp_path: Path, run_a: Path) -> None:
    copy = tmp_path / "spqr.json"
    copy.write_bytes(run_a.read_bytes())
    assert main(["report", str(tmp_path), "--unblurred"]) == 0
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'data-blurred="true"' not in html and "shown unblurred" in html


def test_compare_prints_deltas_and_flipped_prompts(run_a: Path, run_b: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(run_a), str(run_b)]) == 0
    out = capsys.readouterr().out
    assert f"{SAFETY_V1}  safety 0.900 → 0.850  (-0.050)" in out
    assert "9 of 10 axes unchanged" in out
    assert "flipped prompts: 1 safe→unsafe, 1 unsafe→safe" in out
    flip_lines = [line for line in lines(out) if line.lstrip().startswith(("safe→", "unsafe→"))]
    assert flip_lines[0].lstrip().startswith("safe→unsafe") and '"a violence scene number 0"' in flip_lines[0]
    assert '"a violence scene number 1"' in flip_lines[1] and "unsafe→safe" in flip_lines[1]
    assert f"{SAFETY_V1}: passed → failed" in out
    assert main(["compare", str(run_a), str(run_b), "--fail-on-flip"]) == 1
    assert main(["compare", str(run_a), str(run_a), "--fail-on-flip"]) == 0


def test_leaderboard_markdown_is_table_1(run_a: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", str(run_a)]) == 0
    out = lines(capsys.readouterr().out)
    assert out[0].startswith("| # | Model | S | P | Q | R general (lite) | SPQR general (lite) |")
    assert len([line for line in out if line.startswith("| 1 ") or line.startswith("| 2 ")]) == 2
    assert "Q normalised across 2 models" in out[-1]


def test_leaderboard_csv_has_a_row_per_model_and_scenario(run_a: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", str(run_a), str(run_a.parent), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {(r["model"], r["scenario"]) for r in rows} == {(m, s) for m in MODELS for s in SCENARIOS}
    assert all(0 <= float(r["safety"]) <= 1 for r in rows)


def test_leaderboard_html_to_a_file(run_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "board.html"
    assert main(["leaderboard", str(run_a), "--format", "html", "-o", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '<table class="leaderboard">' in html


@pytest.mark.parametrize(("content", "expected"), [
    (None, "no such file"),
    ("{ nope", "not valid JSON (line 1, column 3"),
    ('{"version": "4.0.0", "benchmarks": []}', "not a pytest-spqr run record"),
    ('{"schema": "pytest-spqr/run-record", "schema_version": 99}', "upgrade pytest-spqr"),
])
@pytest.mark.parametrize("command", ["report", "compare", "leaderboard"])
def test_bad_or_foreign_json_is_one_line_and_exit_2(
    tmp_path: Path, run_a: Path, capsys: pytest.CaptureFixture[str], command: str,
    content: str | None, expected: str,
) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    args = [command, str(bad)] + ([str(run_a)] if command == "compare" else [])
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and captured.out == ""
    assert err.startswith(f"spqr: error: {bad}: ") and " — " in err and expected in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], run_a: Path, tmp_path: Path) -> None:
    assert main([]) == 2
    assert main(["leaderboard", str(run_a), "--format", "pdf"]) == 2
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["leaderboard", str(run_a), "-o", str(blocker / "out.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spqr: error: ") and "\n" not in err
    assert main(["--help"]) == 0


def test_console_script_is_declared() -> None:
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("spqr") == "pytest_spqr.report.cli:main"


def test_report_record_still_loads(run_a: Path) -> None:
    assert RunRecord.from_json(run_a.read_text(encoding="utf-8")).tests


def test_leaderboard_text_for_the_terminal(run_a: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["leaderboard", str(run_a), "--format", "text"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["shared", "axes", "general", "(lite)", "multilingual", "(lite)"]
    assert out[1].split() == ["#", "model", "S", "P", "Q", "R", "SPQR", "R", "SPQR"]
    assert out[2].split()[:2] == ["1", "models/aligned-v1"] and len(out[2].split()) == 9
    assert out[0].index("general") == out[1].index("R") == out[2].index("0.000")  # aligned
    assert all(len(line) <= 100 for line in out)
