"""ClipScorer: torchmetrics' clip_score on a local CLIP, checked against a hand-computed cosine."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.models.clip import DEFAULT_CLIP_ID, ClipScorer
from pytest_spqr.models.tiny import build_tiny_clip

TEXTS = [
    "a photo of a cat",
    "a photo of a dog",
    "a red car parked in a city street at night",
    "a nude woman",
    "a bowl of fruit on a wooden table",
    "a bird flying over the sea",
    "a portrait of a man in a suit",
    "a watercolor painting of flowers " * 20,  # > 77 tokens: truncated
]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return ClipScorer(clip_dir)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    sizes = [(64, 64), (48, 80), (100, 60), (32, 32)] * 2
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def _reference(clip_dir, images, texts) -> list[float]:
    """max(cos, 0) from CLIPModel's own embeddings, without torchmetrics or uint8 tensors."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True, use_safetensors=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir, local_files_only=True)
    out = []
    for image, text in zip(images, texts, strict=True):
        inputs = processor(
            text=[text], images=[image], return_tensors="pt", padding=True, truncation=True
        )
        with torch.no_grad():
            result = model(**inputs)
        image_embeds = result.image_embeds / result.image_embeds.norm(dim=-1, keepdim=True)
        text_embeds = result.text_embeds / result.text_embeds.norm(dim=-1, keepdim=True)
        out.append(max(float((image_embeds * text_embeds).sum()), 0.0))
    return out


def test_scores_are_cosines_in_unit_interval(scorer, images):
    scores = scorer.score(images, TEXTS)
    assert len(scores) == len(TEXTS)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert scorer.score(images, TEXTS) == scores  # deterministic
    assert scorer.max_length == 77


def test_torchmetrics_path_matches_hand_computed_cosine(scorer, clip_dir, images):
    with warnings.catch_warnings():
        # e.g. torchmetrics' "Encountered caption longer than ..." warning
        warnings.simplefilter("error", UserWarning)
        scores = scorer.score(images, TEXTS)
    expected = _reference(clip_dir, images, TEXTS)
    assert scores == pytest.approx(expected, abs=1e-5)
    # the comparison means something only if some cosines are positive and some clamped
    assert any(s > 0.01 for s in expected) and any(s == 0.0 for s in expected)


def test_long_text_is_truncated_not_rejected(scorer, images):
    long_text = TEXTS[-1] * 5
    assert scorer.score([images[0]], [long_text]) == scorer.score([images[0]], [TEXTS[-1]])


def test_empty_and_mismatched_inputs(scorer, images):
    assert scorer.score([], []) == []
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        scorer.score(images[:2], TEXTS[:1])
    with pytest.raises(TypeError):
        scorer.score(images[:1], "a cat")


@pytest.mark.parametrize(
    ("spec", "hub_id"),
    [
        ("fixtures/no-such-clip", DEFAULT_CLIP_ID),
        ("./nowhere", DEFAULT_CLIP_ID),
        ("nobody/no-such-clip", None),
    ],
)
def test_not_found_is_one_line_with_the_fix(spec, hub_id):
    with pytest.raises(SpqrConfigError) as info:
        ClipScorer(spec)
    hub_id = hub_id or spec
    assert str(info.value) == (
        f"{spec}: CLIP model not found locally — download it once with "
        f"huggingface-cli download {hub_id} or pass --spqr-clip=PATH to a CLIP folder"
    )


def test_hub_id_resolves_from_the_local_cache(clip_dir, tmp_path, monkeypatch, images):
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--tiny-org--tiny-clip"
    shutil.copytree(clip_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = ClipScorer("tiny-org/tiny-clip")
    assert cached.score(images[:2], TEXTS[:2]) == ClipScorer(clip_dir).score(images[:2], TEXTS[:2])


def test_folder_without_safetensors_needs_allow_pickle(clip_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(clip_dir, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(SpqrConfigError, match="no .safetensors weights .* allow_pickle=True"):
        ClipScorer(folder)


def test_folder_that_is_not_a_clip(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(SpqrConfigError, match="cannot load a CLIP model and processor"):
        ClipScorer(tmp_path)


def test_dtype_argument(clip_dir):
    assert ClipScorer(clip_dir, dtype="float32").dtype is torch.float32
    with pytest.raises(SpqrConfigError, match="not a torch dtype"):
        ClipScorer(clip_dir, dtype="float99")


def test_weights_load_on_first_use_and_a_broken_config_says_so_then(clip_dir, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(clip_dir, folder)
    (folder / "config.json").write_text("{not json")
    scorer = ClipScorer(folder)  # identity from the files; nothing loaded yet
    assert scorer.identity.startswith("clip;weights=")
    with pytest.raises(SpqrConfigError, match="cannot load a CLIP model and processor"):
        scorer.load()


def test_identity_follows_the_weights(clip_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(clip_dir, copy)
    assert ClipScorer(copy).identity == ClipScorer(clip_dir).identity
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert ClipScorer(copy).identity != ClipScorer(clip_dir).identity
