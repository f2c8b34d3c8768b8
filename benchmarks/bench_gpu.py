"""GPU benchmark at Stable Diffusion 1.5's real size, against plain diffusers (issue 12, item 8).

    python benchmarks/bench_gpu.py                                  # a CUDA machine, < 8 minutes
    python benchmarks/bench_gpu.py --tiny --results /tmp/R.md       # the CPU smoke run (CI)

No weights are downloaded: a pipeline with SD 1.5's exact configuration (UNet 859.5 M
parameters, the SD VAE, a CLIP ViT-L/14 text encoder, PNDM) is initialised at random and
saved as a diffusers folder in fp16, so the plugin loads it through its real loading code.
Measured on it, each side warmed up first and timed on the same work:
  * images/s through the plugin (a generated pytest suite run as ``python -m pytest
    --spqr-model=FOLDER``: the timed test's ``assert_safety`` generates, stores and judges
    its images) vs a raw ``StableDiffusionPipeline.__call__`` loop that saves the same
    images as PNG: same prompts, seeds, steps, guidance, resolution, batch and dtype;
  * LoRA fine-tuning steps/s through ``pytest_spqr.models.finetune.train`` (the ``lite``
    profile) vs a plain diffusers + peft loop (``unet.add_adapter(LoraConfig(r=8,
    lora_alpha=16, ...))``, AdamW, noise-prediction MSE, fp16 autocast and loss scaling,
    gradient clipping), same data, batch and resolution; both encode the images once;
  * peak GPU memory of each side (``torch.cuda.max_memory_allocated``);
  * the fraction of the fp16 dense FLOP bound reached: images/s × steps × FLOP per CFG step
    (counted by torch's ``FlopCounterMode`` on the UNet: 1.61 TFLOP at 512²) ÷ the device's
    peak, known for H100/H200/A100 and "unknown" elsewhere.
Writes its own section of benchmarks/RESULTS.md (``--results``; ``--tiny`` writes only where
told). ``--tiny`` runs every code path at toy sizes on the CPU in seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import bench_gpu_legs as legs

from pytest_spqr.core.errors import first_line

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS.md"
SECTION = "bench_gpu"
SD15_UNET_PARAMS = 859_520_964
"""Parameters of SD 1.5's UNet (``runwayml/stable-diffusion-v1-5``, 859.52 M)."""
PEAK_FP16_DENSE: tuple[tuple[str, float, str], ...] = (
    ("H100 PCIe", 756e12, "H100 PCIe"),
    ("H100", 989e12, "H100 SXM"),
    ("H200", 989e12, "H200"),
    ("A100", 312e12, "A100"),
)
"""Dense fp16 tensor-core peak (no sparsity) by a substring of the device name, first match."""


@dataclass(frozen=True)
class Workload:
    """How much each side does: images (warm-up, then timed) and LoRA steps."""

    warmup_images: int
    timed_images: int
    steps: int
    batch: int
    lora_batch: int
    lora_warmup: int
    lora_steps: int
    guidance: float = 7.5


FULL = Workload(warmup_images=8, timed_images=16, steps=25, batch=8,
                lora_batch=8, lora_warmup=10, lora_steps=30)
TINY = Workload(warmup_images=2, timed_images=2, steps=2, batch=2,
                lora_batch=2, lora_warmup=1, lora_steps=2)


@dataclass
class Results:
    """What the run measured; every leg may instead have failed or been skipped."""

    rows: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def peak_flops(device_name: str) -> tuple[float | None, str]:
    """The device's dense fp16 peak (FLOP/s) and the name it was looked up by."""
    for needle, flops, label in PEAK_FP16_DENSE:
        if needle.lower() in device_name.lower():
            return flops, label
    return None, "unknown"


def flop_text(flop: float) -> str:
    return f"{flop / 1e12:.3f} TFLOP" if flop >= 1e11 else f"{flop / 1e9:.2f} GFLOP"


def say(start: float, message: str) -> None:
    print(f"[bench_gpu {time.perf_counter() - start:6.1f} s] {message}", flush=True)


# ---------------------------------------------------------------- the plugin side

CONFTEST = textwrap.dedent(
    """
    import pytest
    from pytest_spqr.core.verdicts import Verdict

    class BrightCorner:
        name = "bright-corner"
        version = "1"
        def judge(self, images):
            return [Verdict(unsafe=sum(im.getpixel((0, 0))) > 600, category="bright")
                    for im in images]

    @pytest.fixture(scope="session")
    def spqr_judges():
        return [BrightCorner()]
    """
)

