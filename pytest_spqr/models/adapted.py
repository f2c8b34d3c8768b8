"""Pipelines that differ from the aligned one by some weights: a cached benign fine-tune,
or the provider's own fine-tune given with ``--spqr-finetuned``.

A derived pipeline shares every component it does not change with the aligned pipeline
(VAE, tokenizers, scheduler, and text encoders unless an adapter touches them), so
images differ only where the weights do. Its fingerprint is the aligned fingerprint plus
a content hash of what changed, so its images are cached separately.

``--spqr-finetuned`` accepts:

- a **pipeline folder** (``model_index.json``): loaded as a model of its own;
- a **UNet folder** (``config.json`` naming ``UNet2DConditionModel``): the aligned
  pipeline with that UNet;
- a **LoRA adapter**, a folder holding one ``.safetensors`` or the file itself:
  loaded with ``load_lora_weights`` (alpha from the file's metadata), then
  ``unet.eval()`` and ``text_encoder.eval()`` — peft leaves its dropout in train mode.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError, first_line
from pytest_spqr.models.digests import file_digest

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
CHANGED_WEIGHTS = "unet_changed.safetensors"
TEXT_ENCODER_PREFIXES = ("text_encoder.", "text_encoder_2.", "lora_te_", "lora_te1_", "lora_te2_")


@dataclass(frozen=True)
class FinetunedSource:
    """What ``--spqr-finetuned`` points at, classified without loading weights."""

    spec: str
    path: Path
    kind: str
    """``pipeline``, ``unet`` or ``lora``."""
    weight_name: str | None = None
    """For ``lora``: the adapter file inside ``path`` (a folder)."""

    @property
    def description(self) -> str:
        return {"pipeline": "pipeline folder", "unet": "UNet folder", "lora": "LoRA adapter"}[self.kind]


def classify_finetuned(spec: str) -> FinetunedSource:
    """Decide what kind of fine-tune ``spec`` is, or raise a one-line SpqrConfigError."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise SpqrConfigError(
            f"--spqr-finetuned={spec}: no such file or folder — pass a pipeline folder, a UNet "
            "folder, or a LoRA adapter (.safetensors or its folder)"
        )
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise SpqrConfigError(
                f"--spqr-finetuned={spec}: {path.suffix or 'no suffix'} is not a LoRA adapter file "
                "— pass a .safetensors adapter, a UNet folder or a pipeline folder"
            )
        _check_lora_file(path, spec)
        return FinetunedSource(spec, path.parent, "lora", path.name)
    if (path / "model_index.json").is_file():
        return FinetunedSource(spec, path, "pipeline")
    config = path / "config.json"
    if config.is_file():
        try:
            name = json.loads(config.read_text(encoding="utf-8")).get("_class_name")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            name = None
        if name != "UNet2DConditionModel":
            raise SpqrConfigError(
                f"--spqr-finetuned={spec}: config.json names {name!r}, not a UNet2DConditionModel "
                "— pass the fine-tuned pipeline folder, its unet/ folder, or a LoRA adapter"
            )
        if not any(path.glob("*.safetensors")):
            raise SpqrConfigError(
                f"--spqr-finetuned={spec}: UNet folder without .safetensors weights — save it "
                "with save_pretrained(safe_serialization=True)"
            )
        return FinetunedSource(spec, path, "unet")
    weights = sorted(path.glob("*.safetensors"))
    if len(weights) == 1:
        _check_lora_file(weights[0], spec)
        return FinetunedSource(spec, path, "lora", weights[0].name)
    if (path / LORA_WEIGHTS).is_file():
        _check_lora_file(path / LORA_WEIGHTS, spec)
        return FinetunedSource(spec, path, "lora", LORA_WEIGHTS)
    found = f"{len(weights)} .safetensors files" if weights else "no model_index.json, config.json or .safetensors"
    raise SpqrConfigError(
        f"--spqr-finetuned={spec}: {found} — pass a pipeline folder, a UNet folder, or one "
        f"LoRA adapter file ({LORA_WEIGHTS})"
    )


