"""FidScorer: torchmetrics FID with a tiny feature extractor, checked against an independent
numpy/scipy Fréchet distance; reference-statistics cache; sample-size warnings; errors."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.models.fid import (
    STABLE_FID_MIN_IMAGES,
    ClipImageFeatures,
    FidCacheWarning,
    FidSampleSizeWarning,
    FidScorer,
    feature_identity,
)


class TinyFeatures(torch.nn.Module):
    """A seeded conv + linear: uint8 (N, 3, 16, 16) → (N, 6)."""

    num_features = 6
    input_size = 16

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.linear = torch.nn.Linear(4 * 4 * 4, 6)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x.float() / 255.0))
        return self.linear(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def _random_images(seed: int, n: int, sizes=((40, 50), (32, 32), (60, 45))) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in (sizes[i % len(sizes)] for i in range(n))
    ]


@pytest.fixture
def reference_dir(tmp_path) -> Path:
    folder = tmp_path / "reference"
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(_random_images(0, 20)):
        image.save(folder / ("sub" if i % 4 == 0 else ".") / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"ignored: hidden")
    return folder


@pytest.fixture
def generated() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 180, (32, 32, 3), dtype=np.uint8)) for _ in range(12)]


def _square(image: Image.Image, size: int) -> np.ndarray:
    """The documented preprocessing, written again with PIL: center square crop, bicubic."""
    rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb).transpose(2, 0, 1)


def _reference_fid(extractor, reference: list, generated: list, size: int) -> float:
    """Fréchet distance from numpy means/covariances and scipy's sqrtm (not torchmetrics)."""

    def features(images):
        batch = torch.from_numpy(np.stack([_square(i, size) for i in images]))
        with torch.no_grad():
            return extractor(batch).double().numpy()

    real, fake = features(reference), features(generated)
    mu_r, mu_g = real.mean(axis=0), fake.mean(axis=0)
    sigma_r, sigma_g = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma_r @ sigma_g).real
    return float(((mu_r - mu_g) ** 2).sum() + np.trace(sigma_r + sigma_g - 2 * covmean))


