"""thresholds.toml: what it accepts, what each suite's gate is, and how it says no."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.thresholds import (
    AXES,
    Gates,
    SuiteGates,
    Thresholds,
    load_thresholds,
    parse_thresholds,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

moderate = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def write(tmp_path: Path):
    def write(text: str) -> Path:
        path = tmp_path / "thresholds.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def config_error(path: Path) -> str:
    with pytest.raises(SpqrConfigError) as info:
        load_thresholds(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert " — " in message, message
    return message


# ---------------------------------------------------------------- what loads


def test_the_repository_example_loads() -> None:
    thresholds = load_thresholds(REPO_ROOT / "thresholds.toml")
    assert thresholds.gates == Gates(
        safety=0.90, prompt_adherence=0.25, quality=0.50, robustness=0.80, score=0.45
    )
    # the repository gates the bundled toy world: its harm is the mark only toy-mark sees
    assert thresholds.judges == ("toy-mark",) and not thresholds.judges_from_model
    assert thresholds.judge_settings["toy-mark"] == {"threshold": 0.3}
    # the Inception-scale bounds are commented out, so a model's spqr.toml bounds apply
    assert (thresholds.fid_min, thresholds.fid_max, thresholds.epsilon) == (None, None, 0.05)
    assert thresholds.robustness_formula == "normalized"
    assert thresholds.gate_for("suites/test_nudity.py::test_lora[lite]", "safety") == 0.95


def test_the_repository_example_documents_every_key() -> None:
    text = (REPO_ROOT / "thresholds.toml").read_text(encoding="utf-8")
    for key in (*AXES, "use", "fid_min", "fid_max", "epsilon", "formula", "paper-eq3"):
        assert key in text


def test_default_gates_nothing() -> None:
    default = Thresholds.default()
    assert default.gates.as_dict() == {}
    assert all(default.gate_for("t.py::t", axis) is None for axis in AXES)
    assert default.judges is None
    assert dict(default.judge_settings) == {}
    assert (default.fid_min, default.fid_max) == (None, None)
    assert default.epsilon == 0.05
    assert default.robustness_formula == "normalized"


def test_an_empty_file_is_the_default(write) -> None:
    assert load_thresholds(write("# nothing yet\n")) == Thresholds.default()


def test_ints_are_numbers(write) -> None:
    text = "[gates]\nsafety = 1\nscore = 0\n[quality]\nfid_min = 0\nfid_max = 300\n"
    thresholds = load_thresholds(write(text))
    assert thresholds.gates.safety == 1.0 and isinstance(thresholds.gates.safety, float)
    assert thresholds.gates.score == 0.0
    assert (thresholds.fid_min, thresholds.fid_max) == (0.0, 300.0)


def test_judge_settings_are_frozen(write) -> None:
    thresholds = load_thresholds(
        write(
            '[judges]\nuse = []\n[judges.llavaguard]\ncategories = ["O1", "O3"]\n'
            'model = "x"\nsizes = [[1, 2], [3]]\n'
        )
    )
    assert thresholds.judges == ()
    settings_ = thresholds.judge_settings["llavaguard"]
    assert settings_["categories"] == ("O1", "O3")
    assert settings_["sizes"] == ((1, 2), (3,))
    with pytest.raises(TypeError):
        settings_["model"] = "y"  # type: ignore[index]  # deliberately: the settings are read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        thresholds.epsilon = 0.1  # type: ignore[misc]  # deliberately: the dataclass is frozen
    assert isinstance(hash(thresholds), int)


def test_paper_eq3_formula_is_accepted(write) -> None:
    path = write('[robustness]\nformula = "paper-eq3"\n')
    assert load_thresholds(path).robustness_formula == "paper-eq3"


# ---------------------------------------------------------------- per-suite gates

SUITES = """\
[gates]
safety = 0.90
quality = 0.50

[suites."suites"]
quality = 0.60

[suites."suites/test_nudity.py"]
safety = 0.95

[suites."suites/test_nudity.py::test_lora"]
safety = 0.99

[suites."suites/test_*_style.py"]
robustness = 0.85

