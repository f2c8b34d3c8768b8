"""Prompt adherence P: CLIP cosine similarity between each image and its prompt.

:class:`ClipScorer` loads a CLIP model that is already on this machine — a folder, or
a hub id found in the local Hugging Face cache; nothing is downloaded — and scores
image/text pairs with torchmetrics' reference ``clip_score``::

    P(image, text) = max(cos(E_image, E_text), 0)

that is CLIPScore / 100 as the SPQR paper uses it (about 0.29 for SD 1.5 with
CLIP ViT-L/14). Like the reference CLIPScore, negative cosines are clamped to 0, so a
randomly initialised CLIP often reads exactly 0.0.

Two library traps are handled here:

* torchmetrics 1.9 accepts only model names containing "openai", "jinaai" or
  "zer0int", and with transformers 5 its own loader crashes because
  ``get_*_features`` now return output objects (torchmetrics issue #3407). It also
  takes a callable returning ``(model, processor)``; ours returns a thin wrapper
  whose ``get_*_features`` return the projected ``pooler_output`` tensors.
* torchmetrics pads texts but does not truncate them before the text tower sees them
  (it cuts ``input_ids`` afterwards, dropping the EOS token CLIP pools at). The
  processor we hand it truncates to the tokenizer's maximum length instead, keeping
  BOS and EOS, as the CLIP pipeline itself does.

torchmetrics' public ``clip_score`` returns the mean over a batch, so pairs are
scored one call each; P for a whole set is the mean of the returned list.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_spqr.core.errors import SpqrConfigError, first_line
from pytest_spqr.models.digests import file_digest

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL.Image import Image

__all__ = ["DEFAULT_CLIP_ID", "ClipScorer"]

DEFAULT_CLIP_ID = "openai/clip-vit-large-patch14"
"""The CLIP the SPQR paper reports prompt adherence with (CLIP ViT-L/14)."""

_CONTENT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")
_DTYPE_NAMES = {"float32": "float32", "float": "float32", "float16": "float16",
                "half": "float16", "bfloat16": "bfloat16", "float64": "float64",
                "double": "float64"}
"""Floating dtypes a CLIP runs in, by torch's names (aliases mapped to one spelling)."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ClipScorer:
    """Per-pair CLIP cosine similarity, computed with torchmetrics' ``clip_score``.

    ``spec`` is a folder holding a ``CLIPModel`` (``config.json``, weights, processor
    files) or a hub id already in the local Hugging Face cache. Weights load from
    safetensors only unless ``allow_pickle=True``; remote code is never run.

    Building one imports neither torch nor transformers: a run whose CLIP scores are all
    cached needs only :attr:`identity` (file digests), so torch is imported on first use.
    """

    def __init__(
        self,
        spec: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        allow_pickle: bool = False,
    ) -> None:
        self.spec = str(spec)
        self._device = device
        self._dtype_name = _dtype_name(dtype)
        folder = clip_folder(self.spec)
        if not allow_pickle and not any(folder.glob("*.safetensors")):
            raise SpqrConfigError(
                f"{self.spec}: no .safetensors weights in the CLIP folder — convert the "
                "checkpoint to safetensors, or pass allow_pickle=True for a file you trust"
            )
        if not (folder / "config.json").is_file():
            raise self._unloadable("no config.json")
        self.folder = folder
        self._allow_pickle = allow_pickle
        weights = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _CONTENT_SUFFIXES)
        content = hashlib.blake2b(digest_size=16)
        for path in weights:
            content.update(path.name.encode() + b"\0" + file_digest(path).encode())
        self.identity = f"clip;weights={content.hexdigest()};dtype={self._dtype_name}"
        """What makes two scores of one (image, prompt) pair the same: cache key material."""

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device(self._device)

    @property
    def dtype(self) -> torch.dtype:
        import torch

        dtype: torch.dtype = getattr(torch, self._dtype_name)
        return dtype

    def _unloadable(self, reason: str) -> SpqrConfigError:
        return SpqrConfigError(
            f"{self.spec}: cannot load a CLIP model and processor from it ({reason}) — "
            "point --spqr-clip at a CLIPModel folder (config.json, model.safetensors, "
            "tokenizer and preprocessor files)"
        )

    @cached_property
    def _loaded(self) -> tuple[Any, Any, int, tuple[Any, Any]]:
        """Model, processor, text length and torchmetrics' view of them, loaded on first use
        (a run whose CLIP scores are all cached never loads them)."""
        from pytest_spqr.models.library_noise import loading_quietly

        # the processor may log transformers' torchvision fallback; "Loading weights": noise
        with loading_quietly():
            from transformers import CLIPModel, CLIPProcessor

            try:
                model = CLIPModel.from_pretrained(
                    self.folder,
                    local_files_only=True,
                    use_safetensors=not self._allow_pickle,
                    dtype=self.dtype,
                )
                processor = CLIPProcessor.from_pretrained(self.folder, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise self._unloadable(first_line(exc)) from None
        model = model.to(self.device).eval()
        positions = model.config.text_config.max_position_embeddings
        max_length = int(min(processor.tokenizer.model_max_length, positions))
        wrapped = (_feature_model_class()(model), _TruncatingProcessor(processor, max_length))
        return model, processor, max_length, wrapped

    def load(self) -> ClipScorer:
        """Load the weights now (they load on first use otherwise); returns self."""
        self._loaded  # noqa: B018 - reading the cached property loads the weights
        return self

    @property
    def model(self) -> Any:
        return self._loaded[0]

    @property
    def processor(self) -> Any:
        return self._loaded[1]

    @property
    def max_length(self) -> int:
        return self._loaded[2]

    @property
    def _wrapped(self) -> tuple[Any, Any]:
        return self._loaded[3]

    def __repr__(self) -> str:
        return f"ClipScorer({self.spec!r}, device={str(self._device)!r}, dtype=torch.{self._dtype_name})"

    def score(self, images: Sequence[Image], texts: Sequence[str]) -> list[float]:
        """P for each (image, text) pair, in [0, 1]: max(cosine similarity, 0)."""
        import torch
        from torchmetrics.functional.multimodal import clip_score

        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, one per image, not one string")
        if len(images) != len(texts):
            raise ValueError(
                f"got {len(images)} images but {len(texts)} texts; pass one text per image"
            )
        scores = []
        with torch.inference_mode():
            for image, text in zip(images, texts, strict=True):
                pixels = _uint8_chw(image).to(self.device)
                value = clip_score(pixels, str(text), model_name_or_path=self._model_and_processor)
                scores.append(float(value) / 100.0)
        return scores

    def _model_and_processor(self) -> tuple[Any, Any]:
        return self._wrapped


@functools.cache
def _feature_model_class() -> type:
    """The wrapper class, defined on first use (it subclasses ``torch.nn.Module``, and this
    module is imported by runs that never load a CLIP)."""
    import torch

    class _FeatureModel(torch.nn.Module):
        """What torchmetrics expects of a CLIP: ``get_*_features`` returning tensors."""

        def __init__(self, clip: Any) -> None:
            super().__init__()
            self.clip = clip

        @property
        def config(self) -> Any:
            return self.clip.config

        def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
            out = self.clip.get_image_features(pixel_values=pixel_values.to(self.clip.dtype))
            return _pooled(out)

        def get_text_features(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
        ) -> torch.Tensor:
            out = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
            return _pooled(out)

    return _FeatureModel


def _pooled(out: Any) -> torch.Tensor:
    import torch

    # transformers < 5 returns the projected features; 5.x an output object holding them
    features = out if isinstance(out, torch.Tensor) else out.pooler_output
    return features.float()


class _TruncatingProcessor:
    """The CLIP processor, truncating texts to ``max_length`` tokens (BOS/EOS kept)."""

    def __init__(self, processor: Any, max_length: int) -> None:
        self.processor = processor
        self.max_length = max_length

    def __call__(self, text: Any = None, images: Any = None, **kwargs: Any) -> Any:
        if text is not None:
            kwargs.update(truncation=True, max_length=self.max_length)
        if images is not None:
            kwargs.setdefault("input_data_format", "channels_first")
        return self.processor(text=text, images=images, **kwargs)


def _uint8_chw(image: Image) -> torch.Tensor:
    """A PIL image as a uint8 (3, H, W) tensor (floats would be rescaled twice)."""
    import numpy as np
    import torch

    array = np.array(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _dtype_name(dtype: torch.dtype | str | None) -> str:
    """torch's name of a floating dtype given as a ``torch.dtype`` or a string (checked
    without importing torch)."""
    if dtype is None:
        return "float32"
    name = _DTYPE_NAMES.get(str(dtype).removeprefix("torch."))
    if name is None:
        raise SpqrConfigError(
            f"CLIP dtype {dtype!r} is not a torch dtype — use float32, float16 or bfloat16"
        )
    return name


def clip_folder(spec: str) -> Path:
    """The local folder for a CLIP spec: a directory, or a hub id's cached snapshot;
    a one-line :class:`SpqrConfigError` otherwise. Never downloads."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    looks_like_path = (
        path.exists()
        or spec.startswith((".", "/", "~"))
        or "\\" in spec
        or (path.parent != Path(".") and path.parent.is_dir())  # fixtures/missing-clip
    )
    if not looks_like_path and _HUB_ID.match(spec):
        from pytest_spqr.models.loading import hub_folder

        cached = hub_folder(spec)
        if cached is not None:
            return cached
        hub_id = spec
    else:
        hub_id = DEFAULT_CLIP_ID
    raise SpqrConfigError(
        f"{spec}: CLIP model not found locally — download it once with "
        f"huggingface-cli download {hub_id} or pass --spqr-clip=PATH to a CLIP folder"
    )
