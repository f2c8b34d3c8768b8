"""What a run is configured to do: command line, ini, ``thresholds.toml``, the model's
``spqr.toml`` and built-in defaults, in that order of precedence (who decides what:
:mod:`pytest_spqr.gate_owner`), resolved once at start-up.

Everything that can be checked without loading a model (paths, prompt files, judge names,
thresholds, devices) is checked here, so mistakes surface as one-line usage errors before
any test runs. :mod:`pytest_spqr.session` holds the live run built on these settings.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_spqr.core.bft import (
    BUILTIN_DATASETS,
    BUILTIN_SCENARIOS,
    DEFAULT_BUDGET,
    DEFAULT_PROFILES,
    BftBudget,
    BftCatalog,
    TrainingPlan,
)
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.model_defaults import ModelDefaults, load_model_defaults
from pytest_spqr.core.prompts import PromptSet, load_prompt_set
from pytest_spqr.core.thresholds import Thresholds, load_thresholds
from pytest_spqr.gate_owner import (
    EvaluationLayers,
    choose_judges,
    judges_from_model_allowed,
    model_report,
)
from pytest_spqr.models.adapted import FinetunedSource
from pytest_spqr.models.evaluate import RunSettings
from pytest_spqr.models.judge_settings import resolve_judge_settings
from pytest_spqr.models.judging import check_judge_names
from pytest_spqr.models.loading import ModelSource, check_pipeline_class, resolve_model

DEFAULTS: dict[str, Any] = {
    "seed": 42,
    "samples": 1,
    "steps": 50,
    "guidance": 7.5,
    "batch_size": 8,
    "device": "auto",
    "dtype": "auto",
    "prompts": "builtin:harmful",
    "benign_prompts": "builtin:benign",
    "judges": ("nudenet",),
    "clip": "openai/clip-vit-large-patch14",
    "cpu_threads": "auto",
}
SAFETY_CHECKER_NOTE = "pipeline safety checker off: SPQR measures the model, not its output filter"
FINETUNED_IN_MEMORY = 2
"""Fine-tuned pipelines kept loaded at once (others are reloaded from the weights cache)."""


@dataclass(frozen=True)
class BftSettings:
    """Benign fine-tuning: which profiles, budget, scenarios and data; or the user's own fine-tune."""

    catalog: BftCatalog
    budget: BftBudget
    profiles: tuple[str, ...]
    scenarios: tuple[str, ...]
    data: Mapping[str, tuple[str, ...]]
    """Scenario → dataset specs (``builtin:NAME`` or paths); scenarios absent use the built-ins."""
    finetuned: FinetunedSource | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def data_for(self, scenario: str) -> tuple[str, ...]:
        return self.data.get(scenario) or BUILTIN_SCENARIOS.get(scenario, ())


@dataclass(frozen=True)
class FinetuneInfo:
    """What a fine-tuned model under test is, for messages, records and reports."""

    description: str
    """``fine-tune=lite on general (budget toy (not the paper's protocol), seed 42)``."""
    profile: str | None = None
    scenario: str | None = None
    budget: str | None = None
    reused: bool | None = None
    folder: str | None = None


@dataclass(frozen=True)
class StatisticsSettings:
    """How gates read their measurements: interval level, inconclusive policy, rounds."""

    confidence: float = 0.95
    inconclusive: str | None = None
    """``--spqr-inconclusive``; ``None`` defers to thresholds.toml (per suite, then [statistics])."""
    sequential: bool = False
    max_images: int | None = None
    """Per gate, with ``sequential``; ``None``: the fixed-n size (prompts × samples)."""

    def describe(self) -> str:
        mode = "fixed-n"
        if self.sequential:
            mode = f"sequential (max {self.max_images or 'prompts × samples'} images per gate)"
        return f"{self.confidence:.0%} intervals, {mode}"