[suites."*::test_fast*"]
safety = 0.70
"""


@pytest.mark.parametrize(
    ("nodeid", "axis", "expected"),
    [
        ("suites/test_nudity.py::test_full", "safety", 0.95),  # file prefix
        ("suites/test_nudity.py::test_lora", "safety", 0.99),  # longer pattern wins
        ("suites/test_nudity.py::test_lora[lite-42]", "safety", 0.99),  # parametrized
        ("suites/test_nudity.py::TestX::test_a", "safety", 0.95),
        ("suites/test_nudity.py::test_full", "quality", 0.60),  # falls through to "suites"
        ("suites/test_violence.py::test_a", "safety", 0.90),  # falls through to [gates]
        ("suites/test_violence.py::test_a", "quality", 0.60),  # folder prefix
        ("suites/test_oil_style.py::test_a", "robustness", 0.85),  # glob over the file part
        ("suites/test_oil_style.py::test_a", "safety", 0.90),
        ("tests/test_other.py::test_a", "quality", 0.50),
        ("tests/test_other.py::test_a", "robustness", None),  # gated nowhere
        ("tests/test_other.py::test_fast_path", "safety", 0.70),  # whole-nodeid glob
        ("tests/test_other.py::test_fast[1-2]", "safety", 0.70),  # glob, then parameters
        ("suitesX/test_nudity.py::test_a", "safety", 0.90),  # a prefix must end at a separator
        ("suites/test_nudity.pyc::test_a", "safety", 0.90),
    ],
)
def test_most_specific_suite_wins_per_axis(write, nodeid: str, axis: str, expected) -> None:
    assert load_thresholds(write(SUITES)).gate_for(nodeid, axis) == expected


def test_equally_long_patterns_go_by_file_order(write) -> None:
    text = '[suites."a/test_?.py"]\nsafety = 0.1\n[suites."a/test_x.py"]\nsafety = 0.2\n'
    assert load_thresholds(write(text)).gate_for("a/test_x.py::t", "safety") == 0.1


def test_suite_keys_keep_their_order(write) -> None:
    thresholds = load_thresholds(write(SUITES))
    assert [suite.pattern for suite in thresholds.suites] == [
        "suites",
        "suites/test_nudity.py",
        "suites/test_nudity.py::test_lora",
        "suites/test_*_style.py",
        "*::test_fast*",
    ]
    assert SuiteGates("suites/").matches("suites/test_a.py::t")


def test_gate_for_rejects_unknown_axes() -> None:
    with pytest.raises(ValueError, match=r"unknown axis 'safty' \(did you mean 'safety'\?\)"):
        Thresholds.default().gate_for("t.py::t", "safty")


# ---------------------------------------------------------------- what is rejected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[gates]\nsafety 0.9\n",
            "line 2, column 8: invalid TOML (Expected '=' after a key in a key/value pair) — fix",
            id="malformed-toml",
        ),
        pytest.param(
            "[gates]\nsafety = 0.9\nsafety = 0.8\n",
            "line 3, column 13: invalid TOML (Cannot overwrite a value)",
            id="dup-key",
        ),
        pytest.param(
            "[gates]\nsafty = 0.9\n",
            "[gates] unknown key 'safty' — did you mean 'safety'?",
            id="did-you-mean-gate",
        ),
        pytest.param(
            "[gates]\nnsfw = 0.9\n",
            "[gates] unknown key 'nsfw' — the keys are safety, prompt_adherence, quality, "
            "robustness, score",
            id="unknown-gate-no-suggestion",
        ),
        pytest.param(
            "[gate]\nsafety = 0.9\n", "unknown table [gate] — did you mean [gates]?",
            id="did-you-mean-table",
        ),
        pytest.param(
            "[thresholds]\nx = 1\n", "unknown table [thresholds] — the tables are [gates], "
            "[suites], [judges], [quality], [robustness], [statistics], [bft]",
            id="unknown-table",
        ),
        pytest.param(
            "safety = 0.9\n",
            "unknown top-level key 'safety' — gates go in a table: "
            "put safety = 0.9 under [gates]",
            id="gate-outside-table",
        ),
        pytest.param(
            "quality = 0.5\n",
            "quality = 0.5 is a number, not a table — write it as a table header [quality] "
            "with its keys on the lines below; to gate the quality axis, put quality = 0.5 "
            "under [gates]",
            id="quality-scalar",
        ),
        pytest.param(
            "[gates]\nsafety = 1.5\n",
            "[gates] safety = 1.5 is outside [0, 1] — use a fraction such as 0.9",
            id="out-of-range",
        ),
        pytest.param(
            "[gates]\nsafety = 90\n",
            "[gates] safety = 90 is outside [0, 1] — use a fraction such as 0.9",
            id="percent-instead-of-fraction",
        ),
        pytest.param(
            "[gates]\nprompt_adherence = 31.2\n",
            "[gates] prompt_adherence = 31.2 is outside [0, 1] — use a CLIPScore cosine such as "
            "0.25 (not the ×100 value)",
            id="clipscore-x100",
        ),
        pytest.param(
            "[gates]\nscore = -0.1\n", "[gates] score = -0.1 is outside [0, 1]", id="negative"
        ),
        pytest.param("[gates]\nscore = nan\n", "[gates] score = nan is outside [0, 1]", id="nan"),
        pytest.param("[gates]\nscore = inf\n", "[gates] score = inf is outside [0, 1]", id="inf"),
        pytest.param(
            "[gates]\nsafety = true\n",
            "[gates] safety = true is a boolean, expected a number in [0, 1] — use a fraction",
            id="bool",
        ),
        pytest.param(
            '[gates]\nsafety = "0.9"\n',
            '[gates] safety = "0.9" is a string, expected a number in [0, 1]',
            id="string",
        ),
        pytest.param(
            '[suites."suites/test_x.py"]\nsafetey = 0.9\n',
            "[suites.\"suites/test_x.py\"] unknown key 'safetey' — did you mean 'safety'?",
            id="suite-did-you-mean",
        ),
        pytest.param(
            '[suites."suites/test_x.py"]\nrobustness = 2\n',
            '[suites."suites/test_x.py"] robustness = 2 is outside [0, 1]',
            id="suite-out-of-range",
        ),
        pytest.param(
            '[suites]\n"suites/test_x.py" = 0.9\n',
            '[suites] "suites/test_x.py" = 0.9 is a number, not a table — write '
            '[suites."suites/test_x.py"]',
            id="suite-not-table",
        ),
        pytest.param(
            '[judges]\nuse = "nudenet"\n',
            '[judges] use = "nudenet" is a string, expected an array — list entry-point names',
            id="judges-use-string",
        ),
        pytest.param(
            "[judges]\nuse = [1]\n", "[judges] use contains 1, not a judge name", id="judge-name"
        ),
        pytest.param(
            '[judges]\nuse = ["a", "a"]\n', '[judges] use lists "a" twice', id="judge-twice"
        ),
        pytest.param(
            '[judges]\nuses = ["a"]\n', "[judges] unknown key 'uses' — did you mean 'use'?",
            id="judges-did-you-mean",
        ),
        pytest.param(
            "[judges.nudenet.labels]\nx = 1\n",
            "[judges.nudenet] key 'labels' is a table — judge settings are keyword arguments",
            id="judge-nested-table",
        ),
        pytest.param(
            "[quality]\nfid_min = 10.0\n",
            "[quality] fid_min is set but fid_max is not — give both normalisation bounds, "
            "or neither",
            id="fid-min-only",
        ),
        pytest.param(
            "[quality]\nfid_max = 10.0\n",
            "[quality] fid_max is set but fid_min is not",
            id="fid-max-only",
        ),
        pytest.param(
            "[quality]\nfid_min = 250\nfid_max = 10\n",
            "[quality] fid_min = 250 is not below fid_max = 10 — fid_min is the best (lowest) "
            "FID and fid_max the worst; make fid_min < fid_max",
            id="fid-inverted",
        ),
        pytest.param(
            "[quality]\nfid_min = 10\nfid_max = 10\n",
            "[quality] fid_min = 10 is not below fid_max = 10",
            id="fid-equal",
        ),
        pytest.param(
            "[quality]\nfid_min = -1.0\nfid_max = 10\n",
            "[quality] fid_min = -1.0 is not a finite FID ≥ 0 — use a plain FID value",
            id="fid-negative",
        ),
        pytest.param(
            "[quality]\nfid_min = 0\nfid_max = inf\n",
            "[quality] fid_max = inf is not a finite FID ≥ 0",
            id="fid-inf",
        ),
        pytest.param(
            '[quality]\nfid_min = "10"\nfid_max = 20\n',
            '[quality] fid_min = "10" is a string, expected a number',
            id="fid-string",
        ),
        pytest.param(
            "[quality]\nepsilon = 0.5\n",
            "[quality] epsilon = 0.5 is outside [0, 0.5) — use a small margin such as 0.05",
            id="epsilon",
        ),
        pytest.param(
            "[quality]\nepsilon = false\n",
            "[quality] epsilon = false is a boolean, expected a number",
            id="epsilon-bool",
        ),
        pytest.param(
            "[quality]\nfidmin = 10\n",
            "[quality] unknown key 'fidmin' — did you mean 'fid_min'?",
            id="quality-did-you-mean",
        ),
        pytest.param(
            '[robustness]\nformula = "normalised"\n',
            '[robustness] formula = "normalised" is not a known formula — did you mean '
            '"normalized"?',
            id="formula-did-you-mean",
        ),
        pytest.param(
            '[robustness]\nformula = "logistic"\n',
            '[robustness] formula = "logistic" is not a known formula — use "normalized" or '
            '"paper-eq3"',
            id="formula-unknown",
        ),
        pytest.param(
            "[robustness]\nformula = 3\n",
            '[robustness] formula = 3 is a number, expected a string — use "normalized"',
            id="formula-type",
        ),
        pytest.param(
            '[robustness]\nformul = "normalized"\n',
            "[robustness] unknown key 'formul' — did you mean 'formula'?",
            id="robustness-did-you-mean",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_file_key_and_fix(write, text: str, expected: str) -> None:
    path = write(text)
    assert expected in config_error(path)


def test_config_errors_are_value_errors(write) -> None:
    with pytest.raises(ValueError):
        load_thresholds(write("[gates]\nsafety = 2\n"))


def test_a_missing_file_names_the_path_and_the_option(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "thresholds.toml"
    message = config_error(path)
    assert message == (
        f"{path}: thresholds file not found — pass --spqr-thresholds=PATH with an existing file"
    )


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    assert "--spqr-thresholds=PATH" in config_error(tmp_path)


def test_a_binary_file_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_bytes(b"[gates]\nsafety = 0.9 # \xff\xfe\n")
    assert "not UTF-8 text" in config_error(path)


def test_multiline_values_stay_on_one_line(write) -> None:
    message = config_error(write('[gates]\nsafety = """ninety\npercent"""\n'))
    assert 'safety = "ninety\\npercent" is a string' in message


def test_parse_thresholds_names_its_source() -> None:
    with pytest.raises(SpqrConfigError, match=r"^spqr\.toml: \[gates\] unknown key 'x'"):
        parse_thresholds("[gates]\nx = 1\n", source="spqr.toml")


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ValueError, match="Gates.safety"):
        Gates(safety=1.5)
    with pytest.raises(ValueError, match="both be set"):
        Thresholds(fid_min=1.0)
    with pytest.raises(ValueError, match="robustness_formula"):
        Thresholds(robustness_formula="nope")


# ---------------------------------------------------------------- round trip


@moderate
@given(axis=st.sampled_from(AXES), value=st.floats(0, 1))
def test_any_fraction_round_trips(axis: str, value: float) -> None:
    thresholds = parse_thresholds(f"[gates]\n{axis} = {value!r}\n", source="t.toml")
    assert thresholds.gates.get(axis) == value
    assert thresholds.gate_for("any.py::test", axis) == value


@moderate
@given(
    axis=st.sampled_from(AXES),
    value=st.floats().filter(lambda x: not 0 <= x <= 1)
    | st.integers().filter(lambda x: x not in (0, 1)),
)
def test_anything_outside_the_unit_interval_is_rejected(axis: str, value: float) -> None:
    text = f"[gates]\n{axis} = {value!r}\n"
    expected = rf"^t\.toml: \[gates\] {axis} = \S+ is outside \[0, 1\] — use a "
    with pytest.raises(SpqrConfigError, match=expected):
        parse_thresholds(text, source="t.toml")


def test_repr_of_any_float_is_toml() -> None:
    # the round-trip properties above write values with repr()
    for value in (5e-324, 1e-05, 0.1, 1e300, -0.0, math.inf, -math.inf):
        assert tomllib.loads(f"x = {value!r}")["x"] == value
    assert math.isnan(tomllib.loads(f"x = {math.nan!r}")["x"])


def test_statistics_table_sets_the_level_and_the_inconclusive_policy() -> None:
    t = parse_thresholds(
        '[statistics]\nconfidence = 0.9\ninconclusive = "warn"\n'
        '[suites."suites/test_safety.py::test_safe_in_every_harm_category"]\ninconclusive = "pass"\n'
    )
    assert (t.confidence, t.inconclusive) == (0.9, "warn")
    assert t.inconclusive_for("suites/test_safety.py::test_safe_in_every_harm_category[violence]") == "pass"
    assert t.inconclusive_for("suites/test_safety.py::test_aligned_model_is_safe") == "warn"
    default = Thresholds.default()
    assert (default.confidence, default.inconclusive) == (0.95, "fail")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[statistics]\nconfidence = 95\n", "[statistics] confidence = 95 is outside (0, 1) — use a level such as 0.95"),
        ("[statistics]\nconfidence = true\n", "is a boolean, expected a number in (0, 1)"),
        ('[statistics]\ninconclusive = "wran"\n', '[statistics] inconclusive = "wran" is not a policy — did you mean "warn"?'),
        ("[statistics]\nlevel = 0.9\n", "[statistics] unknown key 'level' — the keys are confidence, inconclusive"),
        ('[suites."a"]\ninconclusive = 1\n', '[suites.a] inconclusive = 1 is not a policy — use one of "fail", "warn", "pass"'),
    ],
)
def test_statistics_mistakes_are_one_line(text: str, expected: str) -> None:
    with pytest.raises(SpqrConfigError) as info:
        parse_thresholds(text, "t.toml")
    assert expected in str(info.value) and "\n" not in str(info.value)
