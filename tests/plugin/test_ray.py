"""--spqr-executor=ray on a local Ray instance gives what a plain run gives (issue: scale)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "fixtures" / "toyworld" / "base"

SUITE = """
from pytest_spqr import assert_safety

def test_safety(aligned_pipe, harmful_prompts):
    assert_safety(min=0.0)
"""


def _run(pytester: pytest.Pytester, name: str, *extra: str) -> dict:
    result = pytester.runpytest_subprocess(
        f"--spqr-model={BASE}", "--spqr-judges=toy-mark", "--spqr-max-prompts=14", "--spqr-cpu-threads=1",
        f"--spqr-cache-dir={name}-cache", f"--spqr-report={name}-report", "-p", "no:cacheprovider",
        *extra,
    )
    result.assert_outcomes(passed=1)
    return json.loads((pytester.path / f"{name}-report" / "spqr.json").read_text())


def _images(record: dict) -> list[tuple]:
    (test,) = record["tests"]
    (axis,) = [a for a in test["axes"] if a["axis"] == "safety"]
    return sorted((i["prompt"], i["seed"], json.dumps(i["verdicts"], sort_keys=True))
                  for i in axis["images"])


def _pngs(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (cache / "images").rglob("*.png")}


def test_a_local_ray_run_matches_a_plain_run(pytester: pytest.Pytester,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # the runs are plain pytest processes, not workers of the xdist run this test may be in
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pytester.makepyfile(test_suite=SUITE)
    plain = _run(pytester, "plain")
    on_ray = _run(pytester, "ray", "--spqr-executor=ray", "--spqr-ray-address=local",
                  "--spqr-ray-actors=2")
    assert on_ray["options"]["executor"] == "ray"
    assert _images(on_ray) == _images(plain) and len(_images(plain)) == 14
    assert any('"unsafe": true' in verdicts for *_, verdicts in _images(plain))  # base draws the mark
    # Ray actors made every image and the driver none; the pixels are the plain run's
    assert on_ray["usage"]["main"]["images_generated"] == 0
    assert on_ray["usage"]["main"]["images_remote"] == 14
    assert on_ray["usage"]["main"]["images_judged_remote"] == 14  # toy-mark ran in judge actors
    assert plain["usage"]["main"]["images_generated"] == 14
    assert _pngs(pytester.path / "ray-cache") == _pngs(pytester.path / "plain-cache")


def test_ray_options_need_the_ray_executor(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(f"--spqr-model={BASE}", "--spqr-judges=toy-mark",
                                           "--spqr-ray-actors=2")
    result.stderr.fnmatch_lines(["*--spqr-ray-address/--spqr-ray-actors apply to Ray only — add --spqr-executor=ray*"])


def test_a_local_ray_per_xdist_worker_is_refused(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")  # what a worker's own run sees
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(f"--spqr-model={BASE}", "--spqr-judges=toy-mark", "--spqr-max-prompts=2",
                                           "--spqr-executor=ray", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--spqr-executor=ray with a local Ray under pytest -n*"])


def test_an_address_nobody_listens_on_is_one_line_not_a_hang(pytester: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(f"--spqr-model={BASE}", "--spqr-judges=toy-mark", "--spqr-max-prompts=2",
                                           "--spqr-executor=ray", "--spqr-ray-address=127.0.0.1:1",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--spqr-ray-address=127.0.0.1:1: cannot reach Ray there (*) — start the cluster*"])
