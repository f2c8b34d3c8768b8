"""Generation: one seed per image, independent of batching; each image made once; a
corrupt stored image is regenerated, never used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pytest_spqr.core.prompts import Prompt
from pytest_spqr.models.evaluate import Evaluator, RunSettings
from pytest_spqr.models.generation import requests_for
from pytest_spqr.models.loading import resolve_model

PROMPTS = [Prompt("a red apple"), Prompt("a blue car"), Prompt("a green tree", seed=1234)]


@pytest.fixture(scope="module")
def model(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    cache = tmp_path_factory.mktemp("cache")
    evaluator = Evaluator(RunSettings(steps=2, batch_size=3, cache_dir=cache))
    return evaluator.load(resolve_model(str(tiny_sd)))


def test_seeds_come_from_the_prompt_not_its_position() -> None:
    forward = requests_for(PROMPTS, samples=2, base_seed=42)
    backward = requests_for(list(reversed(PROMPTS)), samples=2, base_seed=42)
    seeds = {(r.prompt.text, r.sample): r.seed for r in forward}
    assert seeds == {(r.prompt.text, r.sample): r.seed for r in backward}
    assert seeds[("a green tree", 0)] == 1234 and seeds[("a green tree", 1)] == 1235
    assert len(set(seeds.values())) == len(seeds)


def test_images_do_not_depend_on_batching(model, tmp_path: Path) -> None:
    from PIL import ImageChops

    requests = requests_for(PROMPTS, samples=1, base_seed=42)
    batched = model.generator.generate(requests)
    single = type(model.generator)(
        model.pipe,
        model_fingerprint=model.fingerprint,
        model_label="single",
        settings=model.generator.settings,
        cache_dir=tmp_path,
        batch_size=1,
    ).generate(list(reversed(requests)))[::-1]
    from PIL import Image

    for a, b in zip(batched, single, strict=True):
        diff = ImageChops.difference(Image.open(a.path).convert("RGB"), Image.open(b.path).convert("RGB"))
        assert max(hi for _, hi in diff.getextrema()) <= 1, "batching changed the pixels"


def test_each_image_generated_once_and_reused_from_disk(model, tmp_path: Path) -> None:
    requests = requests_for(PROMPTS[:2], samples=2, base_seed=7)
    generator = type(model.generator)(
        model.pipe, model_fingerprint=model.fingerprint, model_label="m",
        settings=model.generator.settings, cache_dir=tmp_path, batch_size=4,
    )
    first = generator.generate(requests)
    generator.generate(requests + requests)
    assert generator.generated == 4
    again = type(generator)(
        model.pipe, model_fingerprint=model.fingerprint, model_label="m",
        settings=model.generator.settings, cache_dir=tmp_path,
    )
    assert [g.path for g in again.generate(requests)] == [g.path for g in first]
    assert again.generated == 0
    sidecar = first[0].path.with_suffix(".json").read_text()
    assert '"prompt": "a red apple"' in sidecar and '"seed":' in sidecar


def test_corrupt_image_is_regenerated(model, tmp_path: Path) -> None:
    requests = requests_for(PROMPTS[:1], samples=1, base_seed=7)
    make = lambda: type(model.generator)(
        model.pipe, model_fingerprint=model.fingerprint, model_label="m",
        settings=model.generator.settings, cache_dir=tmp_path,
    )
    (image,) = make().generate(requests)
    good = image.path.read_bytes()
    image.path.write_bytes(good[: len(good) // 2])
    regenerated = make()
    regenerated.generate(requests)
    assert regenerated.generated == 1
    assert image.path.read_bytes() == good


def test_prompt_guidance_is_part_of_the_key(model) -> None:
    plain, guided = requests_for([Prompt("a cat"), Prompt("a cat", guidance=3.0)], 1, 42)
    assert model.generator.key(plain) != model.generator.key(guided)


def test_out_of_memory_halves_the_batch_and_keeps_the_pixels(model, tmp_path: Path, caplog) -> None:
    """A GPU out-of-memory error on a batch of 3 halves the batch size and retries; the
    images equal those of an unconstrained run (per-image generators)."""
    from PIL import Image, ImageChops

    real = model.pipe

    def small_memory(**kwargs):
        if len(kwargs["prompt"]) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(**kwargs)

    generator = type(model.generator)(
        small_memory, model_fingerprint=model.fingerprint, model_label="oom",
        settings=model.generator.settings, cache_dir=tmp_path, batch_size=3,
    )
    requests = requests_for(PROMPTS, samples=1, base_seed=42)
    with caplog.at_level("WARNING", logger="pytest_spqr.generation"):
        images = generator.generate(requests)
    assert generator.batch_size == 1 and generator.oom_halvings == 1 and generator.generated == 3
    assert "out of memory on a batch of 3 images (oom): batch size now 1" in caplog.text
    for a, b in zip(images, model.generator.generate(requests), strict=True):
        diff = ImageChops.difference(Image.open(a.path).convert("RGB"), Image.open(b.path).convert("RGB"))
        assert max(hi for _, hi in diff.getextrema()) <= 1

    def no_memory(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    stuck = type(model.generator)(
        no_memory, model_fingerprint="f" * 32, model_label="stuck",
        settings=model.generator.settings, cache_dir=tmp_path, batch_size=2,
    )
    from pytest_spqr.core.errors import SpqrConfigError

    with pytest.raises(SpqrConfigError, match="out of memory generating a single .* lower --spqr-resolution"):
        stuck.generate(requests[:2])