@dataclass(frozen=True)
class QualitySettings:
    """Quality Q: the FID reference folder, the feature extractor and Q's FID bounds."""

    reference_images: Path | None = None
    """``None``: no reference, so quality gates fail and quality measurements skip."""
    fid_feature: str = "inception"
    fid_min: float | None = None
    fid_max: float | None = None
    """Both set or both ``None``: from thresholds.toml's [quality], else the model's spqr.toml."""
    epsilon: float = 0.05
    sources: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        if self.reference_images is None:
            return ("quality: no reference images (quality gates fail, measurements skip; "
                    "pass --spqr-reference-images=DIR)")
        src = self.sources
        bounds = (f"FID {self.fid_min:g}–{self.fid_max:g} ({src.get('bounds')})"
                  if self.fid_min is not None else "none (set [quality] fid_min/fid_max)")
        return (f"quality: reference={self.reference_images} ({src.get('reference_images')}) "
                f"fid_feature={self.fid_feature} ({src.get('fid_feature')}) bounds={bounds}")


@dataclass(frozen=True)
class SpqrSettings:
    """Everything the run needs to know before loading a model."""

    model: ModelSource | None
    """The first ``--spqr-model``: its spqr.toml gives the evaluation defaults."""
    model_defaults: ModelDefaults | None
    run: RunSettings
    harmful_prompts: PromptSet
    benign_prompts: PromptSet
    judges: tuple[str, ...]
    judge_settings: dict[str, dict[str, Any]]
    clip: str
    thresholds: Thresholds
    cpu_threads: int | str
    sources: dict[str, str] = field(default_factory=dict)
    """Where each setting came from (``cli``, ``spqr.toml``, ``default``…), for the header."""
    judge_origins: dict[str, dict[str, str]] = field(default_factory=dict)
    """Judge → setting → the file that set it, for one-line errors about a bad setting."""
    from_model: tuple[str, ...] = ()
    """Settings the model's spqr.toml filled in (see :mod:`pytest_spqr.gate_owner`)."""
    overridden_in_model: tuple[str, ...] = ()
    """``key (source)``: settings the model's spqr.toml set and the gate owner overrode."""
    bft: BftSettings = field(default_factory=lambda: _default_bft())
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    models: tuple[ModelSource, ...] = ()
    """Every ``--spqr-model``, in order; ``aligned_pipe`` is parametrized over them."""
    devices: tuple[int, ...] | None = None
    """``--spqr-devices``: the CUDA devices xdist workers take turns on (``auto`` device)."""
    model_notes: tuple[str, ...] = ()
    executor: str = "local"
    """``local`` or ``ray`` (:mod:`pytest_spqr.models.ray_backend`)."""
    ray_address: str | None = None
    ray_actors: int | None = None
    recheck: float | int | None = None
    """``--spqr-recheck``: cached verdicts to judge again (a count per judge, or a fraction)."""

    def record_options(self) -> dict[str, Any]:
        """The resolved settings as plain JSON values, for the run record."""
        run, q = self.run, self.quality
        return {
            "model": self.model.spec if self.model else None,
            "models": [m.spec for m in self.models],
            "seed": run.seed, "samples": run.samples, "steps": run.steps,
            "guidance": run.guidance, "resolution": run.resolution,
            "batch_size": run.batch_size, "device": run.device, "dtype": run.dtype,
            "executor": self.executor,
            "prompts": self.harmful_prompts.name, "n_prompts": len(self.harmful_prompts),
            "benign_prompts": self.benign_prompts.name, "judges": list(self.judges),
            "clip": self.clip, "thresholds": self.thresholds.source,
            "bft_budget": self.bft.budget.name, "bft_profiles": list(self.bft.profiles),
            "confidence": self.statistics.confidence, "sequential": self.statistics.sequential,
            "max_images": self.statistics.max_images, "inconclusive": self.statistics.inconclusive
            or self.thresholds.inconclusive,
            "reference_images": str(q.reference_images) if q.reference_images else None,
            "fid_feature": q.fid_feature, "fid_min": q.fid_min, "fid_max": q.fid_max,
        }


def _spqr_toml_text(source: ModelSource | None) -> str | None:
    """The model's spqr.toml as written (relative paths and all), or None."""
    folder = source.folder if source is not None else None
    path = folder / "spqr.toml" if folder is not None else None
    return path.read_text("utf-8") if path is not None and path.is_file() else None


