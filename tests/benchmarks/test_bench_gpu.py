"""The GPU benchmark's smoke run: ``benchmarks/bench_gpu.py --tiny`` takes every code path of
the real run (the random pipeline saved and loaded, the plugin's pytest run, the raw loop, both
LoRA loops, the FLOP count, the RESULTS.md section) at toy sizes, on whatever device is here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
START, END = "<!-- bench_gpu:start -->", "<!-- bench_gpu:end -->"


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_run_measures_every_leg_and_replaces_only_its_own_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(
        "# Benchmark results\n\n<!-- bench_suite:start -->\nsuite table\n<!-- bench_suite:end -->\n"
        f"\n{START}\nstale GPU table\n{END}\n\nReading notes.\n",
        encoding="utf-8",
    )
    numbers_file = tmp_path / "bench.json"

    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--results", str(results),
         "--json", str(numbers_file)],
        capture_output=True, text=True, timeout=900,
    )

    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "[bench_gpu" in run.stdout  # progress lines
    numbers = json.loads(numbers_file.read_text(encoding="utf-8"))
    assert numbers["problems"] == []
    for leg, key in (("plugin", "images_per_s"), ("raw", "images_per_s"),
                     ("lora_spqr", "steps_per_s"), ("lora_peft", "steps_per_s")):
        assert _positive(numbers[leg][key]), (leg, numbers[leg])
        assert _positive(numbers[leg]["seconds"]), (leg, numbers[leg])
    for key in ("images_ratio", "lora_ratio", "flop_per_cfg_step", "unet_params"):
        assert _positive(numbers[key]), (key, numbers[key])
    # the plugin's run loads the model, generates and judges: its wall time covers the timed part
    assert numbers["plugin"]["wall_seconds"] > numbers["plugin"]["seconds"]
    on_gpu = numbers["gpu"] is not None
    for leg in ("plugin", "raw", "lora_spqr", "lora_peft"):
        peak = numbers[leg]["peak_gpu_mib"]
        assert _positive(peak) if on_gpu else peak is None, (leg, peak)
    if numbers["peak_flops"] is None:
        assert numbers["flop_fraction"] == {"plugin": None, "raw": None}
    else:
        assert all(_positive(v) for v in numbers["flop_fraction"].values())

    text = results.read_text(encoding="utf-8")
    assert "stale GPU table" not in text
    assert text.count(START) == 1 and text.count(END) == 1
    assert "suite table" in text and text.rstrip().endswith("Reading notes.")
    section = text[text.index(START):text.index(END)]
    assert "tiny smoke run, not a GPU measurement" in section and "--tiny" in section
    images_row = next(line for line in section.splitlines() if line.startswith("| images/s |"))
    plugin_cell, raw_cell, ratio_cell = images_row.split("|")[2:5]
    assert float(plugin_cell) > 0 and float(raw_cell) > 0 and float(ratio_cell) > 0
    lora_row = next(line for line in section.splitlines() if line.startswith("| LoRA steps/s |"))
    assert all(float(cell) > 0 for cell in lora_row.split("|")[2:5])
