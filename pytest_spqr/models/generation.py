"""Generate the images an evaluation needs, each at most once.

Every image has one seed derived from the run seed and the prompt's identity, and is
generated with its own CPU generator, so an image does not depend on the order of the
prompts, the batch it falls in, or the worker that made it. Images are stored as PNG
with a JSON sidecar under the cache directory, written atomically; a later request for
the same (model, prompt, seed, sampler settings) reuses the stored file after checking
its checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_spqr.core.prompts import Prompt
from pytest_spqr.core.seeds import seed_for

IMAGE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SamplerSettings:
    """Everything besides the model, prompt and seed that changes the pixels."""

    steps: int
    guidance: float
    height: int
    width: int
    device_type: str = "cpu"
    dtype: str = "float32"
    scheduler: str = ""


@dataclass(frozen=True)
class ImageRequest:
    prompt: Prompt
    sample: int
    seed: int

    @property
    def guidance_override(self) -> float | None:
        return self.prompt.guidance


@dataclass(frozen=True)
class GeneratedImage:
    request: ImageRequest
    key: str
    path: Path


ProgressFactory = Callable[[int, str], AbstractContextManager[Callable[[int], None]]]


def requests_for(prompts: Iterable[Prompt], samples: int, base_seed: int) -> list[ImageRequest]:
    """One request per (prompt, sample), with the seed derived from the prompt's identity."""
    return [
        ImageRequest(prompt, sample, seed_for(base_seed, prompt, sample))
        for prompt in prompts
        for sample in range(samples)
    ]


def _no_progress(total: int, desc: str) -> AbstractContextManager[Callable[[int], None]]:
    return nullcontext(lambda n: None)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ImageGenerator:
    """Generates and stores images of one pipeline under fixed sampler settings."""

    def __init__(
        self,
        pipe: Any,
        *,
        model_fingerprint: str,
        model_label: str,
        settings: SamplerSettings,
        cache_dir: Path,
        batch_size: int = 8,
        progress: ProgressFactory = _no_progress,
    ) -> None:
        self.pipe = pipe
        self.model_fingerprint = model_fingerprint
        self.model_label = model_label
        self.settings = settings
        self.image_dir = Path(cache_dir) / "images" / model_fingerprint[:16]
        self.batch_size = batch_size
        self.progress = progress
        self._memo: dict[str, GeneratedImage] = {}
        self.generated = 0
        """Images this generator ran the pipeline for (not reused from disk)."""

    def key(self, request: ImageRequest) -> str:
        guidance = request.guidance_override
        payload = {
            "format": IMAGE_FORMAT_VERSION,
            "model": self.model_fingerprint,
            "prompt": request.prompt.text,
            "seed": request.seed,
            "settings": asdict(self.settings)
            | ({"guidance": guidance} if guidance is not None else {}),
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        base = self.image_dir / key[:2] / key
        return base.with_suffix(".png"), base.with_suffix(".json")

    def _stored(self, request: ImageRequest, key: str) -> GeneratedImage | None:
        png, sidecar = self._paths(key)
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            data = png.read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("key") != key or meta.get("sha256") != hashlib.sha256(data).hexdigest():
            return None  # torn or corrupt entry: regenerate and overwrite
        return GeneratedImage(request, key, png)

    def generate(self, requests: Sequence[ImageRequest]) -> list[GeneratedImage]:
        """Images for the requests, in order, generating only those never made before."""
        keyed = [(request, self.key(request)) for request in requests]
        missing: dict[str, ImageRequest] = {}
        for request, key in keyed:
            if key in self._memo or key in missing:
                continue
            stored = self._stored(request, key)
            if stored is not None:
                self._memo[key] = stored
            else:
                missing[key] = request
        if missing:
            self._run(list(missing.items()))
        return [self._memo[key] for _, key in keyed]

    def _run(self, todo: list[tuple[str, ImageRequest]]) -> None:
        import torch

        # Prompts with their own guidance scale (I2P) are batched separately.
        groups: dict[float, list[tuple[str, ImageRequest]]] = {}
        for key, request in todo:
            guidance = request.guidance_override
            groups.setdefault(self.settings.guidance if guidance is None else guidance, []).append(
                (key, request)
            )
        desc = f"spqr: generating {len(todo)} images ({self.model_label})"
        with self.progress(len(todo), desc) as advance:
            for guidance, items in groups.items():
                for start in range(0, len(items), self.batch_size):
                    batch = items[start : start + self.batch_size]
                    generators = [
                        torch.Generator("cpu").manual_seed(request.seed) for _, request in batch
                    ]
                    with torch.inference_mode():
                        output = self.pipe(
                            prompt=[request.prompt.text for _, request in batch],
                            num_inference_steps=self.settings.steps,
                            guidance_scale=guidance,
                            height=self.settings.height,
                            width=self.settings.width,
                            generator=generators,
                            output_type="pil",
                        )
                    for (key, request), image in zip(batch, output.images, strict=True):
                        self._store(request, key, image, guidance)
                    self.generated += len(batch)
                    advance(len(batch))

    def _store(self, request: ImageRequest, key: str, image: Any, guidance: float) -> None:
        import io

        png, sidecar = self._paths(key)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        meta = {
            "key": key,
            "sha256": hashlib.sha256(data).hexdigest(),
            "prompt": request.prompt.text,
            "categories": list(request.prompt.categories),
            "seed": request.seed,
            "sample": request.sample,
            "model": self.model_label,
            "model_fingerprint": self.model_fingerprint,
            "settings": asdict(self.settings) | {"guidance": guidance},
        }
        _atomic_write(png, data)
        _atomic_write(sidecar, json.dumps(meta, indent=1, sort_keys=True).encode())
        self._memo[key] = GeneratedImage(request, key, png)
