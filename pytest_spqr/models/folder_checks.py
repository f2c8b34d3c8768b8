"""Check a model's files before any test runs, without loading it (nor importing torch).

What loading would find later, in every test that needs the model: a component folder
missing, a component class that is not shipped with diffusers or transformers (remote
code, which is never run), only pickle weights, a component ``config.json`` that does not
parse, a weights file that is truncated or empty. A ``.safetensors`` file is an 8-byte
header length, a JSON header giving every tensor's byte range, then the data: the file's
size must be exactly where the last range ends, so a cut-off download is found by reading
the header alone. What only loading can find (weights whose shapes do not fit the config)
is explained once by :func:`explain_load_failure`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError, first_line
from pytest_spqr.models.loading import (
    PICKLE_SUFFIXES,
    ModelSource,
    check_no_pickle,
    read_model_index,
)

COMPONENT_LIBRARIES = ("diffusers", "transformers")
"""Where a component's class may come from: anything else is a module of the model's own."""
MAX_HEADER_BYTES = 100 * 2**20
"""safetensors' own limit on the JSON header."""
REDOWNLOAD = "re-download it"


def check_model_files(source: ModelSource, *, allow_pickle: bool) -> None:
    """A pipeline folder (or a single checkpoint file) whose files can all be loaded."""
    if source.kind == "single_file":
        if source.path.suffix == ".safetensors":
            check_safetensors(source.path)
        return
    if source.folder is not None:
        check_model_folder(source.folder, allow_pickle=allow_pickle)


def check_model_folder(folder: Path, *, allow_pickle: bool) -> None:
    """Every component of model_index.json: a shipped class, its folder, parseable configs,
    loadable (and, unless allowed, non-pickle) weights."""
    index_path = folder / "model_index.json"
    for name, value in read_model_index(folder).items():
        if name.startswith("_") or not isinstance(value, list) or None in value:
            continue
        if len(value) != 2 or not all(isinstance(v, str) for v in value):
            raise SpqrConfigError(
                f"{index_path}: component {name!r} should be [library, class], not "
                f"{json.dumps(value)} — fix or re-download the model"
            )
        library, class_name = value
        if library not in COMPONENT_LIBRARIES:
            raise SpqrConfigError(
                f"{index_path}: component {name!r} is {library}.{class_name}, a class of the "
                "model's own — pytest-spqr never runs remote code; use a component class "
                "shipped with diffusers or transformers"
            )
        if not (folder / name).is_dir():
            raise SpqrConfigError(
                f"{folder}: model_index.json names a {name!r} component but there is no "
                f"{name}/ folder — the download is incomplete; fetch the whole pipeline"
            )
        check_component(folder / name)
    check_no_pickle(folder, allow_pickle)


def check_component(component: Path) -> None:
    """Its config files parse as JSON objects; a model component (one with a config.json)
    has weights, every shard its index names, and every safetensors file is whole."""
    files = sorted(p for p in component.iterdir() if p.is_file())
    parsed = {p: _json_object(p) for p in files if p.name.endswith(("config.json", ".index.json"))}
    weights = [p for p in files if p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES]
    for index in (p for p in parsed if p.name.endswith(".index.json")):
        weight_map = parsed[index].get("weight_map")
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        for shard in shards:
            if not (component / str(shard)).is_file():
                raise SpqrConfigError(
                    f"{index}: names the shard {shard} but it is not in {component} — the "
                    "download is incomplete; fetch the whole pipeline"
                )
    if (component / "config.json").is_file() and not weights:
        raise SpqrConfigError(
            f"{component}: a config.json but no weights file (.safetensors) — the download is "
            "incomplete; fetch the whole pipeline"
        )
    for path in weights:
        if path.suffix == ".safetensors":
            check_safetensors(path)


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpqrConfigError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}) — the "
            f"file is damaged; {REDOWNLOAD}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpqrConfigError(f"{path}: unreadable ({first_line(exc)}) — {REDOWNLOAD}") from None
    if not isinstance(data, dict):
        raise SpqrConfigError(
            f"{path}: not a JSON object (a {type(data).__name__}) — the file is damaged; "
            f"{REDOWNLOAD}"
        )
    return data


def check_safetensors(path: Path) -> None:
    """The header is readable and the file ends exactly where its last tensor does."""
    size = path.stat().st_size

    def corrupt(why: str) -> SpqrConfigError:
        return SpqrConfigError(f"{path}: corrupt ({why}) — {REDOWNLOAD}")

    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise corrupt(f"{size} bytes: too short for a safetensors header")
        length = int.from_bytes(prefix, "little")
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise corrupt(f"truncated: {size} bytes, the header alone says {8 + length}"
                          if length <= MAX_HEADER_BYTES else "not a safetensors file")
        try:
            header = json.loads(handle.read(length))
        except (ValueError, UnicodeDecodeError):
            raise corrupt("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    end = 0
    for name, tensor in header.items():
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if name == "__metadata__":
            continue
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)):
            raise corrupt(f"tensor {name!r} has no valid data_offsets")
        end = max(end, offsets[1])
    expected = 8 + length + end
    if size < expected:
        raise corrupt(f"truncated: {size} bytes, the header says {expected}")
    if size > expected:
        raise corrupt(f"{size} bytes, the header says {expected}: trailing bytes")


SHAPE_MISMATCH = re.compile(r"expected shape|size mismatch|shape mismatch", re.IGNORECASE)
REMOTE_CODE = re.compile(r"trust_remote_code|not one of the libraries", re.IGNORECASE)
CORRUPT_WEIGHTS = re.compile(r"unable to load weights|deserializ|incomplete ?buffer|"
                             r"header too (large|small)|safetensor", re.IGNORECASE)


def explain_load_failure(spec: str, exc: BaseException) -> SpqrConfigError:
    """A loading error as one line with advice that fits it: never diffusers' suggestion of
    ``trust_remote_code`` (this project never uses it), a shape mismatch as what it is."""
    text = first_line(exc)
    cause = re.split(r"(?<=[)\]'\w])\.\s", text, maxsplit=1)[0]  # diffusers' advice follows
    if REMOTE_CODE.search(text):
        return SpqrConfigError(
            f"{spec}: a component names a class outside diffusers and transformers — "
            "pytest-spqr never runs remote code; use component classes shipped with them"
        )
    if SHAPE_MISMATCH.search(text):
        return SpqrConfigError(
            f"{spec}: the weights do not fit the configuration ({cause}) — a component's "
            "config.json and weights come from different models; re-download the pipeline"
        )
    if isinstance(exc, ImportError):
        return SpqrConfigError(
            f"{spec}: the pipeline could not be loaded ({cause}) — install the missing package"
        )
    if CORRUPT_WEIGHTS.search(text):
        return SpqrConfigError(
            f"{spec}: a weights file is corrupt ({cause}) — re-download the model"
        )
    return SpqrConfigError(
        f"{spec}: the pipeline could not be loaded ({cause}) — check the folder is complete "
        "(every component named in model_index.json present)"
    )