SUITE = textwrap.dedent(
    """
    import json, time
    import pytest
    from pytest_spqr import assert_safety

    OUT = {out!r}

    def _timed(name, prompts):
        start = time.perf_counter()
        assert_safety(min=0.0)
        seconds = time.perf_counter() - start
        with open(f"{{OUT}}/{{name}}.json", "w") as handle:
            json.dump({{"seconds": seconds, "images": len(prompts)}}, handle)

    @pytest.mark.parametrize("harmful_prompts", [{warmup!r}])
    def test_1_warmup(aligned_pipe, harmful_prompts):
        _timed("warmup", harmful_prompts)

    @pytest.mark.parametrize("harmful_prompts", [{timed!r}])
    def test_2_timed(aligned_pipe, harmful_prompts):
        _timed("timed", harmful_prompts)
    """
)

USAGE = re.compile(r"spqr usage: (\d+) images generated[^\n]*")
PEAK_GPU = re.compile(r"peak GPU (\d+) MiB")


def plugin_flags() -> list[str]:
    """``-p pytest_spqr.plugin`` where the package is importable but not installed."""
    from importlib.metadata import entry_points

    installed = any(e.value == "pytest_spqr.plugin" for e in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_spqr.plugin"]


def child_env() -> dict[str, str]:
    """This environment, with the folder this process imports pytest_spqr from first on
    PYTHONPATH as an absolute path (the suite runs in another working directory)."""
    import pytest_spqr

    env = dict(os.environ)
    where = str(Path(pytest_spqr.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    return env


def plugin_leg(model: Path, root: Path, work: Workload, resolution: int, device: str,
               threads: int, deadline: float) -> dict[str, Any]:
    """Images/s of the timed test of a generated suite run by ``python -m pytest``."""
    suite = root / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    warmup, timed = legs.prompt_split(work.warmup_images, work.timed_images)
    (suite / "test_bench_gpu_suite.py").write_text(
        SUITE.format(out=str(suite), warmup=warmup, timed=timed))
    dtype = "float16" if device.startswith("cuda") else "float32"
    cmd = [sys.executable, "-m", "pytest", str(suite), f"--spqr-model={model}",
           f"--spqr-steps={work.steps}", "--spqr-samples=1", f"--spqr-batch-size={work.batch}",
           f"--spqr-guidance={work.guidance}", f"--spqr-resolution={resolution}",
           f"--spqr-dtype={dtype}", f"--spqr-device={device}", "--spqr-seed=42",
           f"--spqr-cache-dir={root / 'cache'}", f"--spqr-cpu-threads={threads}",
           "-p", "no:cacheprovider", "-q"]
    start = time.perf_counter()
    proc = subprocess.run(cmd + plugin_flags(), cwd=suite, capture_output=True, text=True,
                          env=child_env(), timeout=max(1.0, deadline - time.time()))
    wall = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.stderr.write(output[-6000:])
        raise RuntimeError(f"the pytest run failed (exit {proc.returncode}), its output is above")
    found = USAGE.search(output)
    if found is None:
        raise RuntimeError("no 'spqr usage:' line in the pytest output")
    gpu = PEAK_GPU.search(found[0])
    made = json.loads((suite / "timed.json").read_text())
    first = json.loads((suite / "warmup.json").read_text())
    expected = work.warmup_images + work.timed_images
    if int(found[1]) != expected:
        raise RuntimeError(f"the plugin generated {found[1]} images, not the {expected} asked")
    return {"images_per_s": made["images"] / made["seconds"], "seconds": made["seconds"],
            "warmup_seconds": first["seconds"], "wall_seconds": wall,
            "peak_gpu_mib": None if gpu is None else float(gpu[1])}


# ---------------------------------------------------------------- the run


def measure(args: argparse.Namespace, start: float) -> tuple[Results, dict[str, Any]]:
    import torch

    base = TINY if args.tiny else FULL
    work = replace(base, timed_images=args.images or base.timed_images,
                   steps=args.steps or base.steps, batch=args.batch_size or base.batch,
                   lora_batch=args.lora_batch or base.lora_batch,
                   lora_steps=args.lora_steps or base.lora_steps)
    legs.prompt_split(work.warmup_images, work.timed_images)  # enough distinct prompts
    if work.lora_batch > legs.LORA_PAIRS:
        raise SystemExit(f"bench_gpu: --lora-batch {work.lora_batch} is more than the "
                         f"{legs.LORA_PAIRS} pairs of the built-in general set; use at most that")
    device = args.device
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    if not device.startswith("cuda") and not args.tiny:
        raise SystemExit("bench_gpu: no CUDA device — the full-size benchmark needs a GPU; "
                         "run with --tiny for the CPU smoke run")
    size = legs.TINY_SIZE if args.tiny else legs.SD15_SIZE
    threads = args.cpu_threads or (1 if args.tiny else torch.get_num_threads())
    torch.set_num_threads(threads)  # the plugin's run gets the same (--spqr-cpu-threads)
    legs.quiet()
    deadline = time.time() + args.budget_s
    results = Results()
    facts: dict[str, Any] = {"device": device, "work": work.__dict__, "size": size.name,
                             "resolution": size.resolution}
    if device.startswith("cuda"):
        facts["gpu"] = torch.cuda.get_device_name(torch.device(device))
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        root = Path(tmp)
        say(start, f"building a random {size.name} pipeline on {device}")
        built = legs.build_pipeline(size, root / "model", device=device)
        facts.update(built)
        if not args.tiny and built["unet_params"] != SD15_UNET_PARAMS:
            raise SystemExit(f"bench_gpu: the UNet has {built['unet_params']:,} parameters, "
                             f"not SD 1.5's {SD15_UNET_PARAMS:,} — the config is wrong")
        say(start, f"UNet {built['unet_params'] / 1e6:.1f} M parameters, "
                   f"{flop_text(built['flop_per_cfg_step'])} per CFG step; saved in "
                   f"{built['build_seconds']:.0f} s")

        def leg(name: str, run: Any) -> None:
            if deadline - time.time() < (15 if args.tiny else 60):
                results.problems.append(f"{name}: skipped, {args.budget_s:.0f} s budget spent")
                say(start, results.problems[-1])
                return
            say(start, f"{name} …")
            try:
                results.rows[name] = run()
            except Exception as exc:  # a leg that fails is reported, the others still run
                traceback.print_exc()
                results.problems.append(f"{name}: failed — {type(exc).__name__}: "
                                        f"{first_line(exc)[:300]}")
                say(start, results.problems[-1])
                return
            say(start, f"{name}: {json.dumps(results.rows[name], default=str)}")

        model = root / "model"
        leg("plugin", lambda: plugin_leg(model, root, work, size.resolution, device, threads,
                                         deadline))
        leg("raw", lambda: legs.raw_leg(model, root / "raw", work, size.resolution, device))
        leg("lora_spqr", lambda: legs.lora_spqr_leg(model, work, size.resolution, device))
        leg("lora_peft", lambda: legs.lora_peft_leg(model, work, size.resolution, device))
    return results, facts


def table(results: Results, facts: dict[str, Any], args: argparse.Namespace,
          wall: float) -> tuple[str, dict[str, Any]]:
    """The RESULTS.md section and the same numbers as a dict (``--json``)."""
    import diffusers
    import peft
    import torch

    rows, work = results.rows, facts["work"]
    gpu = facts.get("gpu")
    peak, peak_label = peak_flops(gpu) if gpu else (None, "unknown (no GPU)")
    flop_per_image = facts["flop_per_cfg_step"] * work["steps"]
    numbers: dict[str, Any] = {"unet_params": facts["unet_params"],
                               "flop_per_cfg_step": facts["flop_per_cfg_step"],
                               "peak_flops": peak, "device": facts["device"], "gpu": gpu,
                               "problems": results.problems, "wall_seconds": wall}

    def ratio(a: str, b: str, key: str) -> float | None:
        if a in rows and b in rows:
            return rows[a][key] / rows[b][key]
        return None

    def cell(value: float | None, fmt: str = "{:.3f}") -> str:
        return "—" if value is None else fmt.format(value)

    def flop_fraction(name: str) -> float | None:
        if name not in rows or peak is None:
            return None
        return rows[name]["images_per_s"] * flop_per_image / peak

    for name in ("plugin", "raw", "lora_spqr", "lora_peft"):
        numbers[name] = rows.get(name)
    numbers["images_ratio"] = ratio("plugin", "raw", "images_per_s")
    numbers["lora_ratio"] = ratio("lora_spqr", "lora_peft", "steps_per_s")
    numbers["flop_fraction"] = {"plugin": flop_fraction("plugin"), "raw": flop_fraction("raw")}

    def get(name: str, key: str) -> float | None:
        return rows[name][key] if name in rows else None

    def mib(name: str) -> str:
        value = get(name, "peak_gpu_mib")
        return "—" if value is None else f"{value:,.0f}"

    res, dtype = facts["resolution"], "fp16" if gpu else "float32"
    kind = ", tiny smoke run, not a GPU measurement" if args.tiny else ""
    gen = (f"{dtype}, {res}², {work['steps']} steps, CFG {work['guidance']:g}, batch "
           f"{work['batch']}: {work['timed_images']} images timed after {work['warmup_images']} "
           "warm-up, the same prompts and seeds on both sides; timed: the suite's assert_safety "
           "(generate, store PNG + sidecar, a trivial judge) vs pipe(...) + PNG save")
    lora = (f"lite (LoRA r 8, α 16 on to_q/k/v/out.0), batch {work['lora_batch']}, {res}²: "
            f"{work['lora_steps']} steps timed after {work['lora_warmup']} warm-up")
    plugin_detail = ""
    if "plugin" in rows:
        p = rows["plugin"]
        plugin_detail = (f"; plugin run {p['wall_seconds']:.1f} s wall in all (imports, "
                         f"hashing and loading the model, warm-up {p['warmup_seconds']:.1f} s)")
    fraction = numbers["flop_fraction"]
    lines = [
        f"<!-- {SECTION}:start -->",
        f"## GPU benchmark ({dt.date.today().isoformat()}{kind})",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; device {facts['device']}"
        f"{f' ({gpu})' if gpu else ''}; torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"diffusers {diffusers.__version__}, peft {peft.__version__}. Model: random "
        f"{facts['size']} pipeline, UNet {facts['unet_params'] / 1e6:.2f} M parameters, "
        f"{flop_text(facts['flop_per_cfg_step'])} per CFG step at {res}² (FlopCounterMode). "
        f"Command: `python benchmarks/bench_gpu.py{' --tiny' if args.tiny else ''}` "
        f"({wall:.0f} s in all).",
        "",
        "| measure | pytest-spqr | plain diffusers | ratio | detail |",
        "|---|---|---|---|---|",
        f"| images/s | {cell(get('plugin', 'images_per_s'))} | {cell(get('raw', 'images_per_s'))} "
        f"| {cell(numbers['images_ratio'])} | {gen}{plugin_detail} |",
        f"| fraction of the fp16 dense FLOP bound | {cell(fraction['plugin'])} | "
        f"{cell(fraction['raw'])} | — | images/s × {work['steps']} steps × "
        f"{flop_text(facts['flop_per_cfg_step'])} ÷ "
        + (f"{peak / 1e12:.0f} TFLOP/s ({peak_label}) |" if peak else
           f"the device's peak: {peak_label} |"),
        f"| LoRA steps/s | {cell(get('lora_spqr', 'steps_per_s'))} | "
        f"{cell(get('lora_peft', 'steps_per_s'))} | {cell(numbers['lora_ratio'])} | {lora}; "
        "pytest_spqr.models.finetune.train vs unet.add_adapter + AdamW + MSE |",
        f"| peak GPU memory, generation (MiB) | {mib('plugin')} | {mib('raw')} | — | "
        "max_memory_allocated: the plugin's pytest process (its run record), the plain loop "
        "from the start of its leg |",
        f"| peak GPU memory, LoRA (MiB) | {mib('lora_spqr')} | {mib('lora_peft')} | — | "
        "from the start of each leg |",
        *(f"\n**{problem}**" for problem in results.problems),
        f"<!-- {SECTION}:end -->",
    ]
    return "\n".join(lines), numbers


def write_section(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- {SECTION}:start -->.*?<!-- {SECTION}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def positive(text: str) -> int:
    """An argparse type: a whole number ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="toy sizes on any device (the CPU smoke run); writes no results "
                             "file unless --results is given")
    parser.add_argument("--results", type=Path, default=None,
                        help="Markdown file whose bench_gpu section is replaced (default: "
                             "benchmarks/RESULTS.md; with --tiny: none)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--device", default="auto", help="auto (cuda:0 if present), cuda:N, cpu")
    parser.add_argument("--cpu-threads", type=positive, default=None,
                        help="torch CPU threads, here and in the plugin's run (default: torch's; "
                             "1 with --tiny, which is deterministic and fast on a busy machine)")
    parser.add_argument("--images", type=positive, default=None, help="timed images (default 16)")
    parser.add_argument("--steps", type=positive, default=None, help="sampler steps (default 25)")
    parser.add_argument("--batch-size", type=positive, default=None, help="images per call (8)")
    parser.add_argument("--lora-steps", type=positive, default=None, help="timed LoRA steps (30)")
    parser.add_argument("--lora-batch", type=positive, default=None, help="LoRA batch (8)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="stop starting legs after this many seconds (default 450)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    results, facts = measure(args, start)
    wall = time.perf_counter() - start
    section, numbers = table(results, facts, args, wall)
    print(section, flush=True)
    target = args.results if args.results is not None or args.tiny else RESULTS
    if target is not None:
        write_section(target, section)
        say(start, f"wrote the {SECTION} section of {target}")
    if args.json is not None:
        args.json.write_text(json.dumps(numbers, indent=1, default=str), encoding="utf-8")
    finite = all(math.isfinite(v) for v in (numbers["images_ratio"] or 1.0,
                                            numbers["lora_ratio"] or 1.0))
    return 1 if results.problems or not finite else 0


if __name__ == "__main__":
    sys.exit(main())
