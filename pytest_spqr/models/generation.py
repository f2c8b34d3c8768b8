"""Generate the images an evaluation needs, each at most once.

Every image has one seed derived from the run seed and the prompt's identity, and is
generated with its own CPU generator, so an image does not depend on the order of the
prompts, the batch it falls in, or the worker that made it. Images are stored as PNG
with a JSON sidecar in the run's :class:`~pytest_spqr.models.store.Store`; a later
request for the same (model, prompt, seed, sampler settings) reuses the stored file after
checking its checksum. Under pytest-xdist, workers that need the same images split them:
each claims the images no other worker is making and waits for the rest.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.prompts import Prompt
from pytest_spqr.core.seeds import seed_for
from pytest_spqr.models.pipe_state import check_unchanged, pipe_state
from pytest_spqr.models.store import Store, digest

log = logging.getLogger("pytest_spqr.generation")

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
    """What the image was asked for (model, prompt, seed, settings): its place in the cache."""
    path: Path
    sha256: str = ""
    """The SHA-256 of the PNG: what its verdicts are keyed by (they belong to the pixels)."""


ProgressFactory = Callable[[int, str], AbstractContextManager[Callable[..., None]]]
"""``progress(total, desc)`` → a context yielding ``advance(n, **postfix)`` (see
:mod:`pytest_spqr.progress`; postfix values such as ``loss=`` are shown beside the count)."""


def requests_for(prompts: Iterable[Prompt], samples: int, base_seed: int) -> list[ImageRequest]:
    """One request per (prompt, sample), with the seed derived from the prompt's identity."""
    return [
        ImageRequest(prompt, sample, seed_for(base_seed, prompt, sample))
        for prompt in prompts
        for sample in range(samples)
    ]


def _no_progress(total: int, desc: str, unit: str = "img") -> AbstractContextManager[Callable[..., None]]:
    return nullcontext(lambda n, **postfix: None)


