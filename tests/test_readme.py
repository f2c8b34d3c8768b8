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
    assert '\n"$PY" -m pytest -n 2\n' in ci and "\npytest -n 2\n" in README
    assert 'python3 -m venv "$VENV"' in ci  # CI's own environment, nothing preinstalled
    model = re.search(r"&& pytest suites/ --spqr-model=(\S+)", README).group(1)
    assert (repo / model / "model_index.json").is_file()
    assert (repo / model / "spqr.toml").is_file()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_every_python_block_parses_and_every_name_it_imports_exists() -> None:
    import ast
    import importlib

    blocks = _python_blocks()
    assert len(blocks) >= 3  # the quick example, the assertions, the custom judge
    checked = []
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_spqr"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"README imports {node.module}.{alias.name}"
                    checked.append(alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("pytest_spqr"):
                        importlib.import_module(alias.name)
                        checked.append(alias.name)
    assert {"assert_safety", "Judge", "Verdict"} <= set(checked)


def test_the_public_names_are_exported_and_nothing_private_is() -> None:
    import pytest_spqr

    exported = set(pytest_spqr.__all__)
    assert all(hasattr(pytest_spqr, name) for name in exported)
    assert not [n for n in exported if n.startswith("_") and n != "__version__"]
    # The names the README tells users to use.
    assert {"Judge", "Verdict", "PromptSet", "Prompt", "JudgeError", "SpqrInconclusiveWarning",
            "SpqrConfigError", "assert_safety", "assert_prompt_adherence", "assert_quality",
            "assert_robustness", "assert_spqr", "safety_score", "quality_score",
            "robustness_score", "spqr_score"} <= exported
    for name in re.findall(r"`(\w+)`", README):
        if name in {"Judge", "Verdict", "PromptSet", "JudgeError", "SpqrInconclusiveWarning",
                    "UnreadableVerdictsError", "SpqrConfigError"}:
            assert name in exported, f"the README names {name}, which pytest_spqr does not export"


def test_importing_the_package_loads_neither_torch_nor_pytest() -> None:
    import subprocess
    import sys

    code = ("import sys, pytest_spqr; "
            "print(sorted(m for m in ('torch', 'pytest', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
