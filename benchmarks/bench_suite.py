"""Suite-level benchmarks of pytest-spqr against a raw diffusers loop (issue: scale).

    python benchmarks/bench_suite.py [--model fixtures/tiny-sd] [--steps 25] [--samples 2]
    python benchmarks/bench_suite.py --readme-only     # only the README's own command

Measures, in one run on this machine, as ratios:
  * cold suite wall time ÷ a raw diffusers loop generating the same images   (goal ≤ 1.10)
  * warm re-run ÷ cold                                                      (goal ≤ 0.05)
  * ``-n 2`` ÷ ``-n 0`` on the same generation-bound suite                   (goal ≤ 0.62)
    (with torch's default threads, and with 1 thread per process: the work split itself)
  * images generated ÷ distinct (model, prompt, seed) needed, under -n 2    (goal 1.0)
  * ``--spqr-executor=ray`` (2 local actors) ÷ -n 0                          (no goal)
  * peak RSS of each run (wait4, and the run record's own ``usage``)
  * the README's own first command (``pytest suites/ --spqr-model=fixtures/toyworld/aligned
    -m "not bft" ...``: toy judge, CLIP, FID, HTML report) cold, then warm  (goal ≤ 0.05)
and writes them into its own sections of benchmarks/RESULTS.md. Every run is a fresh
process (imports included on both sides); the judge is a trivial pixel check so that the
comparison is about generation, caching and scheduling, not about a classifier.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "bench_suite"

CONFTEST = textwrap.dedent(
    """
    import json, os
    import pytest
    from pytest_spqr.core.verdicts import Verdict

    class BrightCorner:
        name = "bright-corner"
        version = "1"
        def judge(self, images):
            return [Verdict(unsafe=sum(im.getpixel((0, 0))) > 600, category="bright") for im in images]

    @pytest.fixture(scope="session")
    def spqr_judges():
        return [BrightCorner()]

    """
)

SUITE = textwrap.dedent(
    """
    import pytest
    from pytest_spqr import assert_safety

    def test_overall(aligned_pipe, harmful_prompts):
        assert_safety(min=0.0)

    @pytest.mark.parametrize("category", ["sexual", "violence", "hate"])
    def test_category(aligned_pipe, harmful_prompts, category):
        assert_safety(min=0.0, category=category)
    """
)

RAW = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from diffusers import DiffusionPipeline
    from pytest_spqr.core.prompts import load_prompt_set
    from pytest_spqr.core.seeds import seed_for
    model, out, steps, samples, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    pipe = DiffusionPipeline.from_pretrained(model, use_safetensors=True, safety_checker=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    jobs = [(p.text, seed_for(42, p, s)) for p in load_prompt_set("builtin:harmful") for s in range(samples)]
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        with torch.inference_mode():
            images = pipe(prompt=[t for t, _ in chunk], num_inference_steps=steps, guidance_scale=7.5,
                          generator=[torch.Generator("cpu").manual_seed(s) for _, s in chunk]).images
        for i, image in enumerate(images):
            image.save(out / f"{start + i}.png")
    """
)


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and output of a child process and its children."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0,):
        sys.stderr.write(output.decode(errors="replace")[-4000:])
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024, output.decode(errors="replace")


USAGE = re.compile(r"spqr usage: (\d+) images generated(?: \(\+(\d+) by Ray tasks\))?.*"
                   r"peak RSS (\d+) MiB")


def usage(output: str) -> dict:
    """The run's last line (from its run record): images generated here and by Ray, peak RSS."""
    found = USAGE.search(output)
    if found is None:
        raise SystemExit("benchmark: no 'spqr usage:' line in the pytest output")
    return {"generated": int(found[1]), "remote": int(found[2] or 0), "rss": float(found[3])}


README_COMMAND = ["suites/", "--spqr-model=fixtures/toyworld/aligned", "-m", "not bft"]
"""The README's first command (its pytest part), run from the repository root."""
README_SECTION = "bench_readme"


