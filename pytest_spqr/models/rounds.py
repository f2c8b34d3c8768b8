"""Sequential sampling: generate and judge harmful-prompt images in rounds until a gate decides.

The anytime-valid tests of :mod:`pytest_spqr.core.sequential` hold for i.i.d. images, so
each draw picks a prompt uniformly *with replacement* from a seeded ``random.Random`` and
gets a seed of its own: the k-th draw of a prompt is its sample k (seeded exactly as in a
fixed-n run), so early draws reuse images already in the cache, and a re-run draws the
same images. Robustness draws the same prompts and seeds for both models (pairs).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pytest_spqr.core.intervals import PairedCounts
from pytest_spqr.core.measurements import JudgedImage, SafetyMeasurement
from pytest_spqr.core.prompts import PromptSet
from pytest_spqr.core.seeds import seed_for
from pytest_spqr.core.sequential import PairedSequentialTest, SequentialTest
from pytest_spqr.models.generation import ImageRequest


class PromptDraws:
    """An endless, reproducible stream of image requests drawn uniformly from ``prompts``."""

    def __init__(self, prompts: PromptSet, base_seed: int, stream: str) -> None:
        if not len(prompts):
            raise ValueError(f"{prompts.name}: no prompts to draw from")
        self.prompts = prompts
        self.base_seed = base_seed
        # str seeds are hashed with SHA-512: the same stream in every process and run
        self._rng = random.Random(f"pytest-spqr:{base_seed}:{stream}")
        self._drawn: Counter[int] = Counter()

    def take(self, k: int) -> list[ImageRequest]:
        requests = []
        for _ in range(k):
            index = self._rng.randrange(len(self.prompts))
            prompt, sample = self.prompts[index], self._drawn[index]
            self._drawn[index] += 1
            requests.append(ImageRequest(prompt, sample, seed_for(self.base_seed, prompt, sample)))
        return requests


def _rounds(test: SequentialTest | PairedSequentialTest, draws: PromptDraws,
            round_size: int) -> Iterator[list[ImageRequest]]:
    while size := test.next_round(round_size):
        yield draws.take(size)


def _measurement(model: Any, prompts: PromptSet, panel: Any,
                 images: list[JudgedImage]) -> SafetyMeasurement:
    return SafetyMeasurement(
        model=model.label,
        prompt_set=prompts.name,
        judges=panel.names,
        images=tuple(images),
        image_dir=str(model.generator.image_dir),
    )


def sequential_safety(
    evaluator: Any,
    model: Any,
    prompts: PromptSet,
    *,
    panel: Any,
    test: SequentialTest,
    draws: PromptDraws,
    round_size: int,
) -> SafetyMeasurement:
    """Feed ``test`` rounds of ``round_size`` judged images until it is finished; the
    measurement holds every image drawn (a prompt may appear with several samples)."""
    judged: list[JudgedImage] = []
    for requests in _rounds(test, draws, round_size):
        part = evaluator.safety_of(model, requests, prompt_set=prompts.name, panel=panel)
        judged.extend(part.images)
        test.update(part.n, part.unsafe)
    return _measurement(model, prompts, panel, judged)


def sequential_robustness(
    evaluator: Any,
    aligned: Any,
    finetuned: Any,
    prompts: PromptSet,
    *,
    panel: Any,
    test: PairedSequentialTest,
    draws: PromptDraws,
    round_size: int,
) -> tuple[SafetyMeasurement, SafetyMeasurement]:
    """Feed ``test`` rounds of paired images (same requests for both models) until it is
    finished; returns the aligned and the fine-tuned measurement over the same draws."""
    before: list[JudgedImage] = []
    after: list[JudgedImage] = []
    for requests in _rounds(test, draws, round_size):
        a = evaluator.safety_of(aligned, requests, prompt_set=prompts.name, panel=panel)
        b = evaluator.safety_of(finetuned, requests, prompt_set=prompts.name, panel=panel)
        before.extend(a.images)
        after.extend(b.images)
        test.update(PairedCounts.from_pairs(
            (x.unsafe, y.unsafe) for x, y in zip(a.images, b.images, strict=True)
        ))
    return _measurement(aligned, prompts, panel, before), _measurement(finetuned, prompts, panel, after)
