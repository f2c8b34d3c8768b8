"""What a run reads from its cache belongs to this run's judge settings, and can be
checked (issue 13, items 2, 12 and 22)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from pytest_spqr.models.store import Store

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "fixtures" / "toyworld" / "base"

SUITE = """
from pytest_spqr import assert_safety

def test_safety(aligned_pipe, harmful_prompts):
    m = assert_safety(min=0.0)
    print(f"UNSAFE={m.unsafe}/{m.n}")
"""


def _run(pytester: pytest.Pytester, *extra: str) -> pytest.RunResult:
    return pytester.runpytest(
        f"--spqr-model={BASE}", "--spqr-judges=toy-mark", "--spqr-max-prompts=4", "--spqr-cpu-threads=1",
        "--spqr-cache-dir=cache", "-p", "no:cacheprovider", "-s",
        "-W", "ignore::pytest.PytestAssertRewriteWarning", *extra,
    )


def _unsafe(result: pytest.RunResult) -> int:
    (line,) = [x for x in result.outlines if "UNSAFE=" in x]
    return int(line.split("UNSAFE=")[1].split("/")[0])


def test_a_judge_setting_changed_in_thresholds_toml_gets_fresh_verdicts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.path.joinpath("lenient.toml").write_text("[judges.toy-mark]\nthreshold = 0.3\n")
    pytester.path.joinpath("strict.toml").write_text("[judges.toy-mark]\nthreshold = 0.995\n")
    lenient = _run(pytester, "--spqr-thresholds=lenient.toml")
    lenient.assert_outcomes(passed=1)
    assert _unsafe(lenient) == 4  # the base model draws the mark (score ≈ 0.98) for all four
    strict = _run(pytester, "--spqr-thresholds=strict.toml")
    strict.assert_outcomes(passed=1)
    assert _unsafe(strict) == 0  # same images, judged again under the stricter setting


def _flip_cached_verdicts(cache: Path) -> int:
    """Rewrite every cached verdict as its opposite, with a valid checksum: a cache that
    was edited, or copied in from a machine whose judge behaved differently."""
    store = Store(cache)
    flipped = 0
    for path in (cache / "verdicts").rglob("*.json"):
        entry = json.loads(path.read_text())
        payload = entry["payload"]
        payload.update(unsafe=not payload["unsafe"], category=None if payload["unsafe"] else "mark")
        store.put_json(str(path.parent.parent.relative_to(cache)), entry["key"], payload)
        flipped += 1
    return flipped


def test_recheck_fails_in_one_line_when_a_cached_verdict_disagrees(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    first = _run(pytester)
    first.assert_outcomes(passed=1)
    assert _unsafe(first) == 4
    assert _flip_cached_verdicts(pytester.path / "cache") == 4
    # a killed run left a torn write behind, long ago
    torn = next((pytester.path / "cache" / "images").rglob("*.png"))
    leftover = torn.with_name(f".{torn.name}.k1ll3d.tmp")
    leftover.write_bytes(b"half")
    old = time.time() - 2 * 86400
    os.utime(leftover, (old, old))

    trusting = _run(pytester)  # the cache is trusted as it stands: what the README warns of
    assert _unsafe(trusting) == 0
    assert not leftover.exists()  # cleaned by the next run

    flipped = pytester.path / "flipped-verdicts"
    shutil.copytree(pytester.path / "cache" / "verdicts", flipped)
    for amount in ("1", "1.0"):  # one per judge, or every cached verdict
        shutil.rmtree(pytester.path / "cache" / "verdicts")
        shutil.copytree(flipped, pytester.path / "cache" / "verdicts")
        checked = _run(pytester, f"--spqr-recheck={amount}")
        checked.assert_outcomes(failed=1)
        checked.stdout.fnmatch_lines([
            "*--spqr-recheck: * of * re-judged cached verdicts of judge 'toy-mark' disagree with "
            "a fresh judgement (first: image *: cached safe, now unsafe (mark)) — do not trust "
            "this cache*",
        ])


def test_recheck_passes_on_a_sound_cache_and_refuses_bad_amounts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    _run(pytester).assert_outcomes(passed=1)
    sound = _run(pytester, "--spqr-recheck=1.0")
    sound.assert_outcomes(passed=1)
    assert _unsafe(sound) == 4
    for bad in ("0", "-1", "1.5", "nan", "some"):
        result = _run(pytester, f"--spqr-recheck={bad}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--spqr-recheck*"])


DRIVER_ONLY_JUDGE = """
from pytest_spqr.toyworld.judge import MarkJudge

MarkJudge.version = "driver-only"  # this process's toy-mark differs from the Ray nodes'
"""


def test_ray_judge_actors_refuse_a_judge_that_differs_from_the_drivers(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(DRIVER_ONLY_JUDGE)
    result = pytester.runpytest_subprocess(
        f"--spqr-model={BASE}", "--spqr-judges=toy-mark", "--spqr-max-prompts=2",
        "--spqr-cpu-threads=1", "--spqr-cache-dir=cache", "-p", "no:cacheprovider",
        "--spqr-executor=ray", "--spqr-ray-address=local", "--spqr-ray-actors=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*judge 'toy-mark' on Ray node * is not the driver's*"
                                 "no verdict of that node was stored*"])
    assert not list((pytester.path / "cache" / "verdicts").rglob("*.json"))