def readme_rows(tmp: Path) -> tuple[list[str], dict]:
    """The README's own command on an empty cache, then again on the warm one.

    Its outputs (cache, JUnit XML, report) go to ``tmp``, not into the repository. Each run
    is a fresh process; bytecode is cached under ``tmp`` (``PYTHONPYCACHEPREFIX``) as on a
    user's machine, where Python writes ``__pycache__`` — so the warm run does not pay for
    compiling (and pytest's assertion rewriting of) every module again.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")

    def once(name: str) -> tuple[float, float, dict, bool]:
        probe = tmp / f"{name}-imported.txt"
        wall, rss, output = run([sys.executable, "-m", "pytest", *README_COMMAND,
                                 f"--junitxml={tmp / (name + '.xml')}",
                                 f"--spqr-report={tmp / ('report-' + name)}",
                                 f"--spqr-cache-dir={tmp / 'cache'}", "-p", "no:cacheprovider",
                                 "-p", "spqr_bench_probe"],
                                env={**env, "PYTHONPATH": str(tmp / "probe"),
                                     "SPQR_BENCH_PROBE": str(probe)}, cwd=REPO)
        return wall, rss, usage(output), probe.read_text() == "True"

    (tmp / "probe").mkdir(parents=True, exist_ok=True)
    (tmp / "probe" / "spqr_bench_probe.py").write_text(PROBE)
    cold_wall, cold_rss, cold_use, cold_torch = once("cold")
    warm_wall, warm_rss, warm_use, warm_torch = once("warm")
    rows = [
        f"| README command: warm re-run ÷ cold | {warm_wall / cold_wall:.3f} | ≤ 0.05 | "
        f"{warm_wall:.1f} s vs {cold_wall:.1f} s; warm: {warm_use['generated']} images "
        f"generated, torch {'imported' if warm_torch else 'not imported'} (cold: "
        f"{cold_use['generated']} generated, torch {'imported' if cold_torch else 'not imported'}) |",
        f"| README command: peak RSS (MiB) | — | — | cold {cold_rss:.0f}, warm {warm_rss:.0f} "
        f"(wait4); run record: cold {cold_use['rss']:.0f}, warm {warm_use['rss']:.0f} |",
    ]
    facts = {"cold": cold_wall, "warm": warm_wall, "warm_torch": warm_torch}
    return rows, facts


PROBE = textwrap.dedent(
    """
    import os, sys

    def pytest_unconfigure(config):  # after the report is written
        with open(os.environ["SPQR_BENCH_PROBE"], "w") as out:
            out.write(str("torch" in sys.modules))
    """
)


def write_section(section: str, lines: list[str]) -> None:
    """Replace (or append) one marked section of RESULTS.md, leaving the others alone."""
    table = "\n".join([f"<!-- {section}:start -->", *lines, f"<!-- {section}:end -->"])
    print(table)
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- {section}:start -->.*?<!-- {section}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: table, text)
    elif section == README_SECTION and f"<!-- {SECTION}:end -->" in text:
        end = f"<!-- {SECTION}:end -->"
        text = text.replace(end, end + "\n\n" + table, 1)
    else:
        text = text.rstrip() + "\n\n" + table + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def readme_main() -> None:
    """Only the README command's rows, into their own section."""
    with tempfile.TemporaryDirectory() as tmp:
        rows, _ = readme_rows(Path(tmp))
    write_section(README_SECTION, [
        f"## The README's own command, cold and warm ({dt.date.today().isoformat()})",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}. Command: `python benchmarks/bench_suite.py --readme-only`: "
        "`pytest suites/ --spqr-model=fixtures/toyworld/aligned -m \"not bft\"` from the "
        "repository root, cache, JUnit XML and report in a temporary folder, each run a fresh "
        "process; both ratios from one run.",
        "",
        "| measure | ratio | goal | detail |",
        "|---|---|---|---|",
        *rows,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "fixtures" / "tiny-sd"))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    parser.add_argument("--readme-only", action="store_true",
                        help="measure only the README's own command (cold, warm)")
    args = parser.parse_args()
    if args.readme_only:
        readme_main()
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "conftest.py").write_text(CONFTEST)
        (root / "test_bench.py").write_text(SUITE)
        common = [f"--spqr-model={args.model}", f"--spqr-steps={args.steps}",
                  f"--spqr-samples={args.samples}", f"--spqr-batch-size={args.batch_size}",
                  "--spqr-guidance=7.5", "-p", "no:cacheprovider", "-q"]

        def suite(name: str, cache: str, *extra: str) -> tuple[float, float, dict]:
            wall, rss, output = run([sys.executable, "-m", "pytest", str(root), *common,
                                     f"--spqr-cache-dir={root / ('cache-' + cache)}", *extra],
                                    cwd=root)
            return wall, rss, usage(output)

        needed = 56 * args.samples
        raw_wall, raw_rss, _ = run([sys.executable, "-c", RAW, args.model, str(root / "raw"),
                                 str(args.steps), str(args.samples), str(args.batch_size)])
        cold_wall, cold_rss, cold_use = suite("cold", "cold")
        warm_wall, warm_rss, warm_use = suite("warm", "cold")
        n2_wall, n2_rss, n2_use = suite("xdist", "xdist", "-n", "2")
        t1_wall, _, _ = suite("n0-1thread", "t1", "--spqr-cpu-threads=1")
        t1n2_wall, _, t1n2_use = suite("n2-1thread", "t1n2", "-n", "2", "--spqr-cpu-threads=1")
        ray_wall, ray_rss, ray_use = (None, None, None)
        if not args.no_ray:
            ray_wall, ray_rss, ray_use = suite("ray", "ray", "--spqr-executor=ray",
                                               "--spqr-ray-actors=2", "--spqr-cpu-threads=1")

    rows = [
        ("cold suite ÷ raw diffusers loop", cold_wall / raw_wall, "≤ 1.10",
         f"{cold_wall:.1f} s vs {raw_wall:.1f} s"),
        ("warm re-run ÷ cold", warm_wall / cold_wall, "≤ 0.05",
         f"{warm_wall:.1f} s, {warm_use['generated']} images generated, no model loaded"),
        ("-n 2 ÷ -n 0 (threads: all cores per run)", n2_wall / cold_wall, "≤ 0.62",
         f"{n2_wall:.1f} s vs {cold_wall:.1f} s; -n 0 already uses both cores"),
        ("-n 2 ÷ -n 0 (1 thread per process)", t1n2_wall / t1_wall, "(work split)",
         f"{t1n2_wall:.1f} s vs {t1_wall:.1f} s"),
        ("images generated ÷ needed (-n 2)", n2_use["generated"] / needed, "= 1.0",
         f"{n2_use['generated']} of {needed} (-n 0: {cold_use['generated']}; -n 2 at 1 thread: "
         f"{t1n2_use['generated']})"),
    ]
    if ray_use is not None:
        rows.append(("Ray, 2 local actors × 1 thread ÷ -n 0", ray_wall / cold_wall, "(no goal)",
                     f"{ray_wall:.1f} s; {ray_use['remote']} of {needed} images made by actors, "
                     f"{ray_use['generated']} by pytest"))
    write_section(SECTION, [
        f"## Suite benchmarks ({dt.date.today().isoformat()})",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. "
        f"Model: `{Path(args.model).name}`, {needed} images ({args.samples} per built-in harmful "
        f"prompt), {args.steps} steps, batch {args.batch_size}. "
        f"Command: `python benchmarks/bench_suite.py --steps {args.steps} --samples {args.samples}`.",
        "",
        "| measure | ratio | goal | detail |",
        "|---|---|---|---|",
        *(f"| {name} | {ratio:.3f} | {goal} | {detail} |" for name, ratio, goal, detail in rows),
        f"| peak RSS (MiB) | — | — | raw {raw_rss:.0f}, cold {cold_rss:.0f}, warm {warm_rss:.0f}, "
        f"-n 2 {n2_rss:.0f} (largest process, wait4); run record of the cold suite: "
        f"{cold_use['rss']:.0f} |",
    ])
    readme_main()


if __name__ == "__main__":
    main()
