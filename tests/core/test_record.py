"""The run record: exact round trips, strict reading, merging parts, builders, leaderboard."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.intervals import safety_interval
from pytest_spqr.core.measurements import (
    AdherenceMeasurement,
    Finding,
    JudgedImage,
    RobustnessMeasurement,
    SafetyMeasurement,
    ScoredImage,
)
from pytest_spqr.core.record import (
    OUTCOMES,
    AxisEntry,
    CategoryValue,
    CommitInfo,
    ImageEntry,
    JudgeVerdict,
    ModelInfo,
    PairEntry,
    ProcessUsage,
    RunRecord,
    RunRecorder,
    TestEntry,
    entry_from_adherence,
    entry_from_axis,
    entry_from_quality,
    entry_from_robustness,
    entry_from_safety,
    leaderboard,
    load_record,
    merge_records,
    new_record,
    radar_values,
)
from pytest_spqr.core.scores import spqr_score

JUDGES = ("nudenet", "toy-mark")


def judged(i: int, category: str, *flags: str) -> JudgedImage:
    findings = tuple(Finding(j, "mark" if j == "toy-mark" else "EXPOSED", 0.6) for j in flags)
    return JudgedImage(f"prompt {i}", (category,), 100 + i, 0, f"img/{i}.png", findings)


def safety(model: str = "m1", unsafe: frozenset[int] = frozenset({0, 3}), n: int = 6,
           tag: str = "") -> SafetyMeasurement:
    images = tuple(judged(i, "sexual" if i % 2 else "violence", *(("toy-mark",) if i in unsafe else ()))
                   for i in range(n))
    return SafetyMeasurement(model + tag, "builtin:harmful", ("toy-mark",), images, "img")


def header(**kw: object) -> RunRecord:
    base = dict(options={"seed": 42, "judges": ["toy-mark"]}, rootdir="/repo",
                machine={"python": "3.11"}, libraries={"pytest-spqr": "0.1.0"},
                created="2025-01-31T12:00:00Z")
    base.update(kw)
    return new_record(**base)  # type: ignore[arg-type]  # base is a dict[str, object]


def full_record() -> RunRecord:
    recorder = RunRecorder(header(commit=CommitInfo("abc123", "main", True, "2025-01-30T10:00:00Z")))
    recorder.add_model("m1", "f" * 16, path="/models/m1", role="aligned")
    before = safety()
    after = safety(unsafe=frozenset({0, 1, 2, 3}), tag=" + bft")
    recorder.add_axis("t.py::test_s", entry_from_safety(before, interval=safety_interval(2, 6)))
    recorder.add_axis("t.py::test_r", entry_from_robustness(
        RobustnessMeasurement(before, after, "fine-tune=lite on general", adherence_before=0.3,
                              adherence_after=0.31), scenario="general", profile="lite"))
    adherence = AdherenceMeasurement("m1", "builtin:benign", "clip", tuple(
        ScoredImage(f"benign {k}", 7 + k, 0, f"b/{k}.png", 0.25 + k / 100) for k in range(3)), "b")
    recorder.add_axis("t.py::test_p", entry_from_adherence(adherence))
    recorder.add_axis("t.py::test_q", entry_from_quality(0.8, 42.5, 64, model="m1",
                                                         fid_min=10.0, fid_max=250.0))
    recorder.set_outcome("t.py::test_s", "passed", duration=1.25)
    recorder.set_outcome("t.py::test_r", "failed", duration=3.0,
                         message="AssertionError: robustness 0.000 < min 0.800\n  flipped …")
    recorder.set_outcome("t.py::test_p", "passed")
    recorder.set_outcome("t.py::test_q", "skipped", message="no FID reference")
    return recorder.record()


# ------------------------------------------------------------------------ round trip


def test_round_trip_is_exact(tmp_path: Path) -> None:
    record = full_record()
    text = record.to_json()
    again = RunRecord.from_json(text)
    assert again == record
    assert again.to_json() == text
    path = record.write(tmp_path / "out" / "spqr.json")
    assert load_record(path) == record
    assert load_record(tmp_path / "out") == record  # a report directory works too
    data = json.loads(text)
    assert data["schema"] == "pytest-spqr/run-record" and data["schema_version"] == 1


def test_record_carries_what_the_issue_asks_for() -> None:
    data = json.loads(full_record().to_json())
    assert {"spqr_version", "created", "machine", "libraries", "commit", "options", "models"} <= set(data)
    assert data["models"]["m1"]["fingerprint"] == "f" * 16
    tests = {t["nodeid"]: t for t in data["tests"]}
    s = tests["t.py::test_s"]["axes"][0]
    assert s["axis"] == "safety" and s["n"] == 6 and s["level"] == 0.95
    assert 0 <= s["ci_low"] < s["value"] < s["ci_high"] <= 1
    assert s["by_category"] == {"sexual": {"value": 1 - 1 / 3, "n": 3}, "violence": {"value": 1 - 1 / 3, "n": 3}}
    first = s["images"][0]
    assert first == {"prompt": "prompt 0", "seed": 100, "categories": ["violence"],
                     "path": "img/0.png",
                     "verdicts": {"toy-mark": {"unsafe": True, "category": "mark", "score": 0.6}}}
    r = tests["t.py::test_r"]["axes"][0]
    assert r["scenario"] == "general" and r["profile"] == "lite"
    assert r["flipped"] == ["prompt 1", "prompt 2"]
    assert r["pairs"][1]["before"]["verdicts"]["toy-mark"] == {"unsafe": False}
    assert r["details"]["delta_h"] == pytest.approx(100 * 2 / 6)
    q = tests["t.py::test_q"]["axes"][0]
    assert q["details"] == {"fid": 42.5, "fid_max": 250.0, "fid_min": 10.0}
    assert tests["t.py::test_r"]["message"].startswith("AssertionError: robustness")


def test_one_image_per_line_so_record_diffs_read_per_image() -> None:
    lines = full_record().to_json().splitlines()
    image_lines = [line for line in lines if line.lstrip().startswith('{"prompt": "prompt 3"')]
    assert len(image_lines) == 1
    assert any(line.lstrip().startswith('{"before": {"prompt": "prompt 1"') for line in lines)


def test_verdict_per_judge_lists_judges_that_said_safe() -> None:
    image = JudgedImage("p", ("sexual",), 1, 0, "x.png", (Finding("nudenet", "EXPOSED", 0.7),))
    m = SafetyMeasurement("m", "set", JUDGES, (image,), "img")
    verdicts = entry_from_safety(m).images[0].verdicts
    assert verdicts == {"nudenet": JudgeVerdict(True, "EXPOSED", 0.7), "toy-mark": JudgeVerdict(False)}


def test_generic_axis_takes_intervals_and_categories() -> None:
    entry = entry_from_axis("score", 0.5, 10, model="m", scenario="general", interval=(0.4, 0.6),
                            by_category={"a": 0.5, "b": (0.25, 4), "c": CategoryValue(1.0, 2)},
                            category_intervals={"a": (0.1, 0.9)}, details={"note": ("x", 1)})
    assert entry.interval == (0.4, 0.6) and entry.level is None
    assert entry.by_category["a"] == CategoryValue(0.5, None, 0.1, 0.9)
    assert entry.by_category["b"] == CategoryValue(0.25, 4)
    again = RunRecord.from_json(RunRecord("0.1.0", "now", tests=(TestEntry("t", axes=(entry,)),)).to_json())
    assert again.tests[0].axes[0] == entry


def test_quality_without_bounds_is_recorded_as_fid() -> None:
    entry = entry_from_quality(None, 55.0, 32, model="m")
    assert (entry.axis, entry.value, entry.n) == ("fid", 55.0, 32)


@pytest.mark.parametrize("make", [
    lambda: AxisEntry("safety", math.nan),
    lambda: AxisEntry("safety", 0.5, ci_low=0.6, ci_high=0.4),
    lambda: AxisEntry("safety", 0.5, ci_low=0.4),
    # deliberately wrong: the refusal is tested
    lambda: AxisEntry("safety", True),  # type: ignore[arg-type]
    lambda: TestEntry("t", outcome="exploded"),
    lambda: AxisEntry("x", 1.0, details={"bad": object()}),
    lambda: PairEntry(ImageEntry("a", 1), ImageEntry("b", 1)),
])
def test_constructors_reject_bad_values(make) -> None:
    with pytest.raises(ValueError):
        make()


# ------------------------------------------------------------------------ strict reading


def good() -> dict:
    return json.loads(full_record().to_json())


S, R = 3, 2  # tests are sorted by nodeid: test_p, test_q, test_r, test_s


def mutate(fn) -> str:
    data = good()
    fn(data)
    return json.dumps(data)


BAD = [
    ("{ not json", "not valid JSON (line 1, column 3"),
    ("[1, 2]", "not a pytest-spqr run record (got a list"),
    ('{"benchmarks": []}', 'not a pytest-spqr run record (no "schema" key'),
    ('{"schema": "pytest-benchmark"}', 'not a pytest-spqr run record ("schema" is "pytest-benchmark"'),
    (mutate(lambda d: d.update(schema_version=2)), "schema version 2 is newer than this pytest-spqr reads (1) — upgrade pytest-spqr"),
    (mutate(lambda d: d.update(schema_version="1")), 'schema_version: expected an integer, got "1"'),
    (mutate(lambda d: d.update(test=[])), "unknown key 'test' (did you mean 'tests'?) — rename it to 'tests'"),
    (mutate(lambda d: d.update(zzz=1)), "unknown key 'zzz' — remove it, or re-create it with `pytest --spqr-report DIR`"),
    (mutate(lambda d: d.pop("tests")), "missing key 'tests'"),
    (mutate(lambda d: d["tests"][S]["axes"][0].update(value="high")), 'tests[3].axes[0].value: expected a number, got "high"'),
    (mutate(lambda d: d["tests"][S]["axes"][0].update(vaule=1)), "tests[3].axes[0]: unknown key 'vaule' (did you mean 'value'?)"),
    (mutate(lambda d: d["tests"][0].update(outcome="exploded")), "tests[0].outcome: unknown outcome 'exploded'"),
    (mutate(lambda d: d["tests"][S]["axes"][0]["images"][0].update(seed=True)), "tests[3].axes[0].images[0].seed: expected an integer, got true"),
    (mutate(lambda d: d["tests"][S]["axes"][0]["images"][0]["verdicts"]["toy-mark"].update(unsafe="yes")),
     "verdicts['toy-mark'].unsafe: expected true or false"),
    (mutate(lambda d: d["tests"][S]["axes"][0].update(ci_low=0.9, ci_high=0.1)), "tests[3].axes[0]: ci_low 0.9 > ci_high 0.1"),
    (mutate(lambda d: d["machine"].update(cpu_count=2)), "machine['cpu_count']: expected a string, got 2"),
    (mutate(lambda d: d["tests"][S]["axes"][0].update(value=float("nan"))), "NaN is not a number JSON allows"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e[:30] for _, e in BAD])
def test_bad_json_is_one_line_naming_file_problem_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "run.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpqrConfigError) as info:
        load_record(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert " — " in message
    assert expected in message


def test_pair_with_mismatched_images_is_rejected() -> None:
    def swap(d: dict) -> None:
        d["tests"][R]["axes"][0]["pairs"][0]["after"]["seed"] = 999

    with pytest.raises(SpqrConfigError, match=r"tests\[2\]\.axes\[0\]\.pairs\[0\]: a pair's images"):
        RunRecord.from_json(mutate(swap), "run.json")


@pytest.mark.parametrize("kind", ["missing", "directory", "binary"])
def test_unreadable_files(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.json"
    if kind == "directory":
        path = tmp_path  # a directory without spqr.json
    elif kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(SpqrConfigError) as info:
        load_record(path)
    assert "\n" not in str(info.value)
    assert {"missing": "no such file", "directory": "spqr.json: no such file",
            "binary": "not UTF-8 text"}[kind] in str(info.value)


# ------------------------------------------------------------------------ merging parts

NODEIDS = st.sampled_from(["a.py::t1", "a.py::t2", "b.py::t[m1]"])
TEXT = st.sampled_from(["", "x", "boom", "ü"])
FLOATS = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
JSONS = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | FLOATS | TEXT,
                     lambda inner: st.lists(inner, max_size=2) | st.dictionaries(TEXT, inner, max_size=2),
                     max_leaves=4)


@st.composite
def images(draw: st.DrawFn) -> ImageEntry:
    verdicts = draw(st.dictionaries(st.sampled_from(JUDGES), st.builds(
        JudgeVerdict, st.booleans(), st.none() | TEXT, st.none() | FLOATS), max_size=2))
    return ImageEntry(draw(st.sampled_from(["p", "q"])), draw(st.integers(0, 3)), draw(st.integers(0, 1)),
                      tuple(draw(st.lists(TEXT, max_size=2))), draw(st.none() | TEXT), verdicts,
                      draw(st.none() | FLOATS))


@st.composite
def axes(draw: st.DrawFn) -> AxisEntry:
    ci = draw(st.none() | st.tuples(FLOATS, FLOATS).map(sorted))
    pairs = [PairEntry(i, ImageEntry(i.prompt, i.seed, i.sample, verdicts={"nudenet": JudgeVerdict(b)}))
             for i, b in draw(st.lists(st.tuples(images(), st.booleans()), max_size=2))]
    return entry_from_axis(
        draw(st.sampled_from(["safety", "robustness", "fid", "custom"])), draw(FLOATS),
        draw(st.none() | st.integers(0, 50)), model=draw(st.none() | st.sampled_from(["m1", "m2"])),
        scenario=draw(st.none() | st.just("general")), interval=ci,
        by_category=draw(st.dictionaries(TEXT, FLOATS, max_size=2)),
        details=draw(st.dictionaries(TEXT, JSONS, max_size=2)),
        images=draw(st.lists(images(), max_size=2)), pairs=pairs,
    )


def _records(axis_strategy: st.SearchStrategy[AxisEntry], options: st.SearchStrategy) -> st.SearchStrategy[RunRecord]:
    test = st.builds(TestEntry, NODEIDS, st.none() | st.sampled_from(OUTCOMES),
                     st.none() | st.sampled_from([0.5, 2.0]), st.none() | TEXT,
                     st.lists(axis_strategy, max_size=2).map(tuple))
    return st.builds(
        RunRecord, st.just("0.1.0"), st.sampled_from(["2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"]),
        st.none() | st.sampled_from(["/a", "/b"]),
        st.dictionaries(st.sampled_from(["python", "system"]), TEXT, max_size=2),
        st.dictionaries(st.sampled_from(["torch", "numpy"]), TEXT, max_size=1),
        st.none() | st.builds(CommitInfo, st.sampled_from(["abc", "def"]), st.none() | TEXT,
                              st.none() | st.booleans()),
        st.dictionaries(st.sampled_from(["seed", "judges"]), options, max_size=2),
        st.dictionaries(st.sampled_from(["m1", "m2"]), st.builds(
            ModelInfo, st.none() | st.sampled_from(["f1", "f2"])), max_size=2),
        st.lists(test, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from(["main", "gw0"]), st.builds(
            ProcessUsage, st.none() | st.sampled_from([512.0, 600.5]), st.none() | st.just(900.0),
            st.none() | st.sampled_from(["cpu", "cuda:0"]), st.integers(0, 5), st.integers(0, 3),
            st.integers(0, 5), st.integers(0, 2)), max_size=2),
    )


def records() -> st.SearchStrategy[RunRecord]:
    """Any record: arbitrary axis entries, images, details (slow to draw: round trips)."""
    return _records(axes(), JSONS)


AXIS_POOL = [
    entry_from_axis("safety", 0.5, 10, model="m1"),
    entry_from_axis("safety", 0.5, 10, model="m2", interval=(0.2, 0.7)),
    entry_from_axis("safety", -0.0, None, model="m1"),
    entry_from_axis("robustness", 0.1, 4, model="m1", scenario="general", pairs=[
        PairEntry(ImageEntry("p", 1), ImageEntry("p", 1, verdicts={"j": JudgeVerdict(True)}))]),
    entry_from_axis("fid", 33.0, 64, model="m2", details={"x": [1, {"y": None}]}),
    entry_from_axis("custom", 1.0, images=[ImageEntry("q", 2, score=0.3)]),
]


def pooled_records() -> st.SearchStrategy[RunRecord]:
    """Records whose axes come from a small pool: cheap to draw, so merges get many examples."""
    return _records(st.sampled_from(AXIS_POOL), st.sampled_from([1, "x", [1, 2], {"a": None}]))


@settings(max_examples=100, deadline=None)
@given(pooled_records(), pooled_records(), pooled_records())
def test_merge_is_associative_commutative_and_idempotent(a: RunRecord, b: RunRecord, c: RunRecord) -> None:
    left = merge_records(merge_records(a, b), c)
    right = merge_records(a, merge_records(b, c))
    assert left.to_json() == right.to_json()
    assert merge_records(a, b).to_json() == merge_records(b, a).to_json()
    assert merge_records(a, a).to_json() == merge_records(a).to_json()
    flat = {merge_records(*order).to_json() for order in itertools.permutations((a, b, c))}
    assert flat == {left.to_json()}


@settings(max_examples=40, deadline=None)
@given(records())
def test_any_record_round_trips(record: RunRecord) -> None:
    text = record.to_json()
    assert RunRecord.from_json(text) == record
    assert RunRecord.from_json(text).to_json() == text


@settings(max_examples=60, deadline=None)
@given(pooled_records(), pooled_records())
def test_merge_keeps_every_axis_and_the_worst_outcome(a: RunRecord, b: RunRecord) -> None:
    merged = merge_records(a, b)
    for part in (a, b):
        for test in part.tests:
            joined = merged.test(test.nodeid)
            assert joined is not None
            assert set(map(repr, test.axes)) <= set(map(repr, joined.axes))
            rank = lambda t: OUTCOMES.index(t.outcome) if t.outcome else -1
            assert rank(joined) >= rank(test)


def test_worker_parts_and_controller_outcomes_combine() -> None:
    """xdist: workers send parts with axes; the controller saw every report."""
    worker = RunRecorder(header())
    worker.add_axis("t.py::a", entry_from_safety(safety()))
    worker.set_outcome("t.py::a", "passed", duration=2.0)
    controller = RunRecorder(header(created="2025-01-31T11:59:00Z"))
    controller.set_outcome("t.py::a", "passed", duration=2.0)
    controller.set_outcome("t.py::a", "error", message="teardown failed")  # teardown report
    controller.set_outcome("t.py::b", "skipped")
    controller.add_part(worker.to_json(), where="worker gw0")
    record = controller.record()
    a = record.test("t.py::a")
    assert a is not None and a.outcome == "error" and a.message == "teardown failed"
    assert a.duration == 2.0 and [e.axis for e in a.axes] == ["safety"]
    assert [t.nodeid for t in record.tests] == ["t.py::a", "t.py::b"]
    assert record.created == "2025-01-31T11:59:00Z"
    with pytest.raises(SpqrConfigError, match="^worker gw1: not valid JSON"):
        controller.add_part("{oops", where="worker gw1")


def test_parts_of_different_versions_do_not_merge() -> None:
    with pytest.raises(ValueError, match="pytest-spqr 0.1.0 and 9.9"):
        merge_records(header(), RunRecord("9.9", "now"))


# ------------------------------------------------------------------------ leaderboard


def board_record() -> RunRecord:
    recorder = RunRecorder(header())
    for model, s_unsafe, q, r_unsafe in (("m1", {0}, 0.9, {0, 1}), ("m2", set(), 0.5, set())):
        before = safety(model, frozenset(s_unsafe), n=10)
        recorder.add_axis(f"s[{model}]", entry_from_safety(before))
        recorder.add_axis(f"s[{model}]", entry_from_safety(before.for_category("sexual")))
        recorder.add_axis(f"p[{model}]", entry_from_axis("prompt_adherence", 0.3, 8, model=model))
        recorder.add_axis(f"q[{model}]", entry_from_axis("quality", q, 64, model=model))
        for scenario in ("multilingual", "general"):
            after = safety(model, frozenset(r_unsafe if scenario == "general" else s_unsafe), n=10,
                           tag=" ft")
            recorder.add_axis(f"r[{model}-{scenario}]", entry_from_robustness(
                RobustnessMeasurement(before, after, "ft"), scenario=scenario, profile="lite"))
    return recorder.record()


def test_leaderboard_is_table_1() -> None:
    board = leaderboard(board_record())
    assert board.columns == (("general", "lite"), ("multilingual", "lite"))  # general first
    assert len(board.rows) == 4  # one per model × scenario
    m1 = board.row("m1", ("general", "lite"))
    assert m1 is not None
    assert (m1.safety, m1.prompt_adherence, m1.quality) == (0.9, 0.3, 0.9)  # whole set, not 'sexual'
    assert m1.robustness == pytest.approx(min(1, 2 / (1 + math.exp(10.0))))
    assert m1.score == pytest.approx(spqr_score(0.9, 0.3, 0.9, m1.robustness))
    assert board.models == ("m1", "m2") or board.models == ("m2", "m1")
    means = {m: sum(r.score for r in board.rows if r.model == m) / 2 for m in board.models}
    assert list(board.models) == sorted(means, key=lambda m: -means[m])


def test_leaderboard_normalises_fids_across_models_as_the_paper() -> None:
    recorder = RunRecorder(header())
    for model, fid in (("a", 20.0), ("b", 60.0), ("c", 40.0)):
        recorder.add_axis(f"q[{model}]", entry_from_quality(None, fid, 64, model=model))
    board = leaderboard(recorder.record())
    q = {r.model: r.quality for r in board.rows}
    assert q == pytest.approx({"a": 0.95, "b": 0.05, "c": 0.5})
    assert "normalised across 3 models" in board.quality_note
    one = leaderboard(RunRecorder(header()).record())
    assert one.rows == ()


def test_leaderboard_over_several_records_newest_wins() -> None:
    old = RunRecorder(header(created="2025-01-01T00:00:00Z"))
    old.add_axis("s", entry_from_axis("safety", 0.5, 10, model="m"))
    new = RunRecorder(header(created="2025-02-01T00:00:00Z"))
    new.add_axis("s", entry_from_axis("safety", 0.7, 5, model="m"))
    new.add_axis("s2", entry_from_axis("safety", 0.9, 5, model="other"))
    board = leaderboard(old.record(), new.record())
    assert {r.model: r.safety for r in board.rows} == {"m": 0.7, "other": 0.9}


def test_radar_values_per_category() -> None:
    record = board_record()
    data = radar_values(record, "m1")
    assert data.categories == ("sexual", "violence")
    assert data.scenario == "general (lite)"
    assert data.series["safety"] == (1.0, 0.8)  # image 0, a violence prompt, is unsafe
    assert data.series["prompt_adherence"] == (0.3, 0.3)  # measured on benign prompts
    assert set(data.flat) == {"prompt_adherence", "quality"}
    assert data.series["robustness"][1] == 1.0


def test_usage_of_a_process_merges_by_maximum_and_totals_sum_over_processes() -> None:
    early = ProcessUsage(peak_rss_mib=500.0, device="cpu", images_generated=10, images_judged=10)
    late = ProcessUsage(peak_rss_mib=580.0, device="cpu", images_generated=56, images_judged=60)
    other = ProcessUsage(peak_rss_mib=540.0, peak_gpu_mib=900.0, device="cuda:1",
                         images_generated=56, images_remote=8)
    recorder = RunRecorder(RunRecord("0.1.0", "2025-01-01T00:00:00Z"))
    recorder.add_usage("gw0", early)
    recorder.add_usage("gw0", late)  # the same worker reporting again: no double count
    recorder.add_usage("gw1", other)
    record = recorder.record()
    assert record.usage["gw0"] == late
    assert record.totals() == {"peak_rss_mib": 580.0, "peak_gpu_mib": 900.0, "images_generated": 112,
                               "images_remote": 8, "images_judged": 60, "images_judged_remote": 0,
                               "processes": 2}
    assert RunRecord.from_json(record.to_json()) == record


def test_usage_values_are_checked() -> None:
    with pytest.raises(ValueError, match="images_generated must be a non-negative integer"):
        ProcessUsage(images_generated=-1)
    with pytest.raises(ValueError, match="peak_rss_mib must be a non-negative number"):
        ProcessUsage(peak_rss_mib=float("nan"))
