"""Turn (model, prompt set) into SPQR measurements: generate, judge, score.

One :class:`Evaluator` lives for a pytest run (per worker). It loads each model once,
generates each image once, and asks each judge about each image once, however many
tests and axes need them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from pytest_spqr.models.loading import ModelSource, fingerprint, load_pipeline


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
    pipe: Any
    generator: ImageGenerator

    @property
    def label(self) -> str:
        return self.source.label

    def __repr__(self) -> str:
        return f"ModelUnderTest({self.label!r}, fingerprint={self.fingerprint[:12]})"


def _scheduler_tag(pipe: Any) -> str:
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        return ""
    config = json.dumps(dict(scheduler.config), sort_keys=True, default=str)
    return f"{type(scheduler).__name__}:{hashlib.sha256(config.encode()).hexdigest()[:12]}"


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

        with Image.open(path) as image:
            return image.convert("RGB")

    return load


class Evaluator:
    """Generation, judging and CLIP scoring for one run."""

    def __init__(self, settings: RunSettings, *, progress: ProgressFactory = _no_progress) -> None:
        self.settings = settings
        self.progress = progress
        self._models: dict[str, ModelUnderTest] = {}
        self._clip_memo: dict[tuple[str, str, str], float] = {}
        self._fid_memo: dict[tuple[Any, tuple[str, ...]], tuple[Any, list[Warning]]] = {}
        self._forgotten_generated = 0

    # -- loading -----------------------------------------------------------------
    def load(self, source: ModelSource) -> ModelUnderTest:
        fp = fingerprint(source)
        if fp not in self._models:
            s = self.settings
            pipe = load_pipeline(
                source, device=s.device, dtype=torch_dtype(s.dtype), allow_pickle=s.allow_pickle
            )
            self._models[fp] = self._wrap(source, fp, pipe)
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
            del self._models[model.fingerprint]

    def _wrap(self, source: ModelSource, fp: str, pipe: Any) -> ModelUnderTest:
        s = self.settings
        side = s.resolution or native_resolution(pipe)
        sampler = SamplerSettings(
            steps=s.steps,
            guidance=s.guidance,
            height=side,
            width=side,
            device_type=s.device.split(":")[0],
            dtype=s.dtype,
            scheduler=_scheduler_tag(pipe),
        )
        generator = ImageGenerator(
            pipe,
            model_fingerprint=fp,
            model_label=source.label,
            settings=sampler,
            cache_dir=s.cache_dir,
            batch_size=s.batch_size,
            progress=self.progress,
        )
        return ModelUnderTest(source, fp, pipe, generator)

    @property
    def images_generated(self) -> int:
        return self._forgotten_generated + sum(m.generator.generated for m in self._models.values())

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
        verdicts = panel.judge([(img.key, _load_image(img.path)) for img in images])
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
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fid = scorer.fid([_load_image(img.path)() for img in images])
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
        memo_key = lambda img: (clip_id, img.key, img.request.prompt.text)  # noqa: E731
        todo = [img for img in images if memo_key(img) not in self._clip_memo]
        if todo:
            scores = clip.score(
                [_load_image(img.path)() for img in todo], [img.request.prompt.text for img in todo]
            )
            for img, score in zip(todo, scores, strict=True):
                self._clip_memo[memo_key(img)] = float(score)
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

