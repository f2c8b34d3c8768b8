"""Find and load the pipeline under test: a diffusers folder, a single checkpoint file,
or a hub id already in the local cache.

Safety of the tool itself: weights load from safetensors unless the user opts in to
pickle, remote code never runs, and the pipeline's own safety checker is switched off
because SPQR measures the model, not its output filter.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.models.digests import file_digest
from pytest_spqr.models.library_noise import quiet_library_noise

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
WEIGHT_SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES
CONFIG_SUFFIXES = (".json", ".txt", ".model")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are, resolved from what the user typed."""

    spec: str
    """What the user passed (kept for messages and reports)."""
    path: Path
    """A pipeline folder, or the single checkpoint file."""
    kind: str
    """``folder``, ``single_file`` or ``hub`` (a hub id resolved to a cached folder)."""
    config: str | None = None
    """For ``single_file``: the folder or hub id holding the pipeline's configs."""

    @property
    def folder(self) -> Path | None:
        return None if self.kind == "single_file" else self.path

    @property
    def label(self) -> str:
        return self.spec


def hub_folder(repo_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot of ``repo_id``, or ``None``; never downloads."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a diffusers dependency
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))


def resolve_model(spec: str, *, config: str | None = None) -> ModelSource:
    """Turn ``--spqr-model`` into a :class:`ModelSource`, or a one-line error."""
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise SpqrConfigError(
                f"{spec}: not a checkpoint file (.safetensors) — pass a diffusers folder "
                "or a single .safetensors file with --spqr-model-config"
            )
        if config is None:
            raise SpqrConfigError(
                f"{spec}: a single checkpoint file needs its pipeline configuration — pass "
                "--spqr-model-config=FOLDER_OR_HUB_ID (e.g. the original model's folder)"
            )
        return ModelSource(spec, path.resolve(), "single_file", config)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise SpqrConfigError(
                f"{spec}: no model_index.json in this folder — point --spqr-model at a "
                "diffusers pipeline folder (the one holding model_index.json)"
            )
        return ModelSource(spec, path.resolve(), "folder")
    if _looks_like_hub_id(spec) and not path.exists():
        folder = hub_folder(spec)
        if folder is not None and (folder / "model_index.json").is_file():
            return ModelSource(spec, folder, "hub")
        raise SpqrConfigError(
            f"{spec}: no such file or folder, and no copy of a hub model of that id in the "
            f"local Hugging Face cache — pass --spqr-model=PATH to a diffusers folder, or "
            f"download it once (huggingface-cli download {spec})"
        )
    raise SpqrConfigError(
        f"{spec}: no such file or folder — pass --spqr-model=PATH to a diffusers pipeline "
        "folder, a .safetensors file, or a cached hub id"
    )


def read_model_index(folder: Path) -> dict[str, Any]:
    path = folder / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpqrConfigError(f"{path}: unreadable ({exc}) — fix or re-download the model") from None
    if not isinstance(index, dict):
        raise SpqrConfigError(f"{path}: not a JSON object (a {type(index).__name__}) — a "
                              "pipeline's model_index.json maps component names to classes; "
                              "fix or re-download the model")
    return index


# diffusers' text-to-image pipelines by name: start-up checks of these need not import
# diffusers (seconds); any other class name is imported and its signature inspected
KNOWN_TEXT_TO_IMAGE = frozenset({
    "StableDiffusionPipeline", "StableDiffusionXLPipeline", "StableDiffusion3Pipeline",
    "FluxPipeline", "PixArtAlphaPipeline", "PixArtSigmaPipeline",
    "LatentConsistencyModelPipeline",
})


def check_pipeline_class(folder: Path) -> None:
    """The start-up check of :func:`pipeline_class`, without importing diffusers for the
    text-to-image classes everyone uses."""
    name = read_model_index(folder).get("_class_name")
    if not isinstance(name, str) or name not in KNOWN_TEXT_TO_IMAGE:
        pipeline_class(folder)