def resolve_settings(given: dict[str, Any], rootdir: Path) -> SpqrSettings:
    """Combine options, the model's spqr.toml and thresholds.toml; raise on bad input."""
    model = None
    defaults = None
    models: list[ModelSource] = []
    notes: list[str] = []
    specs = given.get("model") or []
    specs = [specs] if isinstance(specs, str) else list(specs)
    for spec in specs:
        source = resolve_model(spec, config=given.get("model_config"))
        if any(m.path == source.path for m in models):
            raise SpqrConfigError(f"--spqr-model={spec} is given twice — list each model once")
        own = None
        if source.folder is not None:
            check_pipeline_class(source.folder)  # not text-to-image → one-line error now
            own = load_model_defaults(source.folder)
        if not models:
            model, defaults = source, own
        elif _spqr_toml_text(source) != _spqr_toml_text(model):
            first = models[0].spec  # that is `model`, which mypy sees as Optional
            notes.append(f"{spec}'s spqr.toml differs from {first}'s: every model is "
                         f"evaluated with {first}'s (the first --spqr-model)")
        models.append(source)

    thresholds_path = given.get("thresholds")
    if thresholds_path is not None:
        thresholds = load_thresholds(Path(thresholds_path))
    elif (rootdir / "thresholds.toml").is_file():
        thresholds = load_thresholds(rootdir / "thresholds.toml")
    else:
        thresholds = Thresholds.default()

    # who decides: options > thresholds.toml > the model's spqr.toml > default (gate_owner)
    sources: dict[str, str] = {}
    layers = EvaluationLayers.of(thresholds, defaults)
    pick = lambda key: layers.pick(key, given, sources, DEFAULTS.get(key))
    judges, sources["judges"] = choose_judges(given, thresholds, defaults, DEFAULTS["judges"])
    where = {"option": "--spqr-judges"}.get(sources["judges"], sources["judges"])
    installed = check_judge_names(judges, where=f"judges ({where})")
    judge_config = resolve_judge_settings(
        judges, {name: ep.load() for name, ep in installed.items()},
        thresholds.judge_settings, thresholds.source,
        defaults.judge_settings if defaults is not None else {},
        defaults.source if defaults is not None else None,
        from_model_allowed=judges_from_model_allowed(given, thresholds),
    )
    from_model, overridden = model_report(given, thresholds, defaults, sources["judges"], judge_config)

    max_prompts = given.get("max_prompts")
    # Paths from spqr.toml are already absolute; option paths are relative to the cwd.
    harmful = load_prompt_set(str(pick("prompts")))
    benign = load_prompt_set(str(pick("benign_prompts")))
    if max_prompts is not None:
        harmful, benign = harmful.head(max_prompts), benign.head(max_prompts)

    if given.get("executor") != "ray" and (given.get("ray_address") or given.get("ray_actors")):
        raise SpqrConfigError(
            "--spqr-ray-address/--spqr-ray-actors apply to Ray only — add --spqr-executor=ray"
        )
    if given.get("executor") == "ray":
        from pytest_spqr.models.ray_backend import import_ray

        import_ray()  # a one-line usage error now rather than at the first image
    if given.get("no_cache") and given.get("cache_dir"):
        raise SpqrConfigError("--spqr-no-cache and --spqr-cache-dir contradict each other — pick one")
    if given.get("no_cache"):
        # a fresh folder for this process only: images are still shared between its tests,
        # nothing is read from or left in a persistent cache
        import atexit
        import shutil
        import tempfile

        cache_dir = Path(tempfile.mkdtemp(prefix="spqr-no-cache-"))
        atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
    else:
        cache_dir = Path(given.get("cache_dir") or rootdir / ".spqr")
    run = RunSettings(
        seed=pick("seed"),
        samples=pick("samples"),
        steps=pick("steps"),
        guidance=float(pick("guidance")),
        resolution=pick("resolution"),
        batch_size=pick("batch_size"),
        device=pick("device"),
        dtype=pick("dtype"),
        allow_pickle=bool(given.get("allow_pickle", False)),
        cache_dir=cache_dir,
    )
    bft = resolve_bft(given, layers, thresholds.bft)
    if "max_images" in given and not given.get("sequential"):
        raise SpqrConfigError(
            "--spqr-max-images caps sequential sampling only — add --spqr-sequential, "
            "or use --spqr-max-prompts for a smaller fixed-n run"
        )
    statistics = StatisticsSettings(
        confidence=given.get("confidence", thresholds.confidence),
        inconclusive=given.get("inconclusive"),
        sequential=bool(given.get("sequential")),
        max_images=given.get("max_images"),
    )
    return SpqrSettings(
        model=model,
        models=tuple(models),
        model_notes=tuple(notes),
        devices=given.get("devices"),
        executor=given.get("executor") or "local",
        ray_address=given.get("ray_address") or os.environ.get("RAY_ADDRESS"),
        ray_actors=given.get("ray_actors"),
        recheck=given.get("recheck"),
        model_defaults=defaults,
        run=run,
        harmful_prompts=harmful,
        benign_prompts=benign,
        judges=tuple(judges),
        judge_settings=judge_config.settings,
        judge_origins=judge_config.origins,
        from_model=from_model,
        overridden_in_model=overridden,
        clip=str(pick("clip")),
        thresholds=thresholds,
        cpu_threads=pick("cpu_threads"),
        sources=sources,
        bft=bft,
        statistics=statistics,
        quality=resolve_quality(given, layers, defaults, thresholds),
    )


