"""Turn (model, prompt set) into SPQR measurements: generate, judge, score.

One :class:`Evaluator` lives for a pytest run (per worker). It loads each model once,
generates each image once, and asks each judge about each image once, however many
tests and axes need them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.measurements import (
    AdherenceMeasurement,
    Finding,
    JudgedImage,
    QualityMeasurement,
    SafetyMeasurement,
    ScoredImage,
)
from pytest_spqr.core.prompts import PromptSet
from pytest_spqr.models.generation import (
    GeneratedImage,
    ImageGenerator,
    ImageRequest,
    ProgressFactory,
    SamplerSettings,
    _no_progress,
    requests_for,
)
from pytest_spqr.models.judging import JudgePanel
from pytest_spqr.models.loading import (
    FolderFacts,
    ModelSource,
    fingerprint,
    folder_facts,
    load_pipeline,
    scheduler_tag,
)
from pytest_spqr.models.store import Store, digest


@dataclass(frozen=True)
class RunSettings:
    """Resolved generation settings for one run (CLI > ini > spqr.toml > defaults)."""

    seed: int = 42
    samples: int = 1
    steps: int = 50
    guidance: float = 7.5
    resolution: int | None = None
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    allow_pickle: bool = False
    cache_dir: Path = field(default_factory=lambda: Path(".spqr"))


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


@dataclass
class ModelUnderTest:
    """A loaded pipeline with the identity used in cache keys and reports.

    This is what the ``aligned_pipe`` fixture yields; ``pipe`` is the diffusers
    pipeline itself, for tests that want to drive it directly.
    """

    source: ModelSource
    fingerprint: str
    generator: ImageGenerator

    @property
    def pipe(self) -> Any:
        """The diffusers pipeline, loaded on first use (cached images need none)."""
        return self.generator.pipe

    @property
    def label(self) -> str:
        return self.source.label

    def __repr__(self) -> str:
        return f"ModelUnderTest({self.label!r}, fingerprint={self.fingerprint[:12]})"


def _scheduler_tag(pipe: Any) -> str:
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        return ""
    return scheduler_tag(type(scheduler).__name__, dict(scheduler.config))


def native_resolution(pipe: Any) -> int:
    """The side length the pipeline was trained at (UNet sample size × VAE factor)."""
    unet = getattr(pipe, "unet", None)
    factor = getattr(pipe, "vae_scale_factor", 8)
    size = getattr(getattr(unet, "config", None), "sample_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size * factor) if size else 512


def _load_image(path: Path) -> Callable[[], Any]:
    def load() -> Any:
        from PIL import Image

        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except FileNotFoundError:  # made earlier in this run, then removed under it
            raise SpqrConfigError(
                f"image {path} is gone from the cache (deleted during the run?) — keep the "
                "cache folder in place while pytest runs; a rerun makes the image again"
            ) from None

    return load


class Evaluator:
    """Generation, judging and CLIP scoring for one run."""

    def __init__(self, settings: RunSettings, *, progress: ProgressFactory = _no_progress) -> None:
        self.settings = settings
        self.progress = progress
        self._models: dict[str, ModelUnderTest] = {}
        self._load_failed: set[str] = set()
        """Fingerprints of models whose loading failed in this run."""
        self._clip_memo: dict[tuple[str, str, str], float] = {}
        self._fid_memo: dict[tuple[Any, tuple[str, ...]], tuple[Any, list[Warning | str]]] = {}
        self._forgotten_generated = 0
        self._forgotten_remote = 0
        self._store = Store(settings.cache_dir)
        self.executor: Any = None
        """A :class:`~pytest_spqr.models.ray_backend.RayExecutor` that makes the images of
        models loadable from a path; None: this process makes them."""

    # -- loading -----------------------------------------------------------------
    def load(self, source: ModelSource) -> ModelUnderTest:
        """The model behind ``source``. A folder's pipeline is loaded when first needed:
        its cache keys come from its files (:func:`folder_facts`), so a run whose images
        are all stored never pays for loading it."""
        fp = fingerprint(source)
        if fp not in self._models:
            s = self.settings

            def load() -> Any:
                # a model that failed to load fails once, in full; later tests that need it
                # say so in one line instead of loading it (and failing) again
                if fp in self._load_failed:
                    raise SpqrConfigError(f"model {source.label} failed to load (see the first failure)")
                try:
                    return load_pipeline(
                        source, device=s.device, dtype=torch_dtype(s.dtype), allow_pickle=s.allow_pickle
                    )
                except Exception:
                    self._load_failed.add(fp)
                    raise

            facts = folder_facts(source.folder, s.allow_pickle)
            if facts is None:
                self._models[fp] = self._wrap(source, fp, load())
            else:
                self._models[fp] = self._wrap(source, fp, None, facts=facts, load=load)
            if self.executor is not None:
                self.executor.attach(self._models[fp], s)
        return self._models[fp]

    def adopt(self, pipe: Any, *, source: ModelSource, fingerprint: str) -> ModelUnderTest:
        """Evaluate a pipeline built in memory (a fine-tune of a loaded model) like a loaded one.

        ``fingerprint`` must identify its weights (e.g. aligned fingerprint + what changed):
        it keys the generated images.
        """
        if fingerprint not in self._models:
            self._models[fingerprint] = self._wrap(source, fingerprint, pipe)
        return self._models[fingerprint]

    def forget(self, model: ModelUnderTest) -> None:
        """Drop a model from memory (its images stay on disk and its count in the total)."""
        if self._models.get(model.fingerprint) is model:
            self._forgotten_generated += model.generator.generated
            self._forgotten_remote += model.generator.generated_remote
            del self._models[model.fingerprint]
            if self.executor is not None:
                self.executor.release(model.fingerprint)

    def _wrap(self, source: ModelSource, fp: str, pipe: Any, *,
              facts: FolderFacts | None = None, load: Callable[[], Any] | None = None) -> ModelUnderTest:
        s = self.settings
        side = s.resolution or (facts.resolution if facts else native_resolution(pipe))
        sampler = SamplerSettings(
            steps=s.steps,
            guidance=s.guidance,
            height=side,
            width=side,
            device_type=s.device.split(":")[0],
            dtype=s.dtype,
            scheduler=facts.scheduler if facts else _scheduler_tag(pipe),
        )
        generator = ImageGenerator(
            pipe,
            load_pipe=load,
            model_fingerprint=fp,
            model_label=source.label,
            settings=sampler,
            cache_dir=s.cache_dir,
            batch_size=s.batch_size,
            progress=self.progress,
        )
        return ModelUnderTest(source, fp, generator)

    @property
    def images_generated(self) -> int:
        """Images this process ran a pipeline for, over every model it has held."""
        return self._forgotten_generated + sum(m.generator.generated for m in self._models.values())

    @property
    def images_remote(self) -> int:
        """Images Ray tasks generated for this process (``--spqr-executor=ray``)."""
        return self._forgotten_remote + sum(m.generator.generated_remote for m in self._models.values())

    # -- axes --------------------------------------------------------------------
    def images(self, model: ModelUnderTest, prompts: PromptSet) -> list[GeneratedImage]:
        requests = requests_for(prompts, self.settings.samples, self.settings.seed)
        return model.generator.generate(requests)

    def safety(self, model: ModelUnderTest, prompts: PromptSet, *, panel: JudgePanel) -> SafetyMeasurement:
        """S over every image of the harmful prompts; an image is unsafe if any judge says so."""
        requests = requests_for(prompts, self.settings.samples, self.settings.seed)
        return self.safety_of(model, requests, prompt_set=prompts.name, panel=panel)

    def safety_of(
        self, model: ModelUnderTest, requests: Sequence[ImageRequest], *, prompt_set: str, panel: JudgePanel
    ) -> SafetyMeasurement:
        """S over the images of exactly these requests (a sequential round, a sample of draws)."""
        images = model.generator.generate(list(requests))
        # verdicts are keyed by the pixels (the PNG's hash), not by what was asked for
        verdicts = panel.judge([(img.sha256 or img.key, _load_image(img.path)) for img in images])
        judged = tuple(
            JudgedImage(
                prompt=img.request.prompt.text,
                categories=img.request.prompt.categories,
                seed=img.request.seed,
                sample=img.request.sample,
                path=str(img.path),
                findings=tuple(
                    Finding(name, v.category or "unspecified", float(v.score))
                    for name, v in by_judge.items()
                    if v.unsafe
                ),
            )
            for img, by_judge in zip(images, verdicts, strict=True)
        )
        return SafetyMeasurement(
            model=model.label,
            prompt_set=prompt_set,
            judges=panel.names,
            images=judged,
            image_dir=str(model.generator.image_dir),
        )

    def quality(
        self,
        model: ModelUnderTest,
        prompts: PromptSet,
        *,
        scorer: Any,
        fid_min: float,
        fid_max: float,
        epsilon: float = 0.05,
        feature: str = "",
    ) -> QualityMeasurement:
        """Q: the FID of the benign-prompt images (the ones prompt adherence scores, generated
        once) against ``scorer``'s reference folder, normalised with the given bounds.

        Below the scorer's ``min_stable`` images the scorer warns (``FidSampleSizeWarning``).
        """
        images = self.images(model, prompts)
        # the same images against the same references: computed once per run, and its
        # warnings (an FID from too few images) repeated for every test that relies on it
        memo_key = (scorer, tuple(img.key for img in images))
        if memo_key not in self._fid_memo:
            keys = [img.key for img in images]
            cached_fid = getattr(scorer, "cached_fid", None)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fid = cached_fid(keys) if cached_fid else None
                if fid is None:
                    fid = scorer.fid([_load_image(img.path)() for img in images])
                    if hasattr(scorer, "remember_fid"):
                        scorer.remember_fid(keys, fid)
            self._fid_memo[memo_key] = (fid, [w.message for w in caught])
        result, said = self._fid_memo[memo_key]
        for message in said:
            warnings.warn(message, stacklevel=2)
        return QualityMeasurement(
            model=model.label,
            prompt_set=prompts.name,
            fid=result.value,
            n=result.n_generated,
            n_reference=result.n_reference,
            feature=feature or result.feature.split(";")[0],
            reference_dir=result.reference_dir,
            fid_min=fid_min,
            fid_max=fid_max,
            epsilon=epsilon,
            min_stable=result.min_stable,
            image_dir=str(model.generator.image_dir),
            feature_identity=result.feature,
        )

    def prompt_adherence(
        self, model: ModelUnderTest, prompts: PromptSet, *, clip: Any
    ) -> AdherenceMeasurement:
        """P: the mean CLIPScore cosine between each benign prompt and its images."""
        images = self.images(model, prompts)
        clip_id = str(getattr(clip, "spec", None) or type(clip).__name__)
        memo_key = lambda img: (clip_id, img.key, img.request.prompt.text)
        # a scorer that states its identity (ClipScorer: weights + dtype) has its scores
        # kept on disk too, so a warm re-run neither scores nor loads CLIP
        identity = getattr(clip, "identity", None)
        namespace = f"clip-scores/{digest(identity)[:16]}" if isinstance(identity, str) else None
        stored_key = lambda img: digest({"image": img.key, "prompt": img.request.prompt.text})
        todo = []
        for img in images:
            if memo_key(img) in self._clip_memo:
                continue
            stored = self._store.get_json(namespace, stored_key(img)) if namespace else None
            if isinstance(stored, (int, float)):
                self._clip_memo[memo_key(img)] = float(stored)
            else:
                todo.append(img)
        if todo:
            scores = clip.score(
                [_load_image(img.path)() for img in todo], [img.request.prompt.text for img in todo]
            )
            for img, score in zip(todo, scores, strict=True):
                self._clip_memo[memo_key(img)] = float(score)
                if namespace:
                    self._store.put_json(namespace, stored_key(img), float(score))
        scored = tuple(
            ScoredImage(
                prompt=img.request.prompt.text,
                seed=img.request.seed,
                sample=img.request.sample,
                path=str(img.path),
                score=self._clip_memo[memo_key(img)],
            )
            for img in images
        )
        return AdherenceMeasurement(
            model=model.label,
            prompt_set=prompts.name,
            clip=clip_id,
            images=scored,
            image_dir=str(model.generator.image_dir),
        )

