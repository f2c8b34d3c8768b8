"""FID's feature extractors: a CLIP's image tower, torch-fidelity's Inception, any module.

Split from :mod:`pytest_spqr.models.fid` so that the scorer can be built, and a cached FID
read back, without importing torch: these classes subclass ``torch.nn.Module``. They are
still importable from ``pytest_spqr.models.fid``, and keep that module path in their
identity (so cache keys written before the split stay valid).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.models.fid import _INCEPTION_WEIGHTS, INCEPTION_FEATURES

__all__ = ["ClipImageFeatures", "Float64Features", "extractor_for", "feature_identity",
           "state_dict_digest"]


def state_dict_digest(module: torch.nn.Module) -> str:
    """BLAKE2b of a module's state dict (names, dtypes, shapes, values): its weights' identity."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_identity(module: torch.nn.Module) -> str:
    """What makes two extractors give the same features: class, settings, weights.

    A module may add settings that are not weights (a resize, a normalisation) as a
    string attribute ``spqr_identity``.
    """
    cls = type(module)
    extra = getattr(module, "spqr_identity", None)
    parts = [f"{cls.__module__}.{cls.__qualname__}", f"weights={state_dict_digest(module)}"]
    if extra:
        parts.insert(1, str(extra))
    return ";".join(parts)


class ClipImageFeatures(torch.nn.Module):
    """A CLIP image tower as an FID feature extractor: projected image embeddings.

    Takes uint8 ``(N, 3, H, W)`` batches, resizes the shorter side to the CLIP's input
    size (bicubic, antialiased), center-crops, normalises with the CLIP's mean and std,
    and returns ``(N, num_features)`` float64 embeddings (not L2-normalised). Built from
    a :class:`~pytest_spqr.models.clip.ClipScorer` or a CLIP folder / cached hub id.
    """

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(
        self, clip: Any, *, device: str | torch.device = "cpu", allow_pickle: bool = False
    ) -> None:
        super().__init__()
        from pytest_spqr.models.clip import ClipScorer

        scorer = clip if isinstance(clip, ClipScorer) else ClipScorer(
            clip, device=device, allow_pickle=allow_pickle
        )
        self.spec = scorer.spec
        self.clip = scorer.model
        image_processor = scorer.processor.image_processor
        crop = getattr(image_processor, "crop_size", None) or {}
        size = crop.get("height") or self.clip.config.vision_config.image_size
        self.input_size = int(size)
        mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.num_features = int(self.clip.config.projection_dim)
        self.spqr_identity = (
            f"clip-image;size={self.input_size};mean={list(image_processor.image_mean)};"
            f"std={list(image_processor.image_std)}"
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.mean.device, torch.float32) / 255.0
        height, width = x.shape[-2:]
        scale = self.input_size / min(height, width)
        if scale != 1.0:
            size = (
                max(self.input_size, round(height * scale)),
                max(self.input_size, round(width * scale)),
            )
            x = torch.nn.functional.interpolate(
                x, size=size, mode="bicubic", align_corners=False, antialias=True
            )
        top = (x.shape[-2] - self.input_size) // 2
        left = (x.shape[-1] - self.input_size) // 2
        x = x[..., top : top + self.input_size, left : left + self.input_size]
        x = ((x - self.mean) / self.std).to(self.clip.dtype)
        with torch.inference_mode():
            out = self.clip.get_image_features(pixel_values=x)
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        return features.double()


class Float64Features(torch.nn.Module):
    """Wraps an extractor: output reshaped to (N, D) and cast to float64 for exact sums."""

    def __init__(self, inner: torch.nn.Module, num_features: int) -> None:
        super().__init__()
        self.inner = inner
        self.num_features = num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.inner(images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(images.shape[0], -1).double()


def _inception(feature: int, weights: str | os.PathLike[str] | None) -> torch.nn.Module:
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        raise SpqrConfigError(
            "FID with Inception features needs torch-fidelity (pip install torch-fidelity, "
            "which needs a working torchvision) and its weights on disk — or choose an offline "
            "extractor, e.g. feature='clip:PATH' (the --spqr-clip model)"
        )
    default = Path(torch.hub.get_dir()) / "checkpoints" / _INCEPTION_WEIGHTS
    path = Path(weights) if weights else default
    if not path.is_file():
        raise SpqrConfigError(
            f"{path}: FID Inception weights not found and nothing is downloaded at run time — "
            f"fetch {_INCEPTION_WEIGHTS} once (torch-fidelity downloads it on first use) or "
            "pass inception_weights=PATH"
        )
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[str(feature)],
        feature_extractor_weights_path=str(path),
    )
    net.spqr_identity = f"torch-fidelity-inception-v3-compat;features={feature}"
    return net


def extractor_for(
    feature: Any, *, device: torch.device, inception_weights: Any
) -> tuple[torch.nn.Module, int, int | None]:
    """(extractor, num_features, preferred input size or None)."""
    if isinstance(feature, str) and feature.startswith("clip:"):
        module = ClipImageFeatures(feature[len("clip:") :], device=device)
        return module, module.num_features, module.input_size
    if isinstance(feature, str) and feature.startswith("inception"):
        size = feature.partition("-")[2] or "2048"
        if not size.isdigit():
            raise SpqrConfigError(
                f"FID feature {feature!r}: use inception, inception-2048 (or -64/-192/-768), "
                "clip:PATH, or an nn.Module"
            )
        feature = int(size)
    if isinstance(feature, int) and not isinstance(feature, bool):
        if feature not in INCEPTION_FEATURES:
            raise SpqrConfigError(
                f"FID feature {feature}: Inception offers "
                f"{', '.join(map(str, INCEPTION_FEATURES))} features (2048 is the standard FID)"
            )
        return _inception(feature, inception_weights), feature, 299
    if isinstance(feature, torch.nn.Module):
        num = getattr(feature, "num_features", None)
        if isinstance(num, torch.Tensor):
            num = int(num.item())
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise SpqrConfigError(
                f"FID feature extractor {type(feature).__name__} has no int num_features — set "
                "module.num_features to the size of the feature vector it returns"
            )
        return feature, num, getattr(feature, "input_size", None)
    raise SpqrConfigError(
        f"FID feature {feature!r}: use 'inception', 'clip:PATH' or an nn.Module with num_features"
    )


ClipImageFeatures.__module__ = "pytest_spqr.models.fid"  # its public home, and its identity