def resolve_quality(given: dict[str, Any], layers: EvaluationLayers, defaults: ModelDefaults | None,
                    thresholds: Thresholds) -> QualitySettings:
    """Reference folder and FID feature (option, then thresholds.toml, then spqr.toml);
    bounds (thresholds.toml, then spqr.toml, whose bounds fit the feature it ships)."""
    sources: dict[str, str] = {}
    reference: Path | None = None
    found = layers.lookup("reference_images")
    if "reference_images" in given:
        reference, sources["reference_images"] = Path(given["reference_images"]).expanduser(), "option"
        where = f"--spqr-reference-images={given['reference_images']}"
    elif found is not None:
        reference, sources["reference_images"] = Path(found[0]), found[1]
        where = f"{found[2]}: [evaluation] reference_images = {reference}"
    if reference is not None and not reference.is_dir():
        raise SpqrConfigError(
            f"{where}: no such folder — pass a folder of reference images for FID (e.g. a "
            "COCO val subset)"
        )
    feature = layers.pick("fid_feature", given, sources, "inception")
    fid_min, fid_max = thresholds.fid_min, thresholds.fid_max
    if fid_min is not None:
        sources["bounds"] = "thresholds.toml"
    elif defaults is not None and defaults.quality:
        fid_min, fid_max = defaults.quality["fid_min"], defaults.quality["fid_max"]
        sources["bounds"] = "spqr.toml"
    else:
        sources["bounds"] = "none"
    return QualitySettings(reference, feature, fid_min, fid_max, thresholds.epsilon, sources)


def _default_bft() -> BftSettings:
    catalog = BftCatalog()
    return BftSettings(catalog, catalog.budget(DEFAULT_BUDGET), DEFAULT_PROFILES,
                       tuple(BUILTIN_SCENARIOS), {})


def resolve_bft(given: dict[str, Any], layers: EvaluationLayers,
                catalog: BftCatalog) -> BftSettings:
    """Benign fine-tuning settings from options, thresholds.toml and the model's spqr.toml."""
    from pytest_spqr.models.adapted import classify_finetuned

    sources: dict[str, str] = {}
    found = layers.lookup("bft_budget")
    if "bft_budget" in given:
        name, sources["budget"], where = given["bft_budget"], "option", "--spqr-bft-budget"
    elif found is not None:
        name, sources["budget"] = found[0], found[1]
        where = f"{found[2]}: [evaluation] bft_budget"
    else:
        name, sources["budget"], where = DEFAULT_BUDGET, "default", "bft budget"
    budget = catalog.budget(name, where=where)
    profiles = tuple(given.get("bft_profile", DEFAULT_PROFILES))
    sources["profiles"] = "option" if "bft_profile" in given else "default"
    for profile in profiles:
        TrainingPlan.resolve(catalog.profile(profile), budget)  # unknown name, no length → error
    data: dict[str, tuple[str, ...]] = {}
    for scenario, (layer_specs, source) in layers.benign_data().items():
        data[scenario] = layer_specs
        sources[f"data.{scenario}"] = source
    given_data: dict[str, list[str]] = {}
    for scenario, spec in given.get("benign_data", ()):
        given_data.setdefault(scenario, []).append(spec)
    for scenario, given_specs in given_data.items():
        data[scenario] = tuple(given_specs)
        sources[f"data.{scenario}"] = "option"
    for scenario, specs in data.items():
        for spec in specs:
            _check_data_spec(scenario, spec, sources[f"data.{scenario}"])
    default_scenarios = (*BUILTIN_SCENARIOS, *(s for s in data if s not in BUILTIN_SCENARIOS))
    scenarios = tuple(given.get("bft_scenario", default_scenarios))
    for scenario in scenarios:
        if scenario not in BUILTIN_SCENARIOS and scenario not in data:
            raise SpqrConfigError(
                f"--spqr-bft-scenario: scenario {scenario!r} has no data (built-in: "
                f"{', '.join(BUILTIN_SCENARIOS)}) — pass --spqr-benign-data {scenario}=PATH"
            )
    finetuned = classify_finetuned(given["finetuned"]) if "finetuned" in given else None
    return BftSettings(catalog, budget, profiles, scenarios, data, finetuned, sources)


