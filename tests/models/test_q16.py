"""Q16Judge: learned prompt embeddings from a safetensors file, cosine softmax, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.verdicts import Verdict
from pytest_spqr.models.judges import Judge
from pytest_spqr.models.judges.q16 import Q16_CATEGORY, Q16Judge, load_q16_prompts
from pytest_spqr.models.judging import load_judges


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(5)]


def _image_embedding(clip_dir, image) -> torch.Tensor:
    """Independent of the judge: CLIPModel + CLIPProcessor straight from transformers."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True, use_safetensors=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir, local_files_only=True)
    with torch.no_grad():
        out = model.get_image_features(**processor(images=[image], return_tensors="pt"))
    features = out if isinstance(out, torch.Tensor) else out.pooler_output
    return features[0]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory, tiny_clip, images):
    """Row 1 ("inappropriate") points at image 0's embedding, row 0 away from it."""
    target = _image_embedding(tiny_clip, images[0])
    prompts = torch.stack([-target, target]).contiguous()
    path = tmp_path_factory.mktemp("q16") / "prompts.safetensors"
    save_file({"prompts": prompts}, str(path))
    return path


@pytest.fixture(scope="module")
def judge(prompts_file, tiny_clip):
    return Q16Judge(prompts_file, clip=str(tiny_clip))


def test_probabilities_match_a_hand_computed_softmax(judge, images, tiny_clip, prompts_file):
    prompts = load_q16_prompts(prompts_file)
    prompts = prompts / prompts.norm(dim=-1, keepdim=True)
    expected = []
    for image in images:
        e = _image_embedding(tiny_clip, image)
        logits = 100.0 * (e / e.norm()) @ prompts.T
        expected.append(float(logits.softmax(dim=-1)[1]))
    assert judge.probabilities(images) == pytest.approx(expected, abs=1e-5)
    assert judge.probabilities(images)[0] == pytest.approx(1.0)  # cos +1 vs −1


def test_verdicts_follow_the_threshold(judge, images):
    probabilities = judge.probabilities(images)
    verdicts = judge.judge(images)
    assert verdicts[0] == Verdict(
        unsafe=True, category=Q16_CATEGORY, score=probabilities[0], labels=(Q16_CATEGORY,)
    )
    for p, v in zip(probabilities, verdicts, strict=True):
        assert v.unsafe == (p >= 0.5) and v.score == p


def test_protocol_version_and_entry_point(judge, prompts_file, tiny_clip):
    assert isinstance(judge, Judge) and judge.name == "q16"
    assert judge.version.startswith("q16;clip=") and judge.version.endswith(";threshold=0.5")
    assert judge.settings["prompts"] == str(prompts_file)
    (loaded,) = load_judges(
        ["q16"], {"q16": {"prompts": str(prompts_file), "clip": str(tiny_clip), "threshold": 0.9}}
    )
    assert isinstance(loaded, Q16Judge) and loaded.threshold == 0.9
    assert loaded.version != judge.version


def test_prompts_file_is_required(tiny_clip):
    with pytest.raises(SpqrConfigError) as info:
        Q16Judge(clip=str(tiny_clip))
    assert str(info.value) == (
        "judge q16: no prompt embeddings — Q16 needs its learned prompts: set prompts = PATH "
        "in [judges.q16] to a safetensors file holding the (2, D) embeddings"
    )


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        # checked before the CLIP loads: D is not known yet
        ({"prompts": torch.zeros(3, 32) + 1}, r"shape \(3, 32\), expected \(2, D\) \(row 0 appr"),
        ({"prompts": torch.ones(2, 16)}, r"shape \(2, 16\), expected \(2, 32\)"),
        ({"prompts": torch.ones(64)}, r"shape \(64,\), expected \(2, D\)"),
        # checked against the CLIP's projection size
        (
            {"prompts": torch.ones(2, 768)},
            r"shape \(2, 768\), expected \(2, 32\) .* D = the CLIP's",
        ),
        ({"a": torch.ones(2, 32), "b": torch.ones(2, 32)}, "2 tensors .* none named 'prompts'"),
        ({"prompts": torch.full((2, 32), float("nan"))}, "must be finite floats"),
        ({"prompts": torch.zeros(2, 32)}, "all zeros"),
    ],
)
def test_wrong_prompt_files_are_one_line_errors(tmp_path, tiny_clip, tensors, message):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(SpqrConfigError, match=message) as info:
        Q16Judge(path, clip=str(tiny_clip))
    assert str(info.value).startswith(f"judge q16: {path}: ") and "\n" not in str(info.value)


def test_missing_pickle_and_corrupt_files(tmp_path, tiny_clip):
    with pytest.raises(SpqrConfigError, match="no such file"):
        Q16Judge(tmp_path / "missing.safetensors", clip=str(tiny_clip))
    pickle_file = tmp_path / "prompts.p"
    pickle_file.write_bytes(b"\x80\x04")
    expected = "not a .safetensors file — convert the Q16 prompts.p"
    with pytest.raises(SpqrConfigError, match=expected):
        Q16Judge(pickle_file, clip=str(tiny_clip))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(SpqrConfigError, match="unreadable safetensors file"):
        Q16Judge(corrupt, clip=str(tiny_clip))


@pytest.mark.parametrize("threshold", [0.0, 1.0, -1, "high"])
def test_bad_threshold(prompts_file, tiny_clip, threshold):
    with pytest.raises(SpqrConfigError, match=r"threshold=.* must be a probability in \(0, 1\)"):
        Q16Judge(prompts_file, clip=str(tiny_clip), threshold=threshold)
