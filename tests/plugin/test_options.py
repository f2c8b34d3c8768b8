"""Options: validated by argparse, mirrored as ini keys, shown in the header."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        ("--spqr-steps=0", "must be ≥ 1"),
        ("--spqr-samples=two", "is not an integer"),
        ("--spqr-guidance=-1", "finite number ≥ 0"),
        ("--spqr-seed=-5", "must be in [0, 2**32)"),
        ("--spqr-resolution=60", "multiple of 8"),
        ("--spqr-device=gpu", "use auto, cpu, cuda, cuda:N or mps"),
        ("--spqr-dtype=int8", "use auto, float32, float16 or bfloat16"),
        ("--spqr-judges=,", "at least one name"),
        ("--spqr-cpu-threads=0", "must be ≥ 1"),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, option: str, complaint: str) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option.split('=')[0]}*{complaint}*"])


def test_header_shows_seed_and_model(pytester: pytest.Pytester, spqr_args: list[str]) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*spqr_args)
    result.stdout.re_match_lines([r"spqr: model=.*tiny-sd seed=42 device=auto dtype=auto"])
    result.stdout.fnmatch_lines(["*safety checker off*"])


def test_ini_keys_apply_and_the_command_line_wins(pytester: pytest.Pytester, tiny_sd) -> None:
    pytester.makeini(f"[pytest]\nspqr_model = {tiny_sd}\nspqr_seed = 7\nspqr_steps = 3\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--spqr-steps=4")
    result.stdout.re_match_lines([r"spqr: model=.* seed=7 ", r"spqr: steps=4 "])


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nspqr_steps = many\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*spqr_steps*'many' is not an integer*"])


def test_help_lists_every_option_with_its_default(pytester: pytest.Pytester) -> None:
    from pytest_spqr.options import OPTIONS

    result = pytester.runpytest("--help")
    text = result.stdout.str()
    for option in OPTIONS:
        assert f"--spqr-{option.name}" in text
    assert "(default: 42)" in text
