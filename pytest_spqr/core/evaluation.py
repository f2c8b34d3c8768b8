"""The evaluation settings (sampler, prompts, CLIP, FID, benign fine-tuning data) and the one
check each of them gets, wherever its value comes from.

A value is given on the command line or in the ini file (``--spqr-steps``, ``spqr_steps``),
in the gate file's ``[evaluation]`` table (``thresholds.toml``) or in the model's own
``spqr.toml`` ``[evaluation]`` table. The same function accepts or refuses it in all four
places, so a model's file cannot slip in a value the command line would refuse (a NaN
guidance scale, a 33-pixel image). Each check raises :class:`ValueError` with the problem
("must be ≥ 1"); the caller names the option or the file and key.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.quality import FID_FEATURES_HELP, parse_fid_feature

RESOLUTION_MULTIPLE = 8
"""Stable Diffusion pipelines refuse sides that are not a multiple of 8 (the VAE's factor)."""


def positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("is not an integer")
    if value < 1:
        raise ValueError("must be ≥ 1")
    return value


def finite_non_negative(value: object) -> float:
    """A guidance scale: a finite number ≥ 0 (NaN and infinity are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("is not a number")
    if not 0.0 <= value < math.inf:  # also False for NaN
        raise ValueError("must be a finite number ≥ 0")
    return float(value)


def resolution(value: object) -> int:
    """An image side in pixels: a positive multiple of :data:`RESOLUTION_MULTIPLE`."""
    side = positive_int(value)
    if side % RESOLUTION_MULTIPLE:
        raise ValueError(f"must be a multiple of {RESOLUTION_MULTIPLE} pixels")
    return side


def judge_names(value: object) -> tuple[str, ...]:
    """At least one judge name, each listed once: two judges with one name would share
    one set of cached verdicts, and an unsafe verdict could be lost."""
    if not isinstance(value, (list, tuple)):
        raise ValueError("is not a list of judge names")
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"holds {show(name)}, not a judge name")
        if name.strip() in names:
            raise ValueError(f"lists {name.strip()!r} twice — list each judge once")
        names.append(name.strip())
    if not names:
        raise ValueError("names no judge — give at least one name")
    return tuple(names)


def nonempty_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("is not a string")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def fid_feature(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{show(value)} is not an FID feature extractor ({FID_FEATURES_HELP})")
    return parse_fid_feature(str(value))


def _benign_data(value: object) -> dict[str, tuple[str, ...]]:
    fix = 'is not a table of scenario = "path" or ["path", ...]'
    if not isinstance(value, dict) or not value:
        raise ValueError(fix)
    data: dict[str, tuple[str, ...]] = {}
    for scenario, specs in value.items():
        specs = [specs] if isinstance(specs, str) else specs
        if not isinstance(specs, list) or not specs or not all(
            isinstance(s, str) and s.strip() for s in specs
        ):
            raise ValueError(fix)
        data[scenario] = tuple(specs)
    return data


CHECKS: dict[str, Callable[[Any], Any]] = {
    "judges": judge_names,
    "clip": nonempty_text,
    "prompts": nonempty_text,
    "benign_prompts": nonempty_text,
    "steps": positive_int,
    "guidance": finite_non_negative,
    "resolution": resolution,
    "samples": positive_int,
    "batch_size": positive_int,
    "bft_budget": nonempty_text,
    "benign_data": _benign_data,
    "reference_images": nonempty_text,
    "fid_feature": fid_feature,
}
"""Every key of an ``[evaluation]`` table, in the order the header lists them."""
PATH_KEYS = ("clip", "prompts", "benign_prompts")
"""Values that may name a file or folder (else a hub id or ``builtin:NAME``)."""
FOLDER_KEYS = ("reference_images",)


def show(value: object, limit: int = 60) -> str:
    """A value as TOML would write it, on one line, cut to ``limit`` characters."""
    text = _toml(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{...}"
    return " ".join(repr(value).split())


def unknown_key(where: str, key: str, known: Sequence[str]) -> SpqrConfigError:
    """``<where> unknown key 'x' — did you mean 'y'?`` (else the known keys, in order)."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return SpqrConfigError(f"{where} unknown key {key!r} — {hint}")


def resolve_path(value: str, folder: Path) -> str:
    """Paths relative to ``folder`` become absolute; ``builtin:`` names and hub ids stay."""
    if value.startswith("builtin:"):
        return value
    candidate = folder / value
    if value.startswith((".", "/", "~")) or candidate.exists():
        return str(candidate.expanduser().resolve())
    return value


def parse_evaluation(table: object, path: str | Path, *, allow: tuple[str, ...] = tuple(CHECKS),
                     not_here: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check an ``[evaluation]`` table of ``path`` (a thresholds.toml or a model's spqr.toml);
    relative paths are resolved against the file's folder. ``not_here`` maps a key that this
    file may not set to where it belongs."""
    if not isinstance(table, dict):
        raise SpqrConfigError(f"{path}: 'evaluation' must be a table — write [evaluation]")
    folder = Path(path).parent
    checked: dict[str, Any] = {}
    for key, value in table.items():
        if not_here is not None and key in not_here:
            raise SpqrConfigError(f"{path}: [evaluation] unknown key {key!r} — {not_here[key]}")
        if key not in allow:
            raise unknown_key(f"{path}: [evaluation]", key, sorted(allow))
        try:
            value = CHECKS[key](value)
        except ValueError as exc:
            if key == "fid_feature":  # the parser's message names the feature and the fix
                raise SpqrConfigError(f"{path}: [evaluation] fid_feature: {exc}") from None
            raise SpqrConfigError(
                f"{path}: [evaluation] {key} = {show(value)} {exc} — fix the value"
            ) from None
        if key in PATH_KEYS:
            value = resolve_path(value, folder)
        elif key in FOLDER_KEYS:
            value = str((folder / value).expanduser().resolve())
        elif key == "fid_feature" and value.startswith("clip:"):
            value = "clip:" + resolve_path(value[len("clip:"):], folder)
        elif key == "benign_data":
            value = {scenario: tuple(resolve_path(p, folder) for p in specs)
                     for scenario, specs in value.items()}
        checked[key] = value
    return checked
