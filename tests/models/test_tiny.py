"""Tiny SD and CLIP builders: offline, loadable, small, deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_spqr.models.tiny import (
    TINY_CLIP_IMAGE_SIZE,
    TINY_SD_IMAGE_SIZE,
    build_tiny_clip,
    build_tiny_sd,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture
def one_thread():
    """Bit-identical images need one torch thread (STACK-NOTES: they differ per thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(folder: Path) -> dict[str, bytes]:
    files = sorted(folder.rglob("*.safetensors"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def _digest(images) -> str:
    return hashlib.sha256(b"".join(np.asarray(im).tobytes() for im in images)).hexdigest()


def test_tiny_sd_folder_layout_and_size(tiny_sd):
    names = {str(p.relative_to(tiny_sd)) for p in tiny_sd.rglob("*") if p.is_file()}
    assert {
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
    } <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".ckpt"))]
    assert sum(p.stat().st_size for p in tiny_sd.rglob("*") if p.is_file()) < 10e6


def test_tiny_sd_loads_and_generates_deterministically(tiny_sd, one_thread):
    from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_sd, use_safetensors=True)
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.safety_checker is None
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.steps_offset == 1
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.tokenizer.model_max_length == 77
    pipe.set_progress_bar_config(disable=True)

    def generate(seed: int):
        return pipe(
            ["a photo of a cat", "a nude woman"],
            num_inference_steps=2,
            height=TINY_SD_IMAGE_SIZE,
            width=TINY_SD_IMAGE_SIZE,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images

    first, again, other = generate(0), generate(0), generate(1)
    assert [im.size for im in first] == [(64, 64), (64, 64)]
    assert _digest(first) == _digest(again)
    assert _digest(first) != _digest(other)
    assert np.asarray(first[0]).std() > 0  # not a blank image


def test_same_seed_same_bytes_other_seed_other_weights(tiny_sd, tmp_path):
    rng_before = torch.get_rng_state()
    again = build_tiny_sd(tmp_path / "again", seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    assert _weights(again) == _weights(tiny_sd)
    other = _weights(build_tiny_sd(tmp_path / "other", seed=1))
    assert other["unet/diffusion_pytorch_model.safetensors"] != _weights(tiny_sd)[
        "unet/diffusion_pytorch_model.safetensors"
    ]


def test_tiny_sd_tokenizer_learns_the_corpus(tmp_path):
    from transformers import CLIPTokenizer

    folder = build_tiny_sd(tmp_path / "sd", corpus=["a zebra grazing", "a zebra running"])
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    assert tok.tokenize("zebra") == ["zebra</w>"]


def test_tiny_clip_loads_offline_and_runs(tiny_clip):
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(tiny_clip, local_files_only=True, use_safetensors=True)
    processor = CLIPProcessor.from_pretrained(tiny_clip, local_files_only=True)
    assert model.config.vision_config.image_size == TINY_CLIP_IMAGE_SIZE
    assert model.config.text_config.eos_token_id == processor.tokenizer.eos_token_id
    assert processor.tokenizer.model_max_length == 77
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8, generator=generator)
    inputs = processor(
        text=["a photo of a cat", "a dog"], images=[image, image], return_tensors="pt", padding=True
    )
    assert inputs["pixel_values"].shape == (2, 3, TINY_CLIP_IMAGE_SIZE, TINY_CLIP_IMAGE_SIZE)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (2, 2)
    assert sum(p.stat().st_size for p in tiny_clip.rglob("*") if p.is_file()) < 1e6


def test_tiny_clip_is_deterministic(tiny_clip, tmp_path):
    assert _weights(build_tiny_clip(tmp_path / "again")) == _weights(tiny_clip)


@pytest.mark.skipif(not (FIXTURES / "tiny-sd").is_dir(), reason="run fixtures/build_tiny_models.py")
def test_committed_fixtures_load():
    from diffusers import DiffusionPipeline
    from transformers import CLIPModel

    pipe = DiffusionPipeline.from_pretrained(FIXTURES / "tiny-sd", use_safetensors=True)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == TINY_SD_IMAGE_SIZE
    CLIPModel.from_pretrained(FIXTURES / "tiny-clip", local_files_only=True, use_safetensors=True)


def test_fixture_script_is_byte_reproducible(tmp_path):
    import importlib.util

    script_path = FIXTURES / "build_tiny_models.py"
    spec = importlib.util.spec_from_file_location("build_tiny_models", script_path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    before = torch.get_num_threads()
    try:
        assert script.main(["--out", str(tmp_path / "a")]) == 0
        assert script.main(["--out", str(tmp_path / "b")]) == 0
    finally:
        torch.set_num_threads(before)
    for name in ("tiny-sd", "tiny-clip"):
        a, b = tmp_path / "a" / name, tmp_path / "b" / name
        files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
