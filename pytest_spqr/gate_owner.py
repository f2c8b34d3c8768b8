"""Who decides each setting of a run: the gate owner, not the model under test.

For every setting — judges, judge settings (``[judges.X]``), prompts, CLIP, steps, guidance,
resolution, samples, FID reference, feature and bounds, benign fine-tuning budget and data —
the first of these that sets it wins:

1. the command line (``--spqr-steps``), then the ini file (``spqr_steps``);
2. the gate file, ``thresholds.toml`` (``[evaluation] steps``, ``[judges] use``,
   ``[judges.X]``, ``[quality] fid_min``…);
3. the model's own ``spqr.toml``, which may only fill in what the gate owner left unset;
4. the built-in default.

A model that would choose its own judges, or change a judge's settings, could weaken the
gate that tests it (a nudity detector is blind to other harms): that is refused at start-up
unless the gate owner opted in with ``[judges] from_model = true`` in thresholds.toml or
``--spqr-judges-from-model``. The header lists what the model's file filled in and what
the gate owner overrode, so a reader sees who decided the gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.evaluation import CHECKS, show
from pytest_spqr.core.model_defaults import ModelDefaults
from pytest_spqr.core.thresholds import Thresholds
from pytest_spqr.models.judge_settings import OPT_IN_HINT, JudgeSettings

GATE = "thresholds.toml"
MODEL = "spqr.toml"
OPTION = "option"


@dataclass(frozen=True)
class EvaluationLayers:
    """The ``[evaluation]`` values below the options: the gate file's, then the model's."""

    gate: Mapping[str, Any] = field(default_factory=dict)
    gate_file: str | None = None
    model: Mapping[str, Any] = field(default_factory=dict)
    model_file: str | None = None

    @classmethod
    def of(cls, thresholds: Thresholds, defaults: ModelDefaults | None) -> EvaluationLayers:
        return cls(thresholds.evaluation, thresholds.source,
                   defaults.evaluation if defaults is not None else {},
                   defaults.source if defaults is not None else None)

    def lookup(self, key: str) -> tuple[Any, str, str] | None:
        """``(value, source, file)`` from thresholds.toml, else the model's spqr.toml."""
        if key in self.gate:
            return self.gate[key], GATE, str(self.gate_file)
        if key in self.model:
            return self.model[key], MODEL, str(self.model_file)
        return None

    def pick(self, key: str, given: Mapping[str, Any], sources: dict[str, str],
             default: Any) -> Any:
        """The value of ``key`` by precedence, noting its source in ``sources``."""
        if key in given:
            sources[key] = OPTION
            return given[key]
        found = self.lookup(key)
        if found is None:
            sources[key] = "default"
            return default
        value, sources[key], _ = found
        return tuple(value) if isinstance(value, list) else value

    def benign_data(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """Scenario → (dataset specs, source): the gate file's scenarios over the model's."""
        data = {scenario: (tuple(specs), MODEL) for scenario, specs in
                self.model.get("benign_data", {}).items()}
        data.update({scenario: (tuple(specs), GATE) for scenario, specs in
                     self.gate.get("benign_data", {}).items()})
        return data


def choose_judges(given: Mapping[str, Any], thresholds: Thresholds,
                  defaults: ModelDefaults | None, default: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    """The judges and who chose them; a model's choice only with the gate owner's opt-in."""
    if "judges" in given:
        return tuple(given["judges"]), OPTION
    if thresholds.judges is not None:
        if not thresholds.judges:  # else every gate fails later, when its judges are built
            raise SpqrConfigError(f"{thresholds.source}: [judges] use = [] names no judge — "
                                  "name at least one, or leave use out for the default")
        return thresholds.judges, GATE
    if defaults is not None and "judges" in defaults.evaluation:
        named = tuple(defaults.evaluation["judges"])
        if not judges_from_model_allowed(given, thresholds):
            raise SpqrConfigError(
                f"{defaults.source}: [evaluation] judges = {show(list(named))}: a model may not "
                "choose the judges that gate it — name them with --spqr-judges or [judges] use "
                f"in thresholds.toml, {OPT_IN_HINT}"
            )
        return named, MODEL
    return default, "default"


def judges_from_model_allowed(given: Mapping[str, Any], thresholds: Thresholds) -> bool:
    return bool(given.get("judges_from_model")) or thresholds.judges_from_model


def model_report(given: Mapping[str, Any], thresholds: Thresholds, defaults: ModelDefaults | None,
                 judges_source: str, judge_settings: JudgeSettings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the model's spqr.toml filled in, and what of it the gate owner overrode
    (``key (source)``), in the order of :data:`CHECKS`."""
    if defaults is None:
        return (), ()
    filled: list[str] = []
    overridden: list[str] = []
    for key in CHECKS:
        if key not in defaults.evaluation:
            continue
        if key == "judges":
            source = None if judges_source == MODEL else judges_source
        else:
            source = OPTION if key in given else GATE if key in thresholds.evaluation else None
        if source is None:
            filled.append(key)
        else:
            overridden.append(f"{key} ({source})")
    if defaults.quality:
        if thresholds.fid_min is not None:
            overridden.append(f"fid bounds ({GATE})")
        else:
            filled.append("fid bounds")
    return ((*filled, *judge_settings.from_model), (*overridden, *judge_settings.overridden))
