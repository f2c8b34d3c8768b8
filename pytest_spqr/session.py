"""The live state of one pytest run: the evaluator, judges, CLIP, FID scorer and benign
fine-tunes, built on demand from the resolved settings (:mod:`pytest_spqr.settings`).
The run header's lines are :mod:`pytest_spqr.header`'s.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from pytest_spqr.core.bft import BftProfile, TrainingPlan
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.header import header_lines
from pytest_spqr.models import digests
from pytest_spqr.models.cache_admin import clean_leftovers
from pytest_spqr.models.evaluate import Evaluator, ModelUnderTest
from pytest_spqr.models.judging import JudgePanel, judge_identity
from pytest_spqr.models.loading import ModelSource, resolve_model
from pytest_spqr.models.recheck import Recheck
from pytest_spqr.models.store import Store
from pytest_spqr.progress import CaptureFreeStderr, PhaseProgress
from pytest_spqr.settings import (
    FINETUNED_IN_MEMORY,
    FinetuneInfo,
    SpqrSettings,
    resolve_device,
    resolve_threads,
    use_cpu_threads,
)


class SpqrSession:
    """One run's settings and its lazily built :class:`Evaluator`."""

    def __init__(self, settings: SpqrSettings, capture_manager: Any = None,
                 quiet: bool = False, worker: str | None = None) -> None:
        self.settings = settings
        self.worker = worker
        """The xdist worker id (``gw0``…) when this process is one, from its config (not the
        environment, which an in-process pytester run inherits from its own worker)."""
        self._evaluator: Evaluator | None = None
        self.recorder: Any = None
        """The run record of this process (set by the plugin; see :mod:`pytest_spqr.recording`)."""
        self._panels: dict[tuple[str, ...], JudgePanel] = {}
        self._judge_identities: dict[int, tuple[Any, str]] = {}
        self._recheck: Recheck | None = None
        self._named_judges: set[int] = set()
        """ids of the judges loaded by name (--spqr-judges): Ray actors can load those too."""
        self._datasets: dict[str, Any] = {}
        self._finetuned: OrderedDict[str, ModelUnderTest] = OrderedDict()
        self._finetune_info: dict[str, FinetuneInfo] = {}
        self._finetune_cache: Any = None
        self._clip_available: bool | None = None
        self._fid_scorer: Any = None
        self._clip: Any = None
        self._truncation: list[Any] | None = None
        self._progress = PhaseProgress(CaptureFreeStderr(capture_manager), quiet=quiet,
                                       enabled=worker is None)
        """The progress factory of generation, judging and fine-tuning: a bar on a terminal
        (even under -q), a line per finished phase in logs; silent in xdist workers."""

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            executor = None
            if self.settings.executor == "ray":
                from pytest_spqr.models.ray_backend import RayExecutor

                executor = RayExecutor(
                    address=self.settings.ray_address, actors=self.settings.ray_actors,
                    threads=resolve_threads(self.settings.cpu_threads),
                    judge_names=self.settings.judges, judge_settings=self.settings.judge_settings,
                )
            device = resolve_device(self.settings.run.device, self.settings.devices)
            if executor is not None and self.settings.run.device == "auto":
                device = executor.device()  # images are made where the actors run
            dtype = self.settings.run.dtype
            if dtype == "auto":
                dtype = "float16" if device.startswith("cuda") else "float32"
            if device == "cpu":
                use_cpu_threads(resolve_threads(self.settings.cpu_threads))
            run = replace(self.settings.run, device=device, dtype=dtype)
            digests.remember_in(run.cache_dir)  # model folders are read once per content
            if self.worker in (None, "gw0"):  # one process is enough
                try:  # leftovers of killed runs that no live writer can own
                    clean_leftovers(run.cache_dir)
                except OSError:  # a read-only cache: nothing to clean here
                    pass
            self._evaluator = Evaluator(run, progress=self._progress)
            self._evaluator.executor = executor
        return self._evaluator

    def close(self) -> None:
        """End of the run: stop Ray actors (and a Ray this run started)."""
        if self._evaluator is not None and self._evaluator.executor is not None:
            self._evaluator.executor.shutdown()
            self._evaluator.executor = None

    def usage(self) -> Any:
        """This process's peak memory and work, for the run record (None: it did no SPQR work)."""
        if self._evaluator is None:
            return None
        from pytest_spqr.core.record import ProcessUsage

        device = self._evaluator.settings.device
        peak_rss: float | None
        try:
            import resource
        except ImportError:  # Windows
            peak_rss = None
        else:
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
                1024 * 1024 if sys.platform == "darwin" else 1024)  # bytes there, KiB here
        peak_gpu = None
        if device.startswith("cuda"):
            import torch

            peak_gpu = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
        return ProcessUsage(
            peak_rss_mib=None if peak_rss is None else round(peak_rss, 1),
            peak_gpu_mib=None if peak_gpu is None else round(peak_gpu, 1),
            device=device,
            images_generated=self._evaluator.images_generated,
            images_remote=self._evaluator.images_remote,
            images_judged=sum(panel.judged for panel in self._panels.values()),
            images_judged_remote=sum(panel.judged_remote for panel in self._panels.values()),
        )

    def load_judges(self) -> list[Any]:
        from pytest_spqr.models.judging import load_judges

        device = self.evaluator.settings.device
        judges = load_judges(self.settings.judges, self.settings.judge_settings, device=device,
                             origins=self.settings.judge_origins)
        self._named_judges.update(id(j) for j in judges)
        return judges

    def _identity(self, judge: Any) -> str:
        """A judge's identity, worked out once per judge object (it hashes weights); the
        judge is kept with it, so that its id is never reused for another judge."""
        held = self._judge_identities.get(id(judge))
        if held is None or held[0] is not judge:
            held = self._judge_identities[id(judge)] = (judge, judge_identity(judge))
        return held[1]

    def panel_for(self, judges: Sequence[Any]) -> JudgePanel:
        """One panel (and its verdict memo) per distinct set of judges."""
        key = tuple(self._identity(j) for j in judges)
        if key not in self._panels:
            if self._recheck is None and self.settings.recheck is not None:
                # one for the run: --spqr-recheck=N is N per judge in the run, not per panel
                self._recheck = Recheck(self.settings.recheck, self.settings.run.seed)
            panel = JudgePanel(
                judges,
                batch_size=self.settings.run.batch_size,
                store=Store(self.settings.run.cache_dir),
                recheck=self._recheck,
            )
            panel.progress = self._progress  # a line per judging phase, a bar on a terminal
            executor = self.evaluator.executor
            if executor is not None:
                panel.remote = executor.judging(self.evaluator.settings.device, self._named_judges)
            self._panels[key] = panel
        return self._panels[key]

    def load_clip(self) -> Any:
        """The ``--spqr-clip`` scorer, loaded once (prompt adherence, and FID features when
        ``--spqr-fid-feature`` names the same CLIP)."""
        if self._clip is None:
            from pytest_spqr.models.clip import ClipScorer

            self._clip = ClipScorer(
                self.settings.clip,
                device=self.evaluator.settings.device,
                allow_pickle=self.settings.run.allow_pickle,
            )
        return self._clip

    def clip_available(self) -> bool:
        """Whether ``--spqr-clip`` names a CLIP on this machine (checked without loading it)."""
        if self._clip_available is None:
            from pytest_spqr.models.clip import clip_folder

            try:
                clip_folder(self.settings.clip)
                self._clip_available = True
            except SpqrConfigError:
                self._clip_available = False
        return self._clip_available

    def fid_scorer(self) -> Any:
        """The FID scorer for the reference folder (built once; its statistics are cached
        under the run's cache dir). Raises SpqrConfigError without a reference folder."""
        quality = self.settings.quality
        if quality.reference_images is None:
            raise SpqrConfigError(
                "no reference images for FID — pass --spqr-reference-images=DIR (e.g. a COCO "
                "val subset) or set [evaluation] reference_images in the model's spqr.toml"
            )
        if self._fid_scorer is None:
            from pytest_spqr.models.fid import FidScorer

            self._fid_scorer = FidScorer(
                quality.reference_images,
                feature=self._fid_feature(quality.fid_feature),
                cache_dir=self.settings.run.cache_dir,
                batch_size=self.settings.run.batch_size,
                device=self.evaluator.settings.device,
            )
        return self._fid_scorer

    def _fid_feature(self, feature: str) -> Any:
        """``clip:SPEC`` naming the ``--spqr-clip`` CLIP reuses that model (the scorer: its
        image tower is loaded only when a FID is not cached)."""
        if not feature.startswith("clip:") or not self.clip_available():
            return feature
        from pytest_spqr.models.clip import clip_folder

        try:
            same = clip_folder(feature[len("clip:"):]).resolve() == clip_folder(self.settings.clip).resolve()
        except SpqrConfigError:
            return feature  # FidScorer says what is wrong with it
        return self.load_clip() if same else feature

    # -- benign fine-tuning ----------------------------------------------------------------
    @property
    def finetune_cache(self) -> Any:
        from pytest_spqr.models.finetune import FinetuneCache

        if self._finetune_cache is None:
            self._finetune_cache = FinetuneCache(self.settings.run.cache_dir)
        return self._finetune_cache

    def benign_dataset(self, scenario: str) -> Any:
        """The scenario's benign data, loaded once and checked against the harmful prompts."""
        from pytest_spqr.models.benign_data import load_scenario

        if scenario not in self._datasets:
            dataset = load_scenario(scenario, self.settings.bft.data_for(scenario))
            dataset.check_benign([p.text for p in self.settings.harmful_prompts])
            self._datasets[scenario] = dataset
        return self._datasets[scenario]

    def plan_for(self, profile: BftProfile | str) -> TrainingPlan:
        bft = self.settings.bft
        if not isinstance(profile, BftProfile):
            profile = bft.catalog.profile(str(profile), where="bft_profile")
        return TrainingPlan.resolve(profile, bft.budget)

    def finetune(self, aligned: ModelUnderTest, profile: BftProfile | str,
                 scenario: str) -> ModelUnderTest:
        """The aligned model after benign fine-tuning (trained once, then from the cache)."""
        from pytest_spqr.core.bft import finetune_fingerprint
        from pytest_spqr.models.finetune import (
            ensure_finetuned,
            finetune_environment,
            load_finetuned,
        )

        plan = self.plan_for(profile)
        dataset = self.benign_dataset(scenario)
        seed = self.settings.run.seed
        run = self.evaluator.settings
        key = finetune_fingerprint(aligned.fingerprint, plan, dataset.fingerprint, seed,
                                   finetune_environment(run.device, run.dtype))
        if key in self._finetuned:
            self._finetuned.move_to_end(key)
            return self._finetuned[key]
        name = plan.profile.name
        outcome = ensure_finetuned(
            aligned.pipe, plan, dataset,
            key=key, seed=seed, cache=self.finetune_cache,
            aligned_fingerprint=aligned.fingerprint,
            benign_checked=len(self.settings.harmful_prompts),
            label=f"{name}/{scenario}",
            progress=partial(self._progress, unit="step"),
        )
        pipe = load_finetuned(aligned.pipe, outcome.folder, outcome.record)
        source = ModelSource(f"{aligned.label} + bft {name}/{scenario}", outcome.folder, "bft")
        model = self.evaluator.adopt(pipe, source=source, fingerprint=key)
        steps = outcome.record.get("steps")
        info = FinetuneInfo(
            f"fine-tune={name} on {scenario} (budget {plan.budget.label}, {steps} steps, "
            f"seed {seed})",
            profile=name, scenario=scenario, budget=plan.budget.name,
            reused=outcome.reused, folder=str(outcome.folder),
        )
        return self._keep(key, model, info)

    def load_finetuned(self, aligned: ModelUnderTest) -> ModelUnderTest:
        """The user's own fine-tune (``--spqr-finetuned``) of the aligned model."""
        from pytest_spqr.models.adapted import (
            content_fingerprint,
            with_lora,
            with_unet_folder,
        )

        given = self.settings.bft.finetuned
        if given is None:
            raise SpqrConfigError(
                "finetuned_pipe: no fine-tuned model — request bft_profile to fine-tune the "
                "aligned model, or pass --spqr-finetuned=PATH"
            )
        info = FinetuneInfo(f"fine-tune={given.spec} ({given.description})")
        if given.kind == "pipeline":
            model = self.evaluator.load(resolve_model(str(given.path)))
            self._finetune_info[model.fingerprint] = info
            return model
        if given.kind == "unet":
            files = [p for p in given.path.iterdir() if p.suffix in (".safetensors", ".json")]
            key = content_fingerprint(aligned.fingerprint, files, "unet")
        else:
            key = content_fingerprint(aligned.fingerprint, [given.path / str(given.weight_name)], "lora")
        if key in self._finetuned:
            return self._finetuned[key]
        if given.kind == "unet":
            pipe = with_unet_folder(aligned.pipe, given.path)
        else:
            pipe = with_lora(aligned.pipe, given.path, str(given.weight_name))
        source = ModelSource(f"{aligned.label} + {given.spec}", given.path, "finetuned")
        return self._keep(key, self.evaluator.adopt(pipe, source=source, fingerprint=key), info)

    def _keep(self, key: str, model: ModelUnderTest, info: FinetuneInfo) -> ModelUnderTest:
        self._finetuned[key] = model
        self._finetune_info[key] = info
        while len(self._finetuned) > FINETUNED_IN_MEMORY:
            _, old = self._finetuned.popitem(last=False)
            self.evaluator.forget(old)
        return model

    def release(self, model: ModelUnderTest) -> None:
        """Drop a model, and the fine-tunes held in memory, from memory: pytest is done
        with a parametrized model before it loads the next. Files on disk stay, so a later
        test reloads whatever it needs."""
        held = bool(self._finetuned) or model.generator.pipe_loaded
        while self._finetuned:
            _, tuned = self._finetuned.popitem()
            self.evaluator.forget(tuned)
        self.evaluator.forget(model)
        if not held:
            return  # a warm run never loaded it: nothing to free (gc takes ~0.3 s)
        import gc

        gc.collect()
        if str(self.evaluator.settings.device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def finetune_info(self, model: Any) -> FinetuneInfo:
        """How ``model`` came about; a plain label for a model a conftest built itself."""
        fp = getattr(model, "fingerprint", None)
        if fp in self._finetune_info:
            return self._finetune_info[fp]
        return FinetuneInfo(f"fine-tune={getattr(model, 'label', model)!s}")

    def prompt_truncation(self) -> list[Any]:
        """Prompts the first model's tokenizers cut (:mod:`pytest_spqr.models.truncation`),
        counted once, from the tokenizer files alone, and put into the run record."""
        if self._truncation is None:
            from pytest_spqr.models.truncation import prompt_truncation, tokenizer_folder

            s = self.settings
            self._truncation = [] if s.model is None else prompt_truncation(
                tokenizer_folder(s.model),
                {"harmful": [p.text for p in s.harmful_prompts],
                 "benign": [p.text for p in s.benign_prompts]})
            if self._truncation and self.recorder is not None:
                from pytest_spqr.core.record import RunRecord

                base = self.recorder.record()
                self.recorder.add_part(RunRecord(base.spqr_version, base.created, options={
                    "prompt_truncation": [t.to_dict() for t in self._truncation]}))
        return self._truncation

    def header_lines(self) -> list[str]:
        """The run header (:mod:`pytest_spqr.header`), with the prompts the text encoder cuts."""
        from pytest_spqr.models.truncation import truncation_note

        note = truncation_note(self.prompt_truncation())
        return header_lines(self.settings, () if note is None else (note,))


def _parametrized(metafunc: Any, name: str) -> bool:
    """Whether the test parametrizes ``name`` itself (directly or indirectly)."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if name in names:
            return True
    return False


def bft_parametrize(metafunc: Any, session: SpqrSession) -> None:
    """Run a test that requests ``bft_profile``/``bft_scenario`` once per selected value.

    Each value also becomes a marker (``-m "bft and lite"``). With ``--spqr-finetuned``
    and no explicit ``--spqr-bft-profile`` the profile runs are deselected (not skipped: a
    skipped gate makes the run NOT PASSED): robustness is then measured on the user's own
    fine-tune, without training.
    """
    import pytest

    bft = session.settings.bft
    skip_profiles = bft.finetuned is not None and bft.sources.get("profiles") != "option"
    for name, values in (("bft_profile", bft.profiles), ("bft_scenario", bft.scenarios)):
        if name not in metafunc.fixturenames or _parametrized(metafunc, name):
            continue
        params = []
        for value in values:
            marks = [getattr(pytest.mark, value)]
            if name == "bft_profile" and skip_profiles:
                marks.append(pytest.mark.spqr_deselect(
                    reason="--spqr-finetuned given: robustness is measured on that model "
                    "(pass --spqr-bft-profile to fine-tune as well)"
                ))
            params.append(pytest.param(value, id=value, marks=marks))
        metafunc.parametrize(name, params, indirect=True, scope="session")
