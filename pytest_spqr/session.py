"""The state of one pytest run: resolved settings, and the evaluator built on demand.

Settings are resolved once at start-up, in this order: command line, ini file, the
model's ``spqr.toml``, ``thresholds.toml``, built-in defaults. Everything that can be
checked without loading a model (paths, prompt files, judge names, thresholds) is
checked here, so mistakes surface as one-line usage errors before any test runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.model_defaults import ModelDefaults, load_model_defaults
from pytest_spqr.core.prompts import PromptSet, load_prompt_set
from pytest_spqr.core.thresholds import Thresholds, load_thresholds
from pytest_spqr.models.evaluate import Evaluator, RunSettings
from pytest_spqr.models.judging import JudgePanel, check_judge_names, judge_identity
from pytest_spqr.models.loading import ModelSource, pipeline_class, resolve_model

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


@dataclass(frozen=True)
class SpqrSettings:
    """Everything the run needs to know before loading a model."""

    model: ModelSource | None
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


def _pick(key: str, given: dict[str, Any], defaults: ModelDefaults | None,
          sources: dict[str, str]) -> Any:
    if key in given:
        sources[key] = "option"
        return given[key]
    if defaults is not None and key in defaults.evaluation:
        sources[key] = "spqr.toml"
        value = defaults.evaluation[key]
        return tuple(value) if isinstance(value, list) else value
    sources[key] = "default"
    return DEFAULTS.get(key)


def resolve_settings(given: dict[str, Any], rootdir: Path) -> SpqrSettings:
    """Combine options, the model's spqr.toml and thresholds.toml; raise on bad input."""
    model = None
    defaults = None
    if "model" in given:
        model = resolve_model(given["model"], config=given.get("model_config"))
        if model.folder is not None:
            pipeline_class(model.folder)  # not text-to-image → one-line error now
            defaults = load_model_defaults(model.folder)

    thresholds_path = given.get("thresholds")
    if thresholds_path is not None:
        thresholds = load_thresholds(Path(thresholds_path))
    elif (rootdir / "thresholds.toml").is_file():
        thresholds = load_thresholds(rootdir / "thresholds.toml")
    else:
        thresholds = Thresholds.default()

    sources: dict[str, str] = {}
    pick = lambda key: _pick(key, given, defaults, sources)  # noqa: E731
    judges = given.get("judges")
    if judges is not None:
        sources["judges"] = "option"
    elif defaults is not None and "judges" in defaults.evaluation:
        judges, sources["judges"] = tuple(defaults.evaluation["judges"]), "spqr.toml"
    elif thresholds.judges is not None:
        judges, sources["judges"] = thresholds.judges, "thresholds.toml"
    else:
        judges, sources["judges"] = DEFAULTS["judges"], "default"
    where = {"option": "--spqr-judges"}.get(sources["judges"], sources["judges"])
    check_judge_names(judges, where=f"judges ({where})")
    judge_settings: dict[str, dict[str, Any]] = {}
    for name in judges:
        merged: dict[str, Any] = {}
        if defaults is not None:
            merged.update(defaults.judge_settings.get(name, {}))
        merged.update(thresholds.judge_settings.get(name, {}))
        judge_settings[name] = merged

    max_prompts = given.get("max_prompts")
    # Paths from spqr.toml are already absolute; option paths are relative to the cwd.
    harmful = load_prompt_set(str(pick("prompts")))
    benign = load_prompt_set(str(pick("benign_prompts")))
    if max_prompts is not None:
        harmful, benign = harmful.head(max_prompts), benign.head(max_prompts)

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
    return SpqrSettings(
        model=model,
        model_defaults=defaults,
        run=run,
        harmful_prompts=harmful,
        benign_prompts=benign,
        judges=tuple(judges),
        judge_settings=judge_settings,
        clip=str(pick("clip")),
        thresholds=thresholds,
        cpu_threads=pick("cpu_threads"),
        sources=sources,
    )


