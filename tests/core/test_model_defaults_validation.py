"""One validator per evaluation setting: a value is accepted or refused the same way whether it
comes from the command line (or ini), thresholds.toml's [evaluation] or a model's spqr.toml,
and a refusal is one line naming the file and the key (issue 13, item 16)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_spqr import options
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.model_defaults import load_model_defaults
from pytest_spqr.core.thresholds import parse_thresholds

# (key, TOML literal, the option's argparse type, the same value as command-line text)
CASES: list[tuple[str, str, Callable[[str], object], str]] = [
    ("guidance", "nan", options.non_negative_float, "nan"),
    ("guidance", "inf", options.non_negative_float, "inf"),
    ("guidance", "-1.0", options.non_negative_float, "-1"),
    ("guidance", "0.0", options.non_negative_float, "0"),
    ("guidance", "4.5", options.non_negative_float, "4.5"),
    ("resolution", "33", options.resolution, "33"),
    ("resolution", "60", options.resolution, "60"),
    ("resolution", "0", options.resolution, "0"),
    ("resolution", "32", options.resolution, "32"),
    ("resolution", "512", options.resolution, "512"),
    ("steps", "0", options.positive_int, "0"),
    ("steps", "3", options.positive_int, "3"),
    ("samples", "-2", options.positive_int, "-2"),
    ("batch_size", "4", options.positive_int, "4"),
]


def _cli_accepts(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except argparse.ArgumentTypeError:
        return False
    return True


def _ids(case: tuple[str, str, object, str]) -> str:
    return f"{case[0]}={case[1]}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_a_models_spqr_toml_is_checked_like_the_command_line(tmp_path: Path, case) -> None:
    key, literal, parse, text = case
    path = tmp_path / "spqr.toml"
    path.write_text(f"[evaluation]\n{key} = {literal}\n", encoding="utf-8")
    if _cli_accepts(parse, text):
        defaults = load_model_defaults(tmp_path)
        assert defaults is not None and defaults.evaluation[key] == parse(text)
    else:
        with pytest.raises(SpqrConfigError) as refused:
            load_model_defaults(tmp_path)
        message = str(refused.value)
        assert message.startswith(f"{path}: [evaluation] {key} = ") and "\n" not in message
        assert " — " in message  # says how to fix it


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_thresholds_toml_evaluation_is_checked_like_the_command_line(case) -> None:
    key, literal, parse, text = case
    source = "/gate/thresholds.toml"
    if _cli_accepts(parse, text):
        thresholds = parse_thresholds(f"[evaluation]\n{key} = {literal}\n", source)
        assert thresholds.evaluation[key] == parse(text)
    else:
        with pytest.raises(SpqrConfigError) as refused:
            parse_thresholds(f"[evaluation]\n{key} = {literal}\n", source)
        assert str(refused.value).startswith(f"{source}: [evaluation] {key} = ")


def test_nan_guidance_in_spqr_toml_is_one_line_not_an_internal_error(tmp_path: Path) -> None:
    (tmp_path / "spqr.toml").write_text("[evaluation]\nguidance = nan\n", encoding="utf-8")
    with pytest.raises(SpqrConfigError, match=r"\[evaluation\] guidance = nan .*finite number ≥ 0"):
        load_model_defaults(tmp_path)


def test_a_judge_listed_twice_in_spqr_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spqr.toml"
    path.write_text('[evaluation]\njudges = ["toy-mark", "toy-mark"]\n', encoding="utf-8")
    with pytest.raises(SpqrConfigError) as refused:
        load_model_defaults(tmp_path)
    assert str(refused.value).startswith(f"{path}: [evaluation] judges")
    assert "'toy-mark' twice" in str(refused.value)


def test_thresholds_evaluation_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("a red apple\n", encoding="utf-8")
    source = tmp_path / "thresholds.toml"
    thresholds = parse_thresholds('[evaluation]\nprompts = "prompts.txt"\nsteps = 3\n', str(source))
    assert thresholds.evaluation["prompts"] == str(tmp_path / "prompts.txt")
    assert thresholds.evaluation["steps"] == 3


def test_thresholds_evaluation_does_not_choose_judges() -> None:
    """Judges are chosen in [judges] use; an [evaluation] judges key would be a second place."""
    with pytest.raises(SpqrConfigError, match=r"\[evaluation\] unknown key 'judges' — .*\[judges\] use"):
        parse_thresholds('[evaluation]\njudges = ["toy-mark"]\n', "t.toml")


def test_judges_from_model_opt_in_is_a_boolean() -> None:
    assert parse_thresholds("[judges]\nfrom_model = true\n").judges_from_model is True
    assert parse_thresholds("").judges_from_model is False
    with pytest.raises(SpqrConfigError, match=r"\[judges\] from_model = \"yes\" .* true or false"):
        parse_thresholds('[judges]\nfrom_model = "yes"\n')