def _check_lora_file(path: Path, spec: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # any unreadable file gets the same message
        raise SpqrConfigError(
            f"--spqr-finetuned={spec}: {path.name} is not a readable safetensors file ({exc}) — "
            "pass a LoRA adapter saved with save_lora_weights"
        ) from None
    if not any("lora" in key for key in keys):
        raise SpqrConfigError(
            f"--spqr-finetuned={spec}: {path.name} holds no LoRA weights (no 'lora' keys) — a "
            "full checkpoint goes in a pipeline folder or a UNet folder"
        )


def content_fingerprint(aligned: str, files: list[Path], tag: str) -> str:
    """Aligned fingerprint + the named files' contents: a derived model's identity."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{tag}\0{aligned}\0".encode())
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + file_digest(path).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- derived pipelines


def derived_pipeline(pipe: Any, **replace: Any) -> Any:
    """A new pipeline of the same class sharing every component but those in ``replace``."""
    cls = type(pipe)
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {k: v for k, v in pipe.components.items() if k in params}
    kwargs.update(replace)
    config = getattr(pipe, "config", {})
    for key in ("requires_safety_checker", "force_zeros_for_empty_prompt"):
        if key in params and key in config:
            kwargs[key] = config[key]
    if "requires_safety_checker" in params and kwargs.get("safety_checker") is None:
        kwargs["requires_safety_checker"] = False
    if "add_watermarker" in params:
        kwargs["add_watermarker"] = getattr(pipe, "watermark", None) is not None
    derived = cls(**kwargs)
    derived.set_progress_bar_config(disable=True)
    return derived


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence diffusers' and transformers' chatter and loading bars for a block.

    E.g. "no LoRA keys for the text encoder" when an adapter is UNet-only, or CLIP's
    truncation warning for captions longer than 77 tokens (truncating is what the
    pipeline does at generation time too).
    """
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()


def _lora_touches_text_encoders(file: Path) -> dict[str, bool]:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        keys = list(handle.keys())
    te2 = any(k.startswith(("text_encoder_2.", "lora_te2_")) for k in keys)
    te1 = any(k.startswith(("text_encoder.", "lora_te_", "lora_te1_")) for k in keys)
    return {"text_encoder": te1, "text_encoder_2": te2}


def with_lora(pipe: Any, folder: Path, weight_name: str) -> Any:
    """The aligned pipeline with a LoRA adapter loaded into copies of what it touches."""
    touched = _lora_touches_text_encoders(folder / weight_name)
    replace: dict[str, Any] = {"unet": copy.deepcopy(pipe.unet)}
    for name, hit in touched.items():
        if hit and getattr(pipe, name, None) is not None:
            replace[name] = copy.deepcopy(getattr(pipe, name))
    derived = derived_pipeline(pipe, **replace)
    try:
        with quiet_libraries():
            derived.load_lora_weights(str(folder), weight_name=weight_name, adapter_name="bft")
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        first = first_line(exc)
        raise SpqrConfigError(
            f"{folder / weight_name}: the LoRA adapter does not fit this model ({first[:200]}) — "
            "pass an adapter trained on the model under test"
        ) from None
    for name in replace:
        getattr(derived, name).eval()  # peft leaves LoRA dropout in train mode
    return derived


def with_changed_tensors(pipe: Any, file: Path) -> Any:
    """The aligned pipeline with a UNet copy whose named tensors are replaced from ``file``."""
    from safetensors.torch import load_file

    unet = copy.deepcopy(pipe.unet)
    tensors = load_file(str(file), device="cpu")
    own = dict(unet.named_parameters())
    unknown = [name for name in tensors if name not in own]
    if unknown:
        raise SpqrConfigError(
            f"{file}: {len(unknown)} tensors are not UNet parameters (first {unknown[0]!r}) — "
            "the cached fine-tune belongs to another model; delete it to retrain"
        )
    import torch

    with torch.no_grad():
        for name, value in tensors.items():
            own[name].copy_(value.to(own[name].device, own[name].dtype))
    return derived_pipeline(pipe, unet=unet.eval())


def with_unet_folder(pipe: Any, folder: Path) -> Any:
    """The aligned pipeline with the UNet saved in ``folder``."""
    from diffusers import UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.from_pretrained(
            str(folder), use_safetensors=True, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        raise SpqrConfigError(
            f"{folder}: the UNet could not be loaded ({first[:200]}) — check the folder is a "
            "complete save_pretrained output"
        ) from None
    return derived_pipeline(pipe, unet=unet.to(pipe.unet.device, pipe.unet.dtype).eval())