def pipeline_class(folder: Path) -> type[Any]:
    """The diffusers class named in model_index.json, checked to be text-to-image."""
    import diffusers

    index = read_model_index(folder)
    name = index.get("_class_name")
    if not isinstance(name, str):
        raise SpqrConfigError(
            f"{folder / 'model_index.json'}: '_class_name' names a custom pipeline — "
            "pytest-spqr never runs remote code; use a pipeline class shipped with diffusers"
        )
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise SpqrConfigError(
            f"{folder / 'model_index.json'}: unknown pipeline class {name!r} — "
            f"upgrade diffusers (installed {diffusers.__version__}) or check the file"
        )
    check_text_to_image(cls, where=str(folder / "model_index.json"))
    return cls


def check_text_to_image(cls: type, *, where: str) -> None:
    """A text-to-image pipeline takes a prompt and requires no input image."""
    params = inspect.signature(cls.__call__).parameters
    needs_image = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and n in ("image", "init_image", "mask_image", "control_image", "video")
    ]
    if "prompt" not in params or needs_image:
        raise SpqrConfigError(
            f"{where}: {cls.__name__} is not a text-to-image pipeline — pytest-spqr "
            "evaluates pipelines that turn a prompt into an image (e.g. StableDiffusionPipeline)"
        )