class ImageGenerator:
    """Generates and stores images of one pipeline under fixed sampler settings."""

    def __init__(
        self,
        pipe: Any,
        *,
        load_pipe: Callable[[], Any] | None = None,
        model_fingerprint: str,
        model_label: str,
        settings: SamplerSettings,
        cache_dir: Path,
        batch_size: int = 8,
        progress: ProgressFactory = _no_progress,
    ) -> None:
        self._pipe = pipe
        self._load_pipe = load_pipe
        self._pipe_state = None if pipe is None else pipe_state(pipe)
        """The pipeline's state when this generator got it: it must not change (see
        :mod:`pytest_spqr.models.pipe_state`)."""
        self.model_fingerprint = model_fingerprint
        self.model_label = model_label
        self.settings = settings
        self.store = Store(Path(cache_dir))
        self.namespace = f"images/{model_fingerprint[:16]}"
        self.image_dir = self.store.root / self.namespace
        self.batch_size = batch_size
        self.progress = progress
        self._memo: dict[str, GeneratedImage] = {}
        self.generated = 0
        """Images this generator ran the pipeline for (not reused from disk)."""
        self.generated_remote = 0
        """Images Ray tasks made for this generator (``--spqr-executor=ray``)."""
        self.remote: Callable[[ImageGenerator, list[tuple[str, ImageRequest]]],
                              Iterable[tuple[str, bytes, float]]] | None = None
        """Makes images elsewhere (see :mod:`pytest_spqr.models.ray_backend`): called with
        this generator and the claimed ``(key, request)`` pairs, it yields ``(key, png,
        guidance)`` as they finish; None: this process runs the pipeline."""
        self.oom_halvings = 0
        """How often an out-of-memory error halved :attr:`batch_size`."""

    @property
    def pipe(self) -> Any:
        """The pipeline; loaded on first use when built with ``load_pipe`` (a run whose
        images are all stored never loads it)."""
        if self._pipe is None and self._load_pipe is not None:
            self._pipe = self._load_pipe()
            self._pipe_state = pipe_state(self._pipe)
        return self._pipe

    @property
    def pipe_loaded(self) -> bool:
        return self._pipe is not None

    def key(self, request: ImageRequest) -> str:
        guidance = request.guidance_override
        return digest(
            {
                "format": IMAGE_FORMAT_VERSION,
                "model": self.model_fingerprint,
                "prompt": request.prompt.text,
                "seed": request.seed,
                "settings": asdict(self.settings)
                | ({"guidance": guidance} if guidance is not None else {}),
            }
        )

    def _stored(self, request: ImageRequest, key: str) -> GeneratedImage | None:
        found = self.store.get_blob_checked(self.namespace, key, "png")
        return None if found is None else GeneratedImage(request, key, *found)

    def generate(self, requests: Sequence[ImageRequest]) -> list[GeneratedImage]:
        """Images for the requests, in order, generating only those never made before.

        Refused when the pipeline was changed since it was loaded: its images, stored or
        new, would be the loaded model's under its fingerprint."""
        if self._pipe is not None and self._pipe_state is not None:
            check_unchanged(self._pipe_state, self._pipe, self.model_label)
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
            desc = f"spqr: generating {len(missing)} images ({self.model_label})"
            with self.progress(len(missing), desc) as advance:
                others = self._generate_unclaimed(list(missing.items()), advance)
                self._await_others(others, advance)
        return [self._memo[key] for _, key in keyed]

    def _generate_unclaimed(
        self, todo: list[tuple[str, ImageRequest]], advance: Callable[[int], None]
    ) -> list[tuple[str, ImageRequest]]:
        """Make every image no other process is making, a batch at a time; return the rest.

        A batch's claims are held while it is made: here by the pipeline, or, with
        :attr:`remote`, by Ray actors in shards (a larger batch, so they all have work),
        each image stored as it comes back."""
        others: list[tuple[str, ImageRequest]] = []
        size = self.batch_size if self.remote is None else max(self.batch_size, 256)
        queue = deque(sorted(todo, key=lambda item: item[1].guidance_override or -1.0))
        while queue:
            with ExitStack() as locks:
                batch: list[tuple[str, ImageRequest]] = []
                while queue and len(batch) < size:
                    key, request = queue.popleft()
                    if not locks.enter_context(self.store.claim(self.namespace, key, wait=False)):
                        others.append((key, request))
                        continue
                    stored = self._stored(request, key)  # finished by another worker meanwhile
                    if stored is not None:
                        self._memo[key] = stored
                        advance(1)
                    else:
                        batch.append((key, request))
                if not batch:
                    continue
                if self.remote is None:
                    self._run(batch)
                    advance(len(batch))
                    continue
                requests = dict(batch)
                for key, png, guidance in self.remote(self, batch):
                    self._store(requests[key], key, png, guidance)
                    self.generated_remote += 1
                    advance(1)
        return others

    def _await_others(
        self, others: list[tuple[str, ImageRequest]], advance: Callable[[int], None]
    ) -> None:
        """Wait for images other workers claimed; make any whose producer died."""
        for key, request in others:
            with self.store.claim(self.namespace, key, wait=True):
                stored = self._stored(request, key)
                if stored is None:
                    self._run([(key, request)])
                else:
                    self._memo[key] = stored
            advance(1)

    def _run(self, todo: list[tuple[str, ImageRequest]]) -> None:
        for key, request, image, guidance in self.render(todo):
            self._store(request, key, encode_png(image), guidance)

    def render(self, todo: list[tuple[str, ImageRequest]]) -> Iterator[tuple[str, ImageRequest, Any, float]]:
        """Run the pipeline for ``todo``, a batch at a time: ``(key, request, image,
        guidance)`` as batches finish. Nothing is stored (a Ray task sends them back)."""
        # Prompts with their own guidance scale (I2P) are batched separately.
        groups: dict[float, list[tuple[str, ImageRequest]]] = {}
        for key, request in todo:
            guidance = request.guidance_override
            groups.setdefault(self.settings.guidance if guidance is None else guidance, []).append(
                (key, request)
            )
        for guidance, items in groups.items():
            start = 0
            while start < len(items):
                batch = items[start : start + self.batch_size]
                images = self._call(batch, guidance)
                if images is None:  # out of memory: self.batch_size was halved, try again
                    continue
                self.generated += len(batch)
                start += len(batch)
                for (key, request), image in zip(batch, images, strict=True):
                    yield key, request, image, guidance

    def _call(self, batch: list[tuple[str, ImageRequest]], guidance: float) -> list[Any] | None:
        """The pipeline's images for one batch, or ``None`` after halving the batch size on
        GPU out-of-memory (images do not depend on batching: per-image CPU generators)."""
        import torch

        generators = [torch.Generator("cpu").manual_seed(r.seed) for _, r in batch]
        try:
            with torch.inference_mode():
                output = self.pipe(
                    prompt=[request.prompt.text for _, request in batch],
                    num_inference_steps=self.settings.steps,
                    guidance_scale=guidance,
                    height=self.settings.height,
                    width=self.settings.width,
                    generator=generators,
                    output_type="np",  # float pixels: NaN/inf are still visible here
                )
        except torch.OutOfMemoryError as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(batch) == 1:
                raise SpqrConfigError(
                    f"out of memory generating a single {self.settings.height}×{self.settings.width} "
                    f"image ({self.model_label}) — lower --spqr-resolution, use --spqr-dtype=float16, "
                    "or free the device"
                ) from exc
            self.batch_size = max(1, len(batch) // 2)
            self.oom_halvings += 1
            log.warning("out of memory on a batch of %d images (%s): batch size now %d",
                        len(batch), self.model_label, self.batch_size)
            return None
        return self._to_images(output.images)

    def _to_images(self, images: Any) -> list[Any]:
        """The pipeline's float pixels as PIL images, cast as diffusers casts them; an image
        with NaN/inf values is flagged (see :mod:`pytest_spqr.models.degenerate`), so the
        judge panel refuses it rather than judge the black it turned into."""
        from pytest_spqr.models.degenerate import NONFINITE_KEY, to_pil

        converted = [image if hasattr(image, "getpixel") else to_pil(image) for image in images]
        broken = sum(NONFINITE_KEY in image.info for image in converted)
        if broken:
            log.warning("%d of %d images of %s have NaN/inf pixels (fp16 overflow?); "
                        "they will not be judged", broken, len(converted), self.model_label)
        return converted

    def _store(self, request: ImageRequest, key: str, png: bytes, guidance: float) -> None:
        meta = {
            "prompt": request.prompt.text,
            "categories": list(request.prompt.categories),
            "seed": request.seed,
            "sample": request.sample,
            "model": self.model_label,
            "model_fingerprint": self.model_fingerprint,
            "settings": asdict(self.settings) | {"guidance": guidance},
        }
        path = self.store.put_blob(self.namespace, key, "png", png, meta)
        self._memo[key] = GeneratedImage(request, key, path, hashlib.sha256(png).hexdigest())


def encode_png(image: Any) -> bytes:
    """PNG bytes of a PIL image, keeping its NaN/inf flag (a PNG text chunk) if it has one."""
    from pytest_spqr.models.degenerate import png_info

    buffer = io.BytesIO()
    info = png_info(image)
    if info is None:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
