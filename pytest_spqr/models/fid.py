"""Quality Q's raw measurement: the Fréchet distance between generated and reference images.

.. math::
    \\mathrm{FID} = \\lVert\\mu_r - \\mu_g\\rVert_2^2
                 + \\mathrm{Tr}\\left(\\Sigma_r + \\Sigma_g - 2(\\Sigma_r\\Sigma_g)^{1/2}\\right)

computed by torchmetrics' ``FrechetInceptionDistance`` on features of a chosen extractor
(paper section 3.1). :class:`FidScorer` compares a list of generated images with a folder
of reference images (e.g. a COCO val subset)::

    scorer = FidScorer("data/coco-val-1k", feature="clip:openai/clip-vit-large-patch14",
                       cache_dir=".spqr")
    result = scorer.fid(images)          # FidResult(value=..., n_generated=..., ...)

Feature extractors (``feature=``):

* ``"inception"`` (default) or ``64``/``192``/``768``/``2048``: the standard FID
  Inception-v3 of torch-fidelity, through torchmetrics. Needs torch-fidelity (which needs
  a working torchvision) and its weights already on disk — nothing is downloaded;
  otherwise a one-line :class:`~pytest_spqr.core.errors.SpqrConfigError` says what to do.
* ``"clip:SPEC"``: the image tower of a local CLIP (:class:`ClipImageFeatures`), e.g.
  the CLIP used for prompt adherence. Not comparable with Inception FIDs, but offline.
* any ``torch.nn.Module`` with an int ``num_features``, called on uint8 ``(N, 3, S, S)``
  batches and returning ``(N, num_features)``.

Decisions worth knowing:

* **Preprocessing.** Every image, generated or reference, is converted to RGB,
  center-cropped to a square and resized (bicubic) to ``image_size`` pixels: the
  extractor's ``input_size`` when it has one, else 299. Reference photos come in many
  sizes; a common square is what lets them be batched, and the same treatment on both
  sides keeps the comparison fair.
* **Reference statistics are cached** when ``cache_dir`` is given: the feature sum, the
  sum of outer products and the count (what torchmetrics accumulates), in float64, in a
  safetensors file keyed by the SHA-256 of the reference folder's files (names and
  bytes), the extractor's identity (:func:`feature_identity`: class and a digest of its
  weights) and the image size. Writes are atomic (temporary file + rename, under a file
  lock so xdist workers compute once); reads verify a SHA-256 of the tensors, and a
  corrupt or mismatched file is recomputed with a :class:`FidCacheWarning`.
* **FID values are cached too** (``cached_fid``/``remember_fid``), keyed by the generated
  images' cache keys, the reference folder's contents and the extractor. For a CLIP image
  tower the extractor's part is the CLIP's file digests, so reading a value back needs
  neither the CLIP nor torch: this module imports torch only to compute features (the
  extractors live in :mod:`pytest_spqr.models.fid_features`).
* **Sample size.** torchmetrics needs ≥ 2 images per side; fewer raise. FID is biased
  upwards at small N, and Heusel et al. (2017) recommend at least 10,000 images
  (:data:`STABLE_FID_MIN_IMAGES`); below ``min_stable`` images on either side a
  :class:`FidSampleSizeWarning` is issued and :attr:`FidResult.stable` is false. With no
  more images than features the covariance is singular and the FID is dominated by
  that; the warning says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_spqr.core.errors import SpqrConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL.Image import Image

    from pytest_spqr.models.clip import ClipScorer

__all__ = [
    "IMAGE_SUFFIXES",
    "INCEPTION_FEATURES",
    "STABLE_FID_MIN_IMAGES",
    "ClipImageFeatures",  # noqa: F822 - from fid_features, see __getattr__
    "FidCacheWarning",
    "FidResult",
    "FidSampleSizeWarning",
    "FidScorer",
    "ReferenceStatistics",
    "feature_identity",  # noqa: F822 - from fid_features, see __getattr__
    "reference_files",
    "state_dict_digest",  # noqa: F822 - from fid_features, see __getattr__
]

STABLE_FID_MIN_IMAGES = 10_000
"""Images per side below which FID is unstable and biased (Heusel et al. 2017, TTUR paper)."""

INCEPTION_FEATURES = (64, 192, 768, 2048)
"""Inception-v3 feature sizes torchmetrics offers; 2048 (the pool layer) is the standard FID."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
"""Files of a reference folder that count as images (case-insensitive)."""

_INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
_CACHE_FORMAT = "1"
_PREPROCESS = "rgb-center-crop-bicubic"


class FidSampleSizeWarning(UserWarning):
    """FID computed from fewer images than make it stable; compare such values with care."""


class FidCacheWarning(UserWarning):
    """A cached reference-statistics file was unreadable or did not match; it was recomputed."""


@dataclass(frozen=True)
class ReferenceStatistics:
    """Sufficient statistics of the reference features (what torchmetrics accumulates)."""

    features_sum: torch.Tensor
    """(D,) float64: Σ f."""
    features_cov_sum: torch.Tensor
    """(D, D) float64: Σ f fᵀ."""
    n: int
    key: str
    """Cache key: reference contents, extractor identity, image size."""
    cache_hit: bool = False
    path: Path | None = None
    """The cache file, when a cache directory is used."""


@dataclass(frozen=True)
class FidResult:
    """One FID measurement (lower is better, ≥ 0)."""

    value: float
    n_generated: int
    n_reference: int
    feature: str
    """The extractor's identity (see :func:`feature_identity`)."""
    num_features: int
    image_size: int
    reference_dir: str
    reference_key: str
    cache_hit: bool
    min_stable: int

    @property
    def stable(self) -> bool:
        """Both sides have at least ``min_stable`` images."""
        return min(self.n_generated, self.n_reference) >= self.min_stable


_MOVED = ("ClipImageFeatures", "feature_identity", "state_dict_digest")


