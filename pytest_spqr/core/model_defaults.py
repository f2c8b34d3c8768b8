"""Evaluation defaults that travel with a model: ``spqr.toml`` beside ``model_index.json``.

A provider ships the CLIP, prompt sets and sampler settings a model is meant to be
evaluated with. The model under test does not own its gate: the command line, the ini
file and thresholds.toml win over every key, and the judges (with their ``[judges.X]``
settings) are used only where the gate owner opted in (``[judges] from_model = true``;
see :mod:`pytest_spqr.gate_owner`). Values are checked by the same functions as the
options (:mod:`pytest_spqr.core.evaluation`). Relative paths are resolved against the
model folder, so the folder can move.

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

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.evaluation import parse_evaluation, unknown_key

FILE_NAME = "spqr.toml"

_TABLES = ["evaluation", "judges", "quality"]
_QUALITY_KEYS = ["fid_min", "fid_max"]


@dataclass(frozen=True)
class ModelDefaults:
    """The parsed ``[evaluation]`` table and per-judge settings of one model's spqr.toml."""

    source: str
    evaluation: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    judge_settings: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    quality: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """``[quality]``: ``fid_min`` and ``fid_max`` (both or neither), FID bounds for Q."""

    def get(self, key: str, default: Any = None) -> Any:
        return self.evaluation.get(key, default)


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
            raise unknown_key(f"{path}:", table, _TABLES)
    checked = parse_evaluation(data.get("evaluation", {}), path)
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


def _quality(path: Path, table: Any) -> dict[str, float]:
    """``[quality] fid_min/fid_max``: both or neither, finite FIDs ≥ 0, fid_min < fid_max."""
    if not isinstance(table, dict):
        raise SpqrConfigError(f"{path}: 'quality' must be a table — write [quality]")
    bounds: dict[str, float] = {}
    for key, value in table.items():
        if key not in _QUALITY_KEYS:
            raise unknown_key(f"{path}: [quality]", key, _QUALITY_KEYS)
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