@dataclass(frozen=True)
class FolderFacts:
    """What a pipeline folder's config files say about its images, read without loading it."""

    resolution: int
    """Native side length: the UNet's sample size × the VAE's downsampling factor."""
    scheduler: str
    """The scheduler's class and a hash of its config file (part of image cache keys)."""


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def scheduler_tag(class_name: str, config: dict[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True, default=str)
    return f"{class_name}:{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def folder_facts(folder: Path | None, allow_pickle: bool = False) -> FolderFacts | None:
    """Resolution and scheduler identity from the folder's files, after the cheap checks
    that loading would do first (readable model_index.json, a shipped pipeline class, every
    component folder present, safetensors weights); ``None`` when the files do not say
    (no UNet or scheduler config): then the pipeline is loaded to find out."""
    if folder is None:
        return None
    check_pipeline_class(folder)
    for name, value in read_model_index(folder).items():
        if name.startswith("_") or not isinstance(value, list) or None in value:
            continue
        if not (folder / name).is_dir():
            raise SpqrConfigError(
                f"{folder}: model_index.json names a {name!r} component but there is no "
                f"{name}/ folder — the download is incomplete; fetch the whole pipeline"
            )
    check_no_pickle(folder, allow_pickle)
    unet = _json_file(folder / "unet" / "config.json")
    scheduler = _json_file(folder / "scheduler" / "scheduler_config.json")
    if unet is None or scheduler is None or not isinstance(scheduler.get("_class_name"), str):
        return None
    size = unet.get("sample_size")
    if isinstance(size, (list, tuple)):
        size = size[0]
    vae = _json_file(folder / "vae" / "config.json")
    channels = (vae or {}).get("block_out_channels")
    factor = 2 ** (len(channels) - 1) if isinstance(channels, list) and channels else 8
    side = int(size) * factor if isinstance(size, int) and size > 0 else 512
    return FolderFacts(side, scheduler_tag(scheduler["_class_name"], scheduler))


def check_no_pickle(folder: Path, allow_pickle: bool) -> None:
    """Refuse components that only have pickle weights unless the user opted in."""
    if allow_pickle:
        return
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = [f for f in sub.iterdir() if f.is_file()]
        weights = [f for f in files if f.suffix in WEIGHT_SUFFIXES]
        if weights and not any(f.suffix == ".safetensors" for f in weights):
            raise SpqrConfigError(
                f"{sub}: only pickle weights ({weights[0].name}) — pickle can run code when "
                "loaded; convert them to safetensors or pass --spqr-allow-pickle"
            )


def _components_dtype(dtype: Any) -> dict[str, Any]:
    """diffusers renamed ``torch_dtype`` to ``dtype``; use whichever this version wants."""
    if dtype is None:
        return {}
    from diffusers.utils import deprecation_utils

    renamed = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return {"dtype" if renamed else "torch_dtype": dtype}


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide the libraries' own loading bars: they would be captured into every report."""
    quiet_library_noise()  # before diffusers' pipelines look up transformers' processors
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def load_pipeline(
    source: ModelSource,
    *,
    device: str = "cpu",
    dtype: Any = None,
    allow_pickle: bool = False,
) -> Any:
    """Load the pipeline with its safety checker off, on ``device``, progress bar quiet."""
    with _quiet_loading():
        pipe = _load(source, dtype=dtype, allow_pickle=allow_pickle)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _load(source: ModelSource, *, dtype: Any, allow_pickle: bool) -> Any:
    import diffusers

    kwargs: dict[str, Any] = _components_dtype(dtype)
    if source.kind == "single_file":
        if source.path.suffix != ".safetensors" and not allow_pickle:
            raise SpqrConfigError(
                f"{source.spec}: {source.path.suffix} checkpoints are pickle, which can run "
                "code when loaded — convert to .safetensors or pass --spqr-allow-pickle"
            )
        if source.config is None:
            raise SpqrConfigError(
                f"{source.spec}: a single-file checkpoint needs its pipeline config — pass "
                "--spqr-model-config=FOLDER_OR_HUB_ID")
        config_dir = Path(source.config).expanduser()
        if config_dir.is_dir():
            cls = pipeline_class(config_dir)
            config = str(config_dir.resolve())
        else:
            config = source.config
            cls = diffusers.StableDiffusionPipeline
        extra = {"safety_checker": None} if "safety_checker" in inspect.signature(cls).parameters else {}
        pipe = cls.from_single_file(
            str(source.path), config=config, local_files_only=True, **extra, **kwargs
        )
    else:
        folder = source.path
        cls = pipeline_class(folder)
        check_no_pickle(folder, allow_pickle)
        index = read_model_index(folder)
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        try:
            pipe = cls.from_pretrained(
                str(folder),
                use_safetensors=None if allow_pickle else True,
                local_files_only=True,
                **kwargs,
            )
        except Exception as exc:  # the user's files: one line whose advice fits the cause
            from pytest_spqr.models.folder_checks import explain_load_failure

            raise explain_load_failure(source.spec, exc) from None
    return pipe


def _model_files(root: Path) -> list[tuple[str, Path]]:
    """Weight and config files under ``root`` by their path relative to it, following
    symbolic links to folders as the loader does (a component folder may be a link into
    another model), each real folder once."""
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link cycle, or a folder reached twice
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if (path.suffix in WEIGHT_SUFFIXES + CONFIG_SUFFIXES and name != "spqr.toml"
                    and not name.startswith(".") and path.is_file()):
                found.append((path.relative_to(root).as_posix(), path))
    return sorted(found)


def _config_folder(config: str) -> Path | None:
    """The folder a single file's ``--spqr-model-config`` names: a path, or a cached hub id."""
    path = Path(config).expanduser()
    if path.is_dir():
        return path
    return hub_folder(config) if _looks_like_hub_id(config) else None


def fingerprint(source: ModelSource) -> str:
    """A content hash of the weights and configs that determine the model's outputs:
    every file the loader can read (through symbolic links too), and for a single-file
    checkpoint the contents of its configuration folder, not its path."""
    if source.kind == "single_file":
        files = [(source.path.name, source.path)]
    else:
        files = _model_files(source.path)
    digest = hashlib.blake2b(digest_size=16)
    for relative, path in files:  # the same bytes as before links were followed
        digest.update(relative.encode())
        digest.update(file_digest(path).encode())
    if source.config:
        folder = _config_folder(source.config)
        if folder is None:  # a hub id not in the cache: loading will say so
            digest.update(b"config\0" + source.config.encode())
        else:
            for relative, path in _model_files(folder):
                digest.update(b"config/" + relative.encode() + b"\0")
                digest.update(file_digest(path).encode())
    return digest.hexdigest()
