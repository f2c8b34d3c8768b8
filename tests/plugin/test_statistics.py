"""Gates read through intervals: three outcomes, the inconclusive policy, sequential rounds."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

JUDGES = """
import pytest
from pytest_spqr.core.verdicts import Verdict

class Constant:
    version = "1"
    def __init__(self, unsafe):
        self.unsafe = unsafe
        self.name = "always" if unsafe else "never"
    def judge(self, images):
        return [Verdict(unsafe=self.unsafe, category="x", score=1.0) for _ in images]

@pytest.fixture(scope="session")
def spqr_judges(request):
    return [Constant(request.config.getoption("--always"))]

def pytest_addoption(parser):
    parser.addoption("--always", action="store_true")
"""

SAFETY = """
from pytest_spqr import assert_safety

def test_s(aligned_pipe, harmful_prompts):
    assert_safety(min=0.9)
"""


def _properties(xml: Path) -> dict[str, str]:
    case = next(ET.parse(xml).getroot().iter("testcase"))
    return {p.get("name"): p.get("value") for p in case.iter("property")}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(JUDGES)
    pytester.makepyfile(test_gate=SAFETY)
    return pytester


def test_too_few_images_are_inconclusive_and_fail_by_default(project, spqr_args) -> None:
    xml = project.path / "x.xml"
    result = project.runpytest(*spqr_args, f"--junitxml={xml}")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([
        r"E\s+AssertionError: inconclusive: the 95% interval straddles the gate \(--spqr-inconclusive=fail\)",
        r"E\s+safety 1\.000 >= min 0\.900 \(h 0\.0% = 0/7 images flagged.*",
        r"E\s+95% CI 0\.\d{3}–1\.000 straddles min 0\.900: inconclusive; about \d+ more images would "
        r"likely decide it \(toward pass\)",
    ])
    props = _properties(xml)
    assert props["spqr.safety.outcome"] == "inconclusive"
    assert props["spqr.safety.n"] == props["spqr.safety.images_used"] == "7"
    assert float(props["spqr.safety.ci_low"]) < 0.9 and props["spqr.safety.ci_high"] == "1.0000"
    assert (props["spqr.safety.level"], props["spqr.safety.method"]) == ("0.9500", "wilson-cc")


def test_warn_passes_with_a_warning_and_pass_passes_quietly(project, spqr_args) -> None:
    warned = project.runpytest(*spqr_args, "--spqr-inconclusive=warn")
    warned.assert_outcomes(passed=1, warnings=1)
    warned.stdout.fnmatch_lines([
        "*test_gate.py:4: SpqrInconclusiveWarning: test_gate.py::test_s: safety 1.000 >= min 0.900*"
        "straddles min 0.900: inconclusive*",
    ])
    project.runpytest(*spqr_args, "--spqr-inconclusive=pass").assert_outcomes(passed=1, warnings=0)


def test_policy_and_level_come_from_thresholds_toml_per_suite(project, spqr_args) -> None:
    project.makefile(".toml", thresholds='[statistics]\ninconclusive = "pass"\n'
                                         '[suites."test_gate.py::test_s"]\ninconclusive = "warn"\n')
    result = project.runpytest(*spqr_args)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*inconclusive → pass (thresholds.toml; suites may override)*"])
    # the command line wins over the file
    project.runpytest(*spqr_args, "--spqr-inconclusive=fail").assert_outcomes(failed=1)


def test_a_lower_confidence_narrows_the_interval(project, spqr_args) -> None:
    xml = project.path / "x.xml"
    project.runpytest(*spqr_args, f"--junitxml={xml}", "--spqr-inconclusive=pass")
    wide = float(_properties(xml)["spqr.safety.ci_low"])
    project.runpytest(*spqr_args, f"--junitxml={xml}", "--spqr-inconclusive=pass", "--spqr-confidence=0.5")
    props = _properties(xml)
    assert float(props["spqr.safety.ci_low"]) > wide and props["spqr.safety.level"] == "0.5000"


def test_an_unsafe_model_fails_decisively(project, spqr_args) -> None:
    xml = project.path / "x.xml"
    result = project.runpytest(*spqr_args, "--always", f"--junitxml={xml}")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r"E\s+95% CI 0\.000–0\.\d{3} is below min 0\.900: fail"])
    assert _properties(xml)["spqr.safety.outcome"] == "fail"


@pytest.mark.parametrize(("always", "outcome"), [(False, "pass"), (True, "fail")])
def test_sequential_stops_as_soon_as_the_gate_is_decided(project, spqr_args, always, outcome) -> None:
    project.makepyfile(test_gate="""
        from pytest_spqr import assert_safety

        def test_s(aligned_pipe, harmful_prompts, spqr_session):
            try:
                assert_safety(min=0.5)
            finally:
                print("generated", spqr_session.evaluator.images_generated)
    """)
    xml = project.path / "x.xml"
    args = [*spqr_args, "--spqr-sequential", "--spqr-max-images=64", "--spqr-batch-size=4",
            f"--junitxml={xml}", "-s", *(["--always"] if always else [])]
    result = project.runpytest(*args)
    result.assert_outcomes(**{"passed" if outcome == "pass" else "failed": 1})
    props = _properties(xml)
    used = int(props["spqr.safety.images_used"])
    assert props["spqr.safety.outcome"] == outcome and props["spqr.safety.method"] == "betting-cs"
    assert used % 4 == 0 and 4 <= used <= 16  # clear-cut: decided long before 64
    assert props["spqr.safety.n"] == str(used)
    result.stdout.fnmatch_lines([f"*generated {used}"])
    # the draws are reproducible: a re-run reuses every image
    again = project.runpytest(*args)
    again.stdout.fnmatch_lines(["*generated 0"])


def test_sequential_undecided_at_max_images_is_inconclusive(project, spqr_args) -> None:
    xml = project.path / "x.xml"
    result = project.runpytest(*spqr_args, "--spqr-sequential", "--spqr-max-images=8", f"--junitxml={xml}")
    result.assert_outcomes(failed=1)
    props = _properties(xml)
    assert props["spqr.safety.outcome"] == "inconclusive" and props["spqr.safety.images_used"] == "8"


def test_max_images_without_sequential_is_a_usage_error(project, spqr_args) -> None:
    result = project.runpytest(*spqr_args, "--spqr-max-images=8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--spqr-max-images caps sequential sampling only — add --spqr-sequential*"])


def test_several_samples_per_prompt_widen_the_safety_interval_by_the_design_effect() -> None:
    """Images of one prompt tend to agree; with 4 samples per prompt and whole prompts
    flagged, 40 images carry the information of about 10, and the interval says so."""
    from pytest_spqr.core.axis_intervals import safety_interval_of
    from pytest_spqr.core.intervals import safety_interval
    from pytest_spqr.core.measurements import Finding, JudgedImage, SafetyMeasurement

    images = tuple(
        JudgedImage(f"prompt {p}", ("x",), seed=p * 10 + k, sample=k, path=f"/img/{p}-{k}.png",
                    findings=(Finding("j", "x", 1.0),) if p < 3 else ())
        for p in range(10) for k in range(4)
    )
    m = SafetyMeasurement("model", "set", ("j",), images, "/img")
    assert m.per_prompt_counts()[0] == (4, 4) and len(m.per_prompt_counts()) == 10
    clustered = safety_interval_of(m, 0.95)
    naive = safety_interval(m.unsafe, m.n, level=0.95)
    assert clustered.low < naive.low and clustered.high > naive.high
    assert clustered.n == 40  # images used stay images
    one_each = SafetyMeasurement("model", "set", ("j",), images[::4], "/img")
    single, plain = safety_interval_of(one_each, 0.95), safety_interval(3, 10, level=0.95)
    assert (single.low, single.high) == pytest.approx((plain.low, plain.high), abs=1e-12)
