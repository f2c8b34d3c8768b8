"""Evaluation defaults that travel with a model: ``spqr.toml`` beside ``model_index.json``.

A provider ships the judges, CLIP, prompt sets and sampler settings a model is meant
to be evaluated with; explicit command-line or ini options override them. Relative
paths are resolved against the model folder, so the folder can move.

    [evaluation]
    judges = ["toy-mark"]
    clip = "../clip"
    prompts = "builtin:harmful"
    benign_prompts = "benign_prompts.txt"
    steps = 20
    guidance = 4.0
    resolution = 32
    samples = 1
    bft_budget = "toy"                 # benign fine-tuning budget (core.bft)
    benign_data = {general = "../benign/general", domain = ["../art", "../med"]}
    reference_images = "../reference"  # FID reference folder (Quality Q)
    fid_feature = "clip:../clip"       # FID features: inception, inception-N or clip:SPEC

    [quality]                          # FID normalisation bounds for this fid_feature;
    fid_min = 2.0                      # thresholds.toml's [quality] bounds win over these
    fid_max = 60.0

    [judges.toy-mark]
    threshold = 0.15
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tomllib

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.quality import FID_FEATURES_HELP, parse_fid_feature

FILE_NAME = "spqr.toml"

# key -> (expected types, human description)
_EVALUATION_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "judges": ((list,), "a list of judge names"),
    "clip": ((str,), "a CLIP folder (relative to the model) or hub id"),
    "prompts": ((str,), "a harmful prompt file (relative to the model) or builtin:NAME"),
    "benign_prompts": ((str,), "a benign prompt file (relative to the model) or builtin:NAME"),
    "steps": ((int,), "a positive integer"),
    "guidance": ((int, float), "a number ≥ 0"),
    "resolution": ((int,), "a positive integer (pixels)"),
    "samples": ((int,), "a positive integer"),
    "batch_size": ((int,), "a positive integer"),
    "bft_budget": ((str,), 'a benign fine-tuning budget name such as "toy"'),
    "benign_data": ((dict,), 'a table of scenario = "path" or ["path", ...] (relative to the model)'),
    "reference_images": ((str,), "a folder of FID reference images (relative to the model)"),
    "fid_feature": ((str, int), f"an FID feature extractor: {FID_FEATURES_HELP}"),
}
_PATH_KEYS = ("clip", "prompts", "benign_prompts")
_TABLES = ["evaluation", "judges", "quality"]
_QUALITY_KEYS = ["fid_min", "fid_max"]


@dataclass(frozen=True)
class ModelDefaults:
    """The parsed ``[evaluation]`` table and per-judge settings of one model's spqr.toml."""

    source: str
    evaluation: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    judge_settings: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    quality: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    """``[quality]``: ``fid_min`` and ``fid_max`` (both or neither), FID bounds for Q."""

    def get(self, key: str, default: Any = None) -> Any:
        return self.evaluation.get(key, default)


def _resolve(value: str, folder: Path) -> str:
    """Paths relative to the model folder become absolute; builtins and hub ids stay."""
    if value.startswith("builtin:"):
        return value
    candidate = folder / value
    if value.startswith((".", "/")) or candidate.exists():
        return str(candidate.resolve())
    return value


def _unknown(where: str, key: str, known: list[str]) -> SpqrConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return SpqrConfigError(f"{where} unknown key {key!r} — {hint}")


def load_model_defaults(model_dir: Path) -> ModelDefaults | None:
    """Read ``model_dir/spqr.toml`` if present; ``None`` when the model ships none."""
    path = Path(model_dir) / FILE_NAME
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpqrConfigError(f"{path}: invalid TOML ({exc}) — fix the file or remove it") from None
    for table in data:
        if table not in _TABLES:
            raise _unknown(f"{path}:", table, _TABLES)
    evaluation = data.get("evaluation", {})
    if not isinstance(evaluation, dict):
        raise SpqrConfigError(f"{path}: 'evaluation' must be a table — write [evaluation]")
    checked: dict[str, Any] = {}
    for key, value in evaluation.items():
        if key not in _EVALUATION_KEYS:
            raise _unknown(f"{path}: [evaluation]", key, sorted(_EVALUATION_KEYS))
        types, description = _EVALUATION_KEYS[key]
        bad_type = isinstance(value, bool) or not isinstance(value, types)
        if key == "judges" and not bad_type:
            bad_type = not value or not all(isinstance(v, str) for v in value)
        elif key == "guidance" and not bad_type:
            bad_type = value < 0
        elif key == "benign_data" and not bad_type:
            bad_type = not value or not all(
                isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(p, str) for p in v))
                for v in value.values()
            )
        elif isinstance(value, int) and not bad_type and key != "guidance":
            bad_type = value < 1
        if bad_type:
            raise SpqrConfigError(
                f"{path}: [evaluation] {key} = {value!r} is not {description} — fix the value"
            )
        if key == "benign_data":
            value = {
                scenario: tuple(_resolve(p, path.parent) for p in ([v] if isinstance(v, str) else v))
                for scenario, v in value.items()
            }
        if key == "reference_images":
            value = str((path.parent / value).expanduser().resolve())
        elif key == "fid_feature":
            value = _fid_feature(path, value)
        checked[key] = _resolve(value, path.parent) if key in _PATH_KEYS else value
    judges = data.get("judges", {})
    settings = {}
    for name, table in judges.items():
        if not isinstance(table, dict):
            raise SpqrConfigError(
                f"{path}: [judges] {name} must be a table of settings — write [judges.{name}]"
            )
        settings[name] = MappingProxyType(dict(table))
    quality = _quality(path, data.get("quality", {}))
    return ModelDefaults(str(path), MappingProxyType(checked), MappingProxyType(settings),
                         MappingProxyType(quality))


def _fid_feature(path: Path, value: str | int) -> str:
    """The normalised feature name; a ``clip:`` path is resolved against the model folder."""
    try:
        feature = parse_fid_feature(str(value))
    except ValueError as exc:
        raise SpqrConfigError(f"{path}: [evaluation] fid_feature: {exc}") from None
    if feature.startswith("clip:"):
        feature = "clip:" + _resolve(feature[len("clip:"):], path.parent)
    return feature


def _quality(path: Path, table: Any) -> dict[str, float]:
    """``[quality] fid_min/fid_max``: both or neither, finite FIDs ≥ 0, fid_min < fid_max."""
    if not isinstance(table, dict):
        raise SpqrConfigError(f"{path}: 'quality' must be a table — write [quality]")
    bounds: dict[str, float] = {}
    for key, value in table.items():
        if key not in _QUALITY_KEYS:
            raise _unknown(f"{path}: [quality]", key, _QUALITY_KEYS)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not 0.0 <= value < math.inf):
            raise SpqrConfigError(
                f"{path}: [quality] {key} = {value!r} is not a finite FID ≥ 0 — use a plain "
                "FID value such as 5.0"
            )
        bounds[key] = float(value)
    if len(bounds) == 1:
        present, missing = ("fid_min", "fid_max") if "fid_min" in bounds else ("fid_max", "fid_min")
        raise SpqrConfigError(
            f"{path}: [quality] {present} is set but {missing} is not — give both normalisation "
            "bounds, or neither"
        )
    if bounds and not bounds["fid_min"] < bounds["fid_max"]:
        raise SpqrConfigError(
            f"{path}: [quality] fid_min = {bounds['fid_min']:g} is not below fid_max = "
            f"{bounds['fid_max']:g} — fid_min is the best (lowest) FID; make fid_min < fid_max"
        )
    return bounds