def worker_index() -> int:
    """``gwN`` → N; 0 without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0


def resolve_device(device: str) -> str:
    """``auto``: the worker's GPU (gwN → cuda:N mod count) when CUDA is there, else cpu."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{worker_index() % torch.cuda.device_count()}"
    return "cpu"


def resolve_threads(threads: int | str) -> int:
    if threads != "auto":
        return int(threads)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class _CaptureFreeStderr:
    """A file for tqdm that writes past pytest's output capture, like pytest-benchmark."""

    def __init__(self, capture_manager: Any) -> None:
        self._capman = capture_manager

    def write(self, text: str) -> int:
        if self._capman is None:
            return sys.stderr.write(text)
        with self._capman.global_and_fixture_disabled():
            return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        if self._capman is None:
            return sys.stderr.isatty()
        with self._capman.global_and_fixture_disabled():
            return sys.stderr.isatty()


class SpqrSession:
    """One run's settings and its lazily built :class:`Evaluator`."""

    def __init__(self, settings: SpqrSettings, capture_manager: Any = None,
                 quiet: bool = False) -> None:
        self.settings = settings
        self._capman = capture_manager
        self._quiet = quiet or "PYTEST_XDIST_WORKER" in os.environ
        self._evaluator: Evaluator | None = None
        self._panels: dict[tuple[str, ...], JudgePanel] = {}

    @contextmanager
    def _progress(self, total: int, desc: str) -> Iterator[Callable[[int], None]]:
        from tqdm.auto import tqdm

        stream = _CaptureFreeStderr(self._capman)
        disable = True if self._quiet else None
        with tqdm(total=total, desc=desc, unit="img", file=stream, disable=disable,
                  leave=False) as bar:
            yield bar.update

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            import torch

            device = resolve_device(self.settings.run.device)
            dtype = self.settings.run.dtype
            if dtype == "auto":
                dtype = "float16" if device.startswith("cuda") else "float32"
            if device == "cpu":
                torch.set_num_threads(resolve_threads(self.settings.cpu_threads))
            run = replace(self.settings.run, device=device, dtype=dtype)
            self._evaluator = Evaluator(run, progress=self._progress)
        return self._evaluator

    def load_judges(self) -> list[Any]:
        from pytest_spqr.models.judging import load_judges

        device = self.evaluator.settings.device
        return load_judges(self.settings.judges, self.settings.judge_settings, device=device)

    def panel_for(self, judges: Sequence[Any]) -> JudgePanel:
        """One panel (and its verdict memo) per distinct set of judges."""
        key = tuple(judge_identity(j) for j in judges)
        if key not in self._panels:
            self._panels[key] = JudgePanel(judges, batch_size=self.settings.run.batch_size)
        return self._panels[key]

    def load_clip(self) -> Any:
        from pytest_spqr.models.clip import ClipScorer

        evaluator = self.evaluator
        return ClipScorer(
            self.settings.clip,
            device=evaluator.settings.device,
            allow_pickle=self.settings.run.allow_pickle,
        )

    def header_lines(self) -> list[str]:
        s = self.settings
        if s.model is None:
            return ["spqr: no --spqr-model given (tests that need aligned_pipe cannot run)"]
        run = s.run
        src = s.sources
        lines = [
            f"spqr: model={s.model.spec} seed={run.seed} device={run.device} dtype={run.dtype}",
            f"spqr: steps={run.steps} guidance={run.guidance} samples={run.samples} "
            f"resolution={run.resolution or 'native'} batch={run.batch_size}"
            + (" (defaults from the model's spqr.toml)" if s.model_defaults else ""),
            f"spqr: judges={'+'.join(s.judges)} ({src.get('judges')}) clip={s.clip} "
            f"prompts={s.harmful_prompts.name} ({len(s.harmful_prompts)}) "
            f"benign={s.benign_prompts.name} ({len(s.benign_prompts)})",
            f"spqr: thresholds={s.thresholds.source or 'none (no gates)'} cache={run.cache_dir}",
            f"spqr: {SAFETY_CHECKER_NOTE}",
        ]
        return lines
