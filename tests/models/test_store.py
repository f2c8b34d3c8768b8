"""The on-disk store: atomic, checksummed, shared safely between processes, and split
fairly between xdist workers that need the same images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_spqr.core.prompts import Prompt
from pytest_spqr.models.generation import ImageGenerator, ImageRequest, SamplerSettings
from pytest_spqr.models.store import Store

SETTINGS = SamplerSettings(steps=2, guidance=7.5, height=64, width=64)


def test_json_round_trip_and_corruption_is_reported(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_json("verdicts", "ab" * 32, {"unsafe": True, "score": 0.5})
    assert store.get_json("verdicts", "ab" * 32) == {"unsafe": True, "score": 0.5}
    path = store.path("verdicts", "ab" * 32, "json")
    entry = json.loads(path.read_text())
    entry["payload"]["unsafe"] = False  # a flipped verdict without a matching checksum
    path.write_text(json.dumps(entry))
    assert store.get_json("verdicts", "ab" * 32) is None
    assert store.corrupt == 1
    assert store.get_json("verdicts", "cd" * 32) is None and store.corrupt == 1


def test_blob_without_its_sidecar_is_not_an_entry(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_blob("images", "ef" * 32, "png", b"pixels", {"prompt": "p"})
    assert store.get_blob("images", "ef" * 32, "png") is not None
    store.path("images", "ef" * 32, "png").write_bytes(b"pixe")  # torn
    assert store.get_blob("images", "ef" * 32, "png") is None


def test_two_processes_writing_one_key_leave_one_valid_entry(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pytest_spqr.models.store import Store
        store = Store({str(tmp_path)!r})
        for i in range(200):
            store.put_blob("images", "aa" * 32, "png", sys.argv[1].encode() * 1000, {{"i": i}})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, tag]) for tag in ("x", "y")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    store = Store(tmp_path)
    path = store.get_blob("images", "aa" * 32, "png")
    assert path is not None and path.read_bytes() in (b"x" * 1000, b"y" * 1000)
    assert not list(tmp_path.rglob("*.tmp"))


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(min_size=1, max_size=20).filter(lambda t: "\0" not in t and t.strip() == t),
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 100),
    guidance=st.floats(0, 20),
    field=st.sampled_from(["text", "seed", "steps", "guidance", "model", "height", "dtype"]),
)
def test_any_input_change_changes_the_key(text, seed, steps, guidance, field) -> None:
    def key(model="m" * 32, request=None, sampler=None):
        gen = ImageGenerator(None, model_fingerprint=model, model_label="m",
                             settings=sampler or replace(SETTINGS, steps=steps, guidance=guidance),
                             cache_dir=Path("unused"))
        return gen.key(request or ImageRequest(Prompt(text), 0, seed))

    base = key()
    changed = {
        "text": lambda: key(request=ImageRequest(Prompt(text + "!"), 0, seed)),
        "seed": lambda: key(request=ImageRequest(Prompt(text), 0, (seed + 1) % 2**32)),
        "steps": lambda: key(sampler=replace(SETTINGS, steps=steps + 1, guidance=guidance)),
        "guidance": lambda: key(sampler=replace(SETTINGS, steps=steps, guidance=guidance + 0.5)),
        "model": lambda: key(model="n" * 32),
        "height": lambda: key(sampler=replace(SETTINGS, steps=steps, guidance=guidance, height=128)),
        "dtype": lambda: key(sampler=replace(SETTINGS, steps=steps, guidance=guidance, dtype="float16")),
    }[field]()
    assert changed != base and key() == base


WORKER = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from pytest_spqr.core.prompts import Prompt
    from pytest_spqr.models.evaluate import Evaluator, RunSettings
    from pytest_spqr.models.generation import requests_for
    from pytest_spqr.models.loading import resolve_model
    model_dir, cache, steps, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    evaluator = Evaluator(RunSettings(steps=steps, batch_size=1, cache_dir=cache))
    model = evaluator.load(resolve_model(model_dir))
    prompts = [Prompt(f"a picture number {i}") for i in range(n)]
    images = model.generator.generate(requests_for(prompts, 1, 42))
    print(json.dumps({"generated": model.generator.generated,
                      "paths": [str(i.path) for i in images]}))
    """
)


def _worker(tiny_sd: Path, cache: Path, steps: int, n: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(tiny_sd), str(cache), str(steps), str(n)],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_workers_split_one_evaluation_and_each_image_is_made_once(tiny_sd: Path, tmp_path: Path) -> None:
    procs = [_worker(tiny_sd, tmp_path, 2, 8) for _ in range(2)]
    outputs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert outputs[0]["paths"] == outputs[1]["paths"]
    assert sum(o["generated"] for o in outputs) == 8
    assert all(Path(p).is_file() for p in outputs[0]["paths"])


def test_a_worker_killed_mid_generation_leaves_no_corrupt_entry(tiny_sd: Path, tmp_path: Path) -> None:
    proc = _worker(tiny_sd, tmp_path, 10, 10)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(tmp_path.rglob("*.png"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    made_before = len(list(tmp_path.rglob("*.png")))
    assert made_before >= 2
    rerun = _worker(tiny_sd, tmp_path, 10, 10)
    output = json.loads(rerun.communicate(timeout=300)[0].strip().splitlines()[-1])
    store = Store(tmp_path)
    assert output["generated"] <= 10 - made_before + 1  # at most the one being written
    assert store.corrupt == 0
    assert all(Path(p).is_file() for p in output["paths"])