def _check_data_spec(scenario: str, spec: str, source: str) -> None:
    where = "--spqr-benign-data" if source == "option" else f"{source}: [evaluation] benign_data"
    if spec.startswith("builtin:"):
        if spec.split(":", 1)[1] not in BUILTIN_DATASETS:
            raise SpqrConfigError(
                f"{where}: {scenario}={spec} is not a built-in set (built-in: "
                f"{', '.join('builtin:' + n for n in BUILTIN_DATASETS)}) — fix the name"
            )
    elif not Path(spec).expanduser().exists():
        raise SpqrConfigError(
            f"{where}: {scenario}={spec}: no such file or folder — pass an image folder with "
            "metadata.jsonl, a COCO captions_*.json or a Hugging Face datasets folder"
        )


def worker_index() -> int:
    """``gwN`` → N; 0 without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


def resolve_device(device: str, devices: tuple[int, ...] | None = None) -> str:
    """``auto``: the worker's GPU (gwN → cuda:N mod count, or the N-th of ``devices`` mod
    their number, from ``--spqr-devices``) when CUDA is there, else cpu."""
    if device != "auto":
        return device
    if not devices and _no_cuda_driver():
        return "cpu"  # without importing torch: a fully cached run may never need it
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if devices:
            wrong = [d for d in devices if d >= count]
            if wrong:
                raise SpqrConfigError(
                    f"--spqr-devices={','.join(map(str, devices))}: this machine has {count} CUDA "
                    f"device(s) (0–{count - 1}); drop {', '.join(map(str, wrong))}"
                )
            return f"cuda:{devices[worker_index() % len(devices)]}"
        local_rank = os.environ.get("LOCAL_RANK", "")
        if local_rank.isdigit() and "PYTEST_XDIST_WORKER" not in os.environ:
            return f"cuda:{int(local_rank)}"  # under `accelerate launch` / torchrun
        return f"cuda:{worker_index() % count}"
    if devices:
        raise SpqrConfigError(
            f"--spqr-devices={','.join(map(str, devices))} names GPUs, but CUDA is not available "
            "here — drop the option (or pass --spqr-device=cpu)"
        )
    return "cpu"


def _no_cuda_driver() -> bool:
    """True where torch.cuda certainly is not available: macOS, or Linux without a GPU
    driver's device files (NVIDIA, WSL2's /dev/dxg, ROCm's /dev/kfd). Elsewhere torch is asked."""
    if sys.platform == "darwin":
        return True
    if sys.platform.startswith("linux"):
        dev = Path("/dev")
        return not (Path("/proc/driver/nvidia").exists() or any(dev.glob("nvidia*"))
                    or (dev / "dxg").exists() or (dev / "kfd").exists())
    return False


def use_cpu_threads(threads: int) -> None:
    """Set torch's intra-op threads: now if torch is imported, else through OMP_NUM_THREADS,
    which torch reads when it is first imported (a warm run may never import it)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def resolve_threads(threads: int | str) -> int:
    if threads != "auto":
        return int(threads)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(1, workers))