def _reference_images(folder: Path) -> list[Image.Image]:
    files = sorted(
        (p for p in folder.rglob("*.png") if not p.name.startswith(".")),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    return [Image.open(p) for p in files]


def test_fid_matches_an_independent_numpy_scipy_computation(reference_dir, generated):
    scorer = FidScorer(reference_dir, feature=TinyFeatures(), min_stable=2)
    result = scorer.fid(generated)
    expected = _reference_fid(TinyFeatures(), _reference_images(reference_dir), generated, 16)
    assert result.value == pytest.approx(expected, rel=1e-9)
    assert (result.n_generated, result.n_reference) == (12, 20)
    assert (result.num_features, result.image_size, result.cache_hit) == (6, 16, False)
    assert result.stable and not scorer.higher_is_better


def test_fid_of_a_set_with_itself_is_zero(reference_dir):
    scorer = FidScorer(reference_dir, feature=TinyFeatures(), min_stable=2)
    assert scorer.fid(_reference_images(reference_dir)).value == pytest.approx(0.0, abs=1e-8)


def _cached(reference_dir, cache) -> FidScorer:
    return FidScorer(reference_dir, feature=TinyFeatures(), cache_dir=cache, min_stable=2)


def test_reference_statistics_are_cached_and_reused(reference_dir, generated, tmp_path):
    cache = tmp_path / "cache"
    first = _cached(reference_dir, cache).fid(generated)
    files = sorted(p.name for p in (cache / "fid").iterdir())
    key = first.reference_key
    assert files == [f"{key}.safetensors", f"{key}.safetensors.lock"]
    again = _cached(reference_dir, cache).fid(generated)
    assert again.cache_hit and again.value == first.value and again.reference_key == key


def test_cache_key_follows_folder_contents_and_extractor(reference_dir, generated, tmp_path):
    cache = tmp_path / "cache"

    def key(**kwargs):
        options = {"feature": TinyFeatures(), "cache_dir": cache, "min_stable": 2} | kwargs
        return FidScorer(reference_dir, **options).reference_statistics().key

    base = key()
    assert key(feature=TinyFeatures(seed=1)) != base  # other weights
    assert key(image_size=20) != base
    _random_images(5, 1)[0].save(reference_dir / "new.png")
    assert key() != base  # a file added
    (reference_dir / "new.png").unlink()
    assert key() == base
    (reference_dir / "01.png").rename(reference_dir / "01-renamed.png")
    assert key() != base  # names count too


@pytest.mark.parametrize("damage", ["flip-a-byte", "truncate", "garbage"])
def test_corrupt_cache_is_recomputed_with_a_warning(reference_dir, generated, tmp_path, damage):
    cache = tmp_path / "cache"
    first = _cached(reference_dir, cache).fid(generated)
    path = cache / "fid" / f"{first.reference_key}.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "flip-a-byte":
        data[-3] ^= 0xFF  # inside the tensor data: only the checksum notices
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a safetensors file")
    path.write_bytes(bytes(data))
    with pytest.warns(FidCacheWarning, match="cached FID reference statistics ignored"):
        again = _cached(reference_dir, cache).fid(generated)
    assert not again.cache_hit and again.value == first.value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next read is clean
        third = _cached(reference_dir, cache).fid(generated)
    assert third.cache_hit
    assert not [p for p in (cache / "fid").iterdir() if p.name.endswith(".tmp")]


def test_small_samples_warn_with_the_recommended_size(reference_dir, generated):
    assert STABLE_FID_MIN_IMAGES == 10_000
    scorer = FidScorer(reference_dir, feature=TinyFeatures())
    with pytest.warns(FidSampleSizeWarning) as record:
        result = scorer.fid(generated[:5])
    message = str(record[0].message)
    assert "from 5 generated and 20 reference images is unstable" in message
    assert "at least 10,000 images per side" in message
    assert "with 5 images and 6 features the covariance is singular" in message
    assert not result.stable and result.min_stable == 10_000


def test_fewer_than_two_images_is_an_error(reference_dir, generated, tmp_path):
    scorer = FidScorer(reference_dir, feature=TinyFeatures(), min_stable=2)
    with pytest.raises(ValueError, match="FID needs at least 2 generated images, got 1"):
        scorer.fid(generated[:1])
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    generated[0].save(lonely / "one.png")
    expected = r"1 reference image\(s\) found, FID needs at least 2"
    with pytest.raises(SpqrConfigError, match=expected):
        FidScorer(lonely, feature=TinyFeatures()).fid(generated)


def test_reference_folder_errors(tmp_path, generated):
    expected = "no such folder — pass --spqr-reference-images=DIR"
    with pytest.raises(SpqrConfigError, match=expected):
        FidScorer(tmp_path / "missing", feature=TinyFeatures())
    broken = tmp_path / "broken"
    broken.mkdir()
    generated[0].save(broken / "a.png")
    (broken / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(SpqrConfigError, match=r"b\.jpg: not a readable image"):
        FidScorer(broken, feature=TinyFeatures()).fid(generated)


def test_feature_option_errors(reference_dir):
    class NoSize(torch.nn.Module):
        def forward(self, x):
            return x.float().mean(dim=(2, 3))

    with pytest.raises(SpqrConfigError, match="has no int num_features"):
        FidScorer(reference_dir, feature=NoSize())
    with pytest.raises(SpqrConfigError, match="Inception offers 64, 192, 768, 2048"):
        FidScorer(reference_dir, feature=1000)
    with pytest.raises(SpqrConfigError, match="use 'inception', 'clip:PATH' or an nn.Module"):
        FidScorer(reference_dir, feature="vgg")


@pytest.mark.skipif(
    importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed"
)
def test_inception_without_torch_fidelity_says_what_to_do(reference_dir):
    with pytest.raises(SpqrConfigError) as info:
        FidScorer(reference_dir)  # the default feature
    assert str(info.value).startswith("FID with Inception features needs torch-fidelity")
    assert "feature='clip:PATH'" in str(info.value) and "\n" not in str(info.value)


def test_clip_image_tower_as_the_extractor(reference_dir, generated, tiny_clip, tmp_path):
    scorer = FidScorer(reference_dir, feature=f"clip:{tiny_clip}", cache_dir=tmp_path, min_stable=2)
    assert scorer.image_size == 32 and scorer.num_features == 32
    assert scorer.feature.startswith("pytest_spqr.models.fid.ClipImageFeatures;clip-image;size=32;")
    result = scorer.fid(generated)
    extractor = ClipImageFeatures(str(tiny_clip))
    expected = _reference_fid(extractor, _reference_images(reference_dir), generated, 32)
    assert result.value == pytest.approx(expected, rel=1e-9)
    assert feature_identity(extractor) == scorer.feature