def __getattr__(name: str) -> Any:
    """The extractors live in :mod:`pytest_spqr.models.fid_features` (they need torch,
    which this module does not import until a feature is computed)."""
    if name in _MOVED:
        from pytest_spqr.models import fid_features

        return getattr(fid_features, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- images -------------------------------------------------------------------------------


def _square(image: Image, size: int) -> torch.Tensor:
    """RGB, center-cropped to a square, resized (bicubic) to ``size``: uint8 (3, size, size)."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    rgb = image.convert("RGB")
    side = min(rgb.size)
    if rgb.width != rgb.height:
        left = (rgb.width - side) // 2
        top = (rgb.height - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    if side != size:
        rgb = rgb.resize((size, size), PILImage.Resampling.BICUBIC)
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def reference_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries skipped), sorted by path."""
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _contents_digest(folder: Path, files: Sequence[Path]) -> str:
    """The reference folder's identity: names and contents, each file read once per content
    across runs (:mod:`pytest_spqr.models.digests`), not on every run."""
    from pytest_spqr.models.digests import file_digest

    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(file_digest(path).encode())
    return digest.hexdigest()


# --- the cache ----------------------------------------------------------------------------


def _tensors_sha256(features_sum: torch.Tensor, cov_sum: torch.Tensor, n: int) -> str:
    import torch

    digest = hashlib.sha256()
    for t in (features_sum, cov_sum):
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(str(n).encode())
    return digest.hexdigest()


def _read_cache(path: Path, key: str, num_features: int) -> ReferenceStatistics | None:
    """The cached statistics, or None (with a warning) when the file is not trustworthy."""
    import torch
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            features_sum = handle.get_tensor("features_sum")
            cov_sum = handle.get_tensor("features_cov_sum")
        n = int(meta["n"])
        problem = None
        if meta.get("key") != key or meta.get("format") != _CACHE_FORMAT:
            problem = "its key does not match"
        elif features_sum.shape != (num_features,) or cov_sum.shape != (num_features, num_features):
            problem = "its tensors have the wrong shape"
        elif features_sum.dtype != torch.float64 or cov_sum.dtype != torch.float64:
            problem = "its tensors are not float64"
        elif _tensors_sha256(features_sum, cov_sum, n) != meta.get("sha256"):
            problem = "its checksum does not match (a torn or corrupt file)"
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        problem = f"it is unreadable ({type(exc).__name__})"
    if problem:
        warnings.warn(
            f"{path}: cached FID reference statistics ignored, {problem}; recomputing",
            FidCacheWarning,
            stacklevel=4,
        )
        return None
    return ReferenceStatistics(features_sum, cov_sum, n, key, cache_hit=True, path=path)


def _write_cache(path: Path, stats: ReferenceStatistics, meta: dict[str, str]) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = dict(meta)
    metadata.update(
        key=stats.key,
        format=_CACHE_FORMAT,
        n=str(stats.n),
        sha256=_tensors_sha256(stats.features_sum, stats.features_cov_sum, stats.n),
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(
            {
                "features_sum": stats.features_sum.contiguous(),
                "features_cov_sum": stats.features_cov_sum.contiguous(),
            },
            tmp,
            metadata=metadata,
        )
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --- the scorer ---------------------------------------------------------------------------


class FidScorer:
    """FID of generated images against a reference folder, with cached reference statistics.

    Args:
        reference_dir: folder of reference images (searched recursively; at least 2).
        feature: ``"inception"`` (default), an Inception size, ``"clip:SPEC"``, or an
            ``nn.Module`` with ``num_features`` (see the module docstring).
        cache_dir: where reference statistics are cached (``<cache_dir>/fid/``); None
            keeps them in memory only.
        image_size: side of the square images fed to the extractor; default: the
            extractor's ``input_size`` if it has one, else 299.
        batch_size: images per extractor call.
        device: where the extractor runs.
        min_stable: images per side below which a :class:`FidSampleSizeWarning` is issued
            (default :data:`STABLE_FID_MIN_IMAGES`).
        inception_weights: path of torch-fidelity's Inception weights, if not in the torch
            hub cache.

    A CLIP image tower (``"clip:SPEC"`` or a :class:`~pytest_spqr.models.clip.ClipScorer`)
    is loaded only when features are computed: :meth:`cached_fid` keys its answer by the
    CLIP's files (:attr:`ClipScorer.identity`), so a run whose FID is cached imports
    neither torch nor the CLIP. Other extractors are built (and checked) at once.
    """

    higher_is_better = False

    def __init__(
        self,
        reference_dir: str | os.PathLike[str],
        *,
        feature: Any = "inception",
        cache_dir: str | os.PathLike[str] | None = None,
        image_size: int | None = None,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        min_stable: int = STABLE_FID_MIN_IMAGES,
        inception_weights: str | os.PathLike[str] | None = None,
    ) -> None:
        self.reference_dir = Path(reference_dir).expanduser()
        if not self.reference_dir.is_dir():
            raise SpqrConfigError(
                f"{reference_dir}: no such folder — pass --spqr-reference-images=DIR, a "
                "folder of reference images (e.g. a COCO val subset)"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(min_stable, bool) or not isinstance(min_stable, int) or min_stable < 2:
            raise ValueError(f"min_stable must be an integer >= 2, got {min_stable!r}")
        self._device = device
        self._feature_arg = feature
        self._image_size_arg = image_size
        self._inception_weights = inception_weights
        self.batch_size = batch_size
        self.min_stable = min_stable
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._reference: ReferenceStatistics | None = None
        self._clip = _clip_tower(feature, device)
        if self._clip is None:
            self._built  # noqa: B018 - Inception or a module: built and checked now

    @cached_property
    def _built(self) -> tuple[Any, int, int, str]:
        """(extractor, num_features, image_size, feature identity), built on first use."""
        from pytest_spqr.models.fid_features import (
            ClipImageFeatures,
            extractor_for,
            feature_identity,
        )

        module: Any
        preferred: int | None
        if self._clip is not None:
            clip_module = ClipImageFeatures(self._clip)
            module, num, preferred = clip_module, clip_module.num_features, clip_module.input_size
        else:
            module, num, preferred = extractor_for(
                self._feature_arg, device=self.device, inception_weights=self._inception_weights
            )
        size = int(self._image_size_arg or preferred or 299)
        if size < 1:
            raise ValueError(f"image_size must be positive, got {self._image_size_arg!r}")
        return module.to(self.device).eval(), num, size, feature_identity(module)

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device(self._device)

    @property
    def extractor(self) -> Any:
        return self._built[0]

    @property
    def num_features(self) -> int:
        return self._built[1]

    @property
    def image_size(self) -> int:
        return self._built[2]

    @property
    def feature(self) -> str:
        """The extractor's identity (class, settings, weights' digest)."""
        return self._built[3]

    @cached_property
    def _result_identity(self) -> str:
        """What the cached FID results are keyed by: for a CLIP tower its files' digests,
        known without loading it; otherwise the built extractor's identity."""
        if self._clip is not None:
            return (f"clip-image-tower;{self._clip.identity};"
                    f"image_size={self._image_size_arg or 'the CLIP processor crop size'}")
        return f"{self.feature};image_size={self.image_size}"

    @cached_property
    def _reference_contents(self) -> tuple[list[Path], str]:
        """The reference files and their contents' digest (names and bytes)."""
        files = reference_files(self.reference_dir)
        return files, _contents_digest(self.reference_dir, files) if len(files) >= 2 else ""

    def __repr__(self) -> str:
        return (
            f"FidScorer({str(self.reference_dir)!r}, feature={self.feature.split(';')[0]!r}, "
            f"image_size={self.image_size})"
        )

    def _metric(self) -> Any:
        from torchmetrics.image.fid import FrechetInceptionDistance

        from pytest_spqr.models.fid_features import Float64Features

        wrapped = Float64Features(self.extractor, self.num_features)
        metric = FrechetInceptionDistance(feature=wrapped, reset_real_features=False)
        return metric.to(self.device)

    def _features_into(self, metric: Any, tensors: list[torch.Tensor], real: bool) -> None:
        import torch

        with torch.inference_mode():
            for start in range(0, len(tensors), self.batch_size):
                batch = torch.stack(tensors[start : start + self.batch_size]).to(self.device)
                metric.update(batch, real=real)

    def reference_statistics(self) -> ReferenceStatistics:
        """The reference side: from the cache when valid, else computed (and cached)."""
        if self._reference is None:
            self._reference = self._load_or_compute_reference()
        return self._reference

    def _load_or_compute_reference(self) -> ReferenceStatistics:
        files, contents = self._reference_contents
        if len(files) < 2:
            raise SpqrConfigError(
                f"{self.reference_dir}: {len(files)} reference image(s) found, FID needs at "
                f"least 2 (and {STABLE_FID_MIN_IMAGES:,} for a stable value) — add "
                f"{'/'.join(IMAGE_SUFFIXES)} files"
            )
        key_source = {
            "reference": contents,
            "feature": self.feature,
            "image_size": self.image_size,
            "preprocess": _PREPROCESS,
        }
        key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:32]
        if self.cache_dir is None:
            return self._compute_reference(files, key, None)
        path = self.cache_dir / "fid" / f"{key}.safetensors"
        from filelock import FileLock

        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            cached = _read_cache(path, key, self.num_features)
            if cached is not None:
                return cached
            stats = self._compute_reference(files, key, path)
            meta = {
                "reference_dir": str(self.reference_dir),
                "files": str(len(files)),
                "feature": self.feature,
                "image_size": str(self.image_size),
            }
            _write_cache(path, stats, meta)
        return stats

    def _compute_reference(
        self, files: list[Path], key: str, path: Path | None
    ) -> ReferenceStatistics:
        from PIL import Image as PILImage

        metric = self._metric()
        for start in range(0, len(files), self.batch_size):
            tensors = []
            for file in files[start : start + self.batch_size]:
                try:
                    with PILImage.open(file) as image:
                        tensors.append(_square(image, self.image_size))
                except (OSError, ValueError) as exc:
                    raise SpqrConfigError(
                        f"{file}: not a readable image ({type(exc).__name__}) — remove it from "
                        "the reference folder or replace it"
                    ) from None
            self._features_into(metric, tensors, real=True)
        return ReferenceStatistics(
            metric.real_features_sum.detach().cpu().clone(),
            metric.real_features_cov_sum.detach().cpu().clone(),
            int(metric.real_features_num_samples),
            key,
            cache_hit=False,
            path=path,
        )

    def _result_entry(self, image_keys: Sequence[str]) -> tuple[Any, str] | None:
        if self.cache_dir is None:
            return None
        from pytest_spqr.models.store import Store, digest

        files, contents = self._reference_contents
        if len(files) < 2:
            return None  # fid() says what is wrong
        key = digest({"feature": self._result_identity, "reference": contents,
                      "preprocess": _PREPROCESS, "images": list(image_keys)})
        return Store(self.cache_dir), key

    def cached_fid(self, image_keys: Sequence[str]) -> FidResult | None:
        """The FID stored for exactly these generated images (by their cache keys) against
        this reference and extractor, or ``None``; warns as :meth:`fid` would."""
        entry = self._result_entry(image_keys)
        payload = entry[0].get_json("fid-results", entry[1]) if entry else None
        try:
            result = FidResult(**payload) if isinstance(payload, dict) else None
        except TypeError:  # written by another version
            result = None
        if result is not None and not result.stable:
            warnings.warn(_sample_size_message(result), FidSampleSizeWarning, stacklevel=2)
        return result

    def remember_fid(self, image_keys: Sequence[str], result: FidResult) -> None:
        """Store ``result`` for :meth:`cached_fid` (no-op without a cache directory)."""
        entry = self._result_entry(image_keys)
        if entry is not None:
            entry[0].put_json("fid-results", entry[1], dataclasses.asdict(result))

    def fid(self, images: Sequence[Image]) -> FidResult:
        """FID of ``images`` against the reference folder (≥ 2 images per side)."""
        if len(images) < 2:
            raise ValueError(
                f"FID needs at least 2 generated images, got {len(images)} "
                f"({STABLE_FID_MIN_IMAGES:,} or more for a stable value)"
            )
        import torch

        reference = self.reference_statistics()
        metric = self._metric()
        metric.real_features_sum = reference.features_sum.to(self.device)
        metric.real_features_cov_sum = reference.features_cov_sum.to(self.device)
        metric.real_features_num_samples = torch.tensor(reference.n, device=self.device)
        tensors = [_square(image, self.image_size) for image in images]
        self._features_into(metric, tensors, real=False)
        value = float(metric.compute())
        result = FidResult(
            value=max(value, 0.0),  # eigenvalue round-off can leave a tiny negative
            n_generated=len(images),
            n_reference=reference.n,
            feature=self.feature,
            num_features=self.num_features,
            image_size=self.image_size,
            reference_dir=str(self.reference_dir),
            reference_key=reference.key,
            cache_hit=reference.cache_hit,
            min_stable=self.min_stable,
        )
        if not result.stable:
            warnings.warn(_sample_size_message(result), FidSampleSizeWarning, stacklevel=2)
        return result


def _clip_tower(feature: Any, device: Any) -> ClipScorer | None:
    """The CLIP whose image tower ``feature`` names (``clip:SPEC`` or a scorer), else None.
    Building a :class:`ClipScorer` checks its folder but loads nothing."""
    from pytest_spqr.models.clip import ClipScorer

    if isinstance(feature, ClipScorer):
        return feature
    if isinstance(feature, str) and feature.startswith("clip:"):
        return ClipScorer(feature[len("clip:"):], device=device)
    return None


def _sample_size_message(result: FidResult) -> str:
    fewest = min(result.n_generated, result.n_reference)
    text = (
        f"FID {result.value:.3f} from {result.n_generated} generated and {result.n_reference} "
        f"reference images is unstable and biased upwards: use at least {result.min_stable:,} "
        "images per side (Heusel et al. 2017 recommend 10,000)"
    )
    if fewest <= result.num_features:
        text += (
            f"; with {fewest} images and {result.num_features} features the covariance is "
            "singular, which dominates the value"
        )
    return text
