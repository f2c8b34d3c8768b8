"""The assertions evaluate the current test's fixtures, gate, and explain failures."""

from __future__ import annotations

import pytest

from tests.plugin.conftest import JUDGE_CONFTEST


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(JUDGE_CONFTEST)
    return pytester


def test_failure_message_names_value_gate_images_and_prompts(project, spqr_args) -> None:
    project.makepyfile(
        """
        from pytest_spqr import assert_safety
        def test_safe(aligned_pipe, harmful_prompts):
            assert_safety(min=1.0)
        """
    )
    result = project.runpytest(*spqr_args)
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r"E\s+AssertionError: safety 0\.\d+ < min 1\.000 \(h \d+\.\d% = \d/7 images flagged; "
            r"model=.*tiny-sd; prompts=builtin:harmful; judges=parity\)",
            r"E\s+flagged by finding: even \d",
            r"E\s+flagged by prompt category: [a-z -]+ \d.*",
            r'E\s+worst prompts: ".*" \(seed \d+: parity:even 0\.90\)',
            r"E\s+images: .*\.spqr/images/[0-9a-f]{16}",
        ]
    )


def test_gate_comes_from_thresholds_toml_with_suite_override(project, spqr_args) -> None:
    project.makefile(
        ".toml",
        thresholds='[gates]\nsafety = 0.0\n[suites."test_strict.py"]\nsafety = 1.0\n',
    )
    code = "from pytest_spqr import assert_safety\ndef test_s(aligned_pipe, harmful_prompts):\n    assert_safety()\n"
    project.makepyfile(test_lenient=code, test_strict=code)
    result = project.runpytest(*spqr_args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_strict.py::test_s - AssertionError: safety *< min 1.000*"])


def test_no_gate_anywhere_is_a_failure_not_a_pass(project, spqr_args) -> None:
    project.makepyfile(
        "from pytest_spqr import assert_safety\ndef test_s(aligned_pipe):\n    assert_safety()\n"
    )
    result = project.runpytest(*spqr_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no gate for safety: pass min= to the assertion or set [[]gates[]] safety*"])


def test_category_restricts_to_that_prompt_category(project, spqr_args) -> None:
    project.makepyfile(
        """
        import pytest
        from pytest_spqr import assert_safety
        def test_sexual(aligned_pipe, harmful_prompts):
            m = assert_safety(min=0.0, category="sexual")
            assert m.category == "sexual" and m.n == 1
        def test_unknown(aligned_pipe, harmful_prompts):
            assert_safety(min=0.0, category="cooking")
        """
    )
    result = project.runpytest(*spqr_args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*no prompt in builtin:harmful has category 'cooking' (categories: harassment, hate, illegal activity, self-harm, sexual, shocking, violence)*"])


def test_overridden_prompt_fixture_and_spqr_methods(project, spqr_args) -> None:
    project.makepyfile(
        """
        import pytest
        @pytest.fixture
        def harmful_prompts():
            return ["a red apple", "a blue car"]
        def test_own_prompts(aligned_pipe, harmful_prompts, spqr):
            m = spqr.assert_safety(min=0.0)
            assert m.n == 2 and m.prompt_set == "fixture:harmful_prompts"
            again = spqr.safety()
            assert again.value == m.value
        """
    )
    project.runpytest(*spqr_args).assert_outcomes(passed=1)


def test_prompt_adherence_uses_the_clip(project, spqr_args) -> None:
    project.makepyfile(
        """
        from pytest_spqr import assert_prompt_adherence
        def test_p(aligned_pipe, benign_prompts):
            m = assert_prompt_adherence(min=0.0)
            assert m.n == 7 and 0.0 <= m.value <= 1.0
        def test_p_fails(aligned_pipe, benign_prompts):
            assert_prompt_adherence(min=1.0)
        """
    )
    result = project.runpytest(*spqr_args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines([r"E\s+AssertionError: prompt_adherence 0\.\d+ < min 1\.000 \(CLIPScore cosine over 7 images.*"])


def test_each_image_is_generated_once_per_run(project, spqr_args) -> None:
    project.makepyfile(
        """
        from pytest_spqr import assert_safety
        def test_a(aligned_pipe, harmful_prompts, spqr_session):
            assert_safety(min=0.0)
            assert spqr_session.evaluator.images_generated == 7
        def test_b(aligned_pipe, harmful_prompts, spqr_session):
            assert_safety(min=0.0, category="sexual")
            assert spqr_session.evaluator.images_generated == 7
        """
    )
    project.runpytest(*spqr_args).assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("judge_body", "message"),
    [
        ("raise RuntimeError('model exploded')",
         "*JudgeError: judge 'broken' raised RuntimeError: model exploded on a batch of 7 images*"),
        ("return [None] * len(images)",
         "*JudgeError: judge 'broken' returned 7 results (7 not a Verdict) for 7 images*"),
        ("return []", "*JudgeError: judge 'broken' returned 0 results (0 not a Verdict) for 7 images*"),
    ],
)
def test_a_broken_judge_errors_never_passes(pytester, spqr_args, judge_body, message) -> None:
    pytester.makeconftest(
        f"""
        import pytest
        class Broken:
            name = "broken"
            version = "1"
            def judge(self, images):
                {judge_body}
        @pytest.fixture(scope="session")
        def spqr_judges():
            return [Broken()]
        """
    )
    pytester.makepyfile(
        "from pytest_spqr import assert_safety\ndef test_s(aligned_pipe):\n    assert_safety(min=0.0)\n"
    )
    result = pytester.runpytest(*spqr_args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])


def test_assertion_outside_a_test_says_where_it_works() -> None:
    import contextvars

    from pytest_spqr import assert_safety

    with pytest.raises(RuntimeError, match="inside a pytest test"):
        contextvars.Context().run(assert_safety, 0.5)


def test_a_second_run_reuses_images_and_verdicts(project, spqr_args, tmp_path) -> None:
    project.makepyfile(
        """
        import os
        from pytest_spqr import assert_safety
        def test_a(aligned_pipe, harmful_prompts, spqr_session, spqr_judges):
            m = assert_safety(min=0.0)
            panel = spqr_session.panel_for(spqr_judges)
            expected = int(os.environ["EXPECT_WORK"])
            assert spqr_session.evaluator.images_generated == expected
            assert panel.judged == expected
            with open(os.environ["SAFETY_LOG"], "a") as log:
                log.write(f"{m.value}\\n")
        """
    )
    args = [*spqr_args, f"--spqr-cache-dir={tmp_path / 'cache'}"]
    import os

    log = tmp_path / "safety.log"
    os.environ["SAFETY_LOG"] = str(log)
    os.environ["EXPECT_WORK"] = "7"
    try:
        first = project.runpytest(*args)
        first.assert_outcomes(passed=1)
        os.environ["EXPECT_WORK"] = "0"
        second = project.runpytest(*args)
        second.assert_outcomes(passed=1)
    finally:
        del os.environ["EXPECT_WORK"], os.environ["SAFETY_LOG"]
    first_value, second_value = log.read_text().split()
    assert first_value == second_value
