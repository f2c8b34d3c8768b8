"""Benign fine-tuning data: image–caption pairs from the layouts people already have.

Three layouts load, and the built-in sets (``builtin:general``, ``builtin:multilingual``,
``builtin:artistic``, ``builtin:medical``, shipped in ``pytest_spqr/data/benign``):

- the **diffusers image folder**: images beside ``metadata.jsonl`` (or ``metadata.csv``)
  whose rows carry ``file_name`` and ``text`` (``train_text_to_image.py``'s convention);
- **COCO captions**: ``captions_*.json`` (``images`` + ``annotations``), given as the file
  or as the COCO root holding ``annotations/``; images are looked up beside the file, in
  ``<root>/<split>/`` (``captions_val2017.json`` → ``val2017/``) or ``<root>/images/``;
  every caption is one pair, as in the paper's ~5k-pair subsets;
- a **Hugging Face ``datasets`` folder** written by ``save_to_disk`` (an ``image``
  column and a ``text`` column; the ``train`` split of a ``DatasetDict``); needs
  ``pip install datasets``.

Everything a user can get wrong (a missing image, an empty metadata file, a wrong
column, an unreadable image) is one :class:`SpqrConfigError` line naming the file. A
dataset's fingerprint is a content hash of its captions and image bytes, so a changed
dataset never reuses a cached fine-tune.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_spqr.core.bft import BUILTIN_DATASETS, BUILTIN_SCENARIOS, harmful_text_in
from pytest_spqr.core.errors import SpqrConfigError, first_line
from pytest_spqr.models.digests import file_digest

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class BenignExample:
    """One image–caption pair; ``load()`` returns the RGB image."""

    caption: str
    load: Callable[[], Any]
    ref: str
    """Where the image is (a file, or ``dataset[i]``), for messages."""
    digest: str
    """Content hash of the image bytes."""


@dataclass(frozen=True)
class BenignDataset:
    """The image–caption pairs of one scenario (one or more sources concatenated)."""

    name: str
    sources: tuple[str, ...]
    kinds: tuple[str, ...]
    examples: tuple[BenignExample, ...]

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def captions(self) -> list[str]:
        return [e.caption for e in self.examples]

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.examples)

    @property
    def label(self) -> str:
        """``general (builtin:general, 24 pairs)``."""
        return f"{self.name} ({' + '.join(self.sources)}, {len(self)} pairs)"

    def check_benign(self, harmful_prompts: Sequence[str]) -> int:
        """Raise unless no caption contains a harmful prompt's text; returns the count checked.

        The paper's condition D ∩ H = ∅ on the text: the data the model is fine-tuned on
        must not carry the prompts it is then tested with.
        """
        hits = harmful_text_in(self.captions, harmful_prompts)
        if hits:
            caption, prompt = hits[0]
            raise SpqrConfigError(
                f"benign data {self.label}: {len(hits)} captions contain harmful test prompts, "
                f"first {_short(caption)!r} contains {_short(prompt)!r} — benign fine-tuning "
                "data must not contain the harmful prompt set; remove those pairs"
            )
        return len(self.captions)


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _fingerprint(examples: Iterable[BenignExample]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for example in examples:
        digest.update(example.caption.encode("utf-8") + b"\0" + example.digest.encode() + b"\n")
    return digest.hexdigest()


def _digest(path: Path) -> str:
    return file_digest(path)[:32]


def _image_loader(path: Path) -> Callable[[], Any]:
    def load() -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise SpqrConfigError(
                f"{path}: not a readable image ({exc}) — replace or remove it from the dataset"
            ) from None

    return load


# ---------------------------------------------------------------- entry points


def builtin_folder(name: str) -> Path:
    """The shipped folder of one built-in set (``general``, ``multilingual``…)."""
    return Path(str(resources.files("pytest_spqr") / "data" / "benign" / name))


def load_benign_dataset(spec: str, *, name: str | None = None) -> BenignDataset:
    """One source: ``builtin:NAME``, an image folder, a COCO file/root or a datasets folder."""
    label = name or spec
    if spec.startswith("builtin:"):
        key = spec.split(":", 1)[1]
        if key not in BUILTIN_DATASETS:
            import difflib

            close = difflib.get_close_matches(key, BUILTIN_DATASETS, n=1)
            raise SpqrConfigError(
                f"{spec}: no such built-in benign set (built-in: "
                f"{', '.join('builtin:' + n for n in BUILTIN_DATASETS)}) — "
                + (f"did you mean 'builtin:{close[0]}'?" if close else "pass a dataset folder")
            )
        examples = _image_folder(builtin_folder(key), spec)
        return BenignDataset(label, (spec,), ("builtin",), tuple(examples))
    path = Path(spec).expanduser()
    if not path.exists():
        raise SpqrConfigError(
            f"{spec}: no such file or folder — pass --spqr-benign-data SCENARIO=PATH with an "
            "image folder (metadata.jsonl), a COCO captions_*.json or a datasets folder"
        )
    kind, examples = _load_path(path, spec)
    return BenignDataset(label, (spec,), (kind,), tuple(examples))


def load_scenario(name: str, specs: Sequence[str] | None = None) -> BenignDataset:
    """A scenario's data: its sources concatenated (default: the built-in sets behind it)."""
    if not specs:
        if name not in BUILTIN_SCENARIOS:
            raise SpqrConfigError(
                f"bft scenario {name!r}: no data — pass --spqr-benign-data {name}=PATH "
                f"(built-in scenarios: {', '.join(BUILTIN_SCENARIOS)})"
            )
        specs = BUILTIN_SCENARIOS[name]
    parts = [load_benign_dataset(spec, name=name) for spec in specs]
    return BenignDataset(
        name,
        tuple(s for p in parts for s in p.sources),
        tuple(k for p in parts for k in p.kinds),
        tuple(e for p in parts for e in p.examples),
    )


def _load_path(path: Path, spec: str) -> tuple[str, list[BenignExample]]:
    if path.is_file():
        if path.name in ("metadata.jsonl", "metadata.csv"):
            return "imagefolder", _image_folder(path.parent, spec)
        if path.suffix == ".json":
            return "coco", _coco(path, spec)
        raise SpqrConfigError(
            f"{spec}: not a dataset file — pass an image folder with metadata.jsonl, a COCO "
            "captions_*.json, or a Hugging Face datasets folder"
        )
    if any((path / m).is_file() for m in ("metadata.jsonl", "metadata.csv")):
        return "imagefolder", _image_folder(path, spec)
    if any((path / m).is_file() for m in HF_MARKERS):
        return "datasets", _hf_datasets(path, spec)
    coco = sorted(path.glob("captions_*.json")) + sorted((path / "annotations").glob("captions_*.json"))
    if len(coco) == 1:
        return "coco", _coco(coco[0], spec)
    if len(coco) > 1:
        raise SpqrConfigError(
            f"{spec}: {len(coco)} COCO caption files ({', '.join(p.name for p in coco)}) — pass "
            "the one to use, e.g. --spqr-benign-data general=" + str(coco[0])
        )
    raise SpqrConfigError(
        f"{spec}: not a benign dataset (no metadata.jsonl, no captions_*.json, no datasets "
        "files) — use the diffusers image-folder layout: images plus metadata.jsonl lines "
        '{"file_name": ..., "text": ...}'
    )


# ---------------------------------------------------------------- diffusers image folder


def _rows_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SpqrConfigError(f"{path}: not UTF-8 text (byte {exc.start}) — save it as UTF-8") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpqrConfigError(
                f"{path}: line {number}, column {exc.colno}: invalid JSON ({exc.msg}) — write one "
                'JSON object per line, e.g. {"file_name": "0001.png", "text": "a red bus"}'
            ) from None
        if not isinstance(row, dict):
            raise SpqrConfigError(
                f"{path}: line {number} is {type(row).__name__}, not an object — write "
                '{"file_name": ..., "text": ...}'
            )
        rows.append((number, row))
    return rows


def _rows_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return [(number, dict(row)) for number, row in enumerate(reader, 2)]


def _image_folder(folder: Path, spec: str) -> list[BenignExample]:
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        meta = folder / "metadata.csv"
    rows = _rows_jsonl(meta) if meta.suffix == ".jsonl" else _rows_csv(meta)
    if not rows:
        raise SpqrConfigError(
            f"{meta}: no examples — add one line per image: "
            '{"file_name": "0001.png", "text": "a caption"}'
        )
    examples = []
    for number, row in rows:
        missing = [key for key in ("file_name", "text") if key not in row]
        if missing:
            have = ", ".join(sorted(row)) or "none"
            hint = " (rename 'caption' to 'text')" if "caption" in row and "text" in missing else ""
            raise SpqrConfigError(
                f"{meta}: line {number} has no {' and no '.join(map(repr, missing))} column "
                f"(columns: {have}) — each row needs file_name and text, the diffusers "
                f"image-folder convention{hint}"
            )
        caption, file_name = row["text"], row["file_name"]
        if not isinstance(caption, str) or not caption.strip():
            raise SpqrConfigError(
                f"{meta}: line {number}: text is empty or not a string — give every image a caption"
            )
        image = folder / str(file_name)
        if not image.is_file():
            raise SpqrConfigError(
                f"{meta}: line {number}: image {file_name!r} not found in {folder} — fix "
                "file_name or add the image"
            )
        examples.append(BenignExample(caption.strip(), _image_loader(image), str(image), _digest(image)))
    return examples


# ---------------------------------------------------------------- COCO captions


def _coco(path: Path, spec: str) -> list[BenignExample]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpqrConfigError(f"{path}: invalid JSON ({exc}) — pass a COCO captions_*.json") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
        data.get("annotations"), list
    ):
        raise SpqrConfigError(
            f"{path}: not a COCO captions file (needs 'images' and 'annotations' lists) — pass "
            "captions_*.json from the COCO annotations"
        )
    files: dict[Any, str] = {}
    for image in data["images"]:
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise SpqrConfigError(
                f"{path}: an 'images' entry lacks 'id' or 'file_name' — fix the file"
            )
        files[image["id"]] = image["file_name"]
    if not data["annotations"]:
        raise SpqrConfigError(f"{path}: no captions in 'annotations' — pass a non-empty COCO file")
    folders = _coco_image_folders(path)
    examples = []
    resolved: dict[str, tuple[Path, str]] = {}
    for number, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise SpqrConfigError(
                f"{path}: annotation {number} lacks 'image_id' or 'caption' — fix the file"
            )
        file_name = files.get(ann["image_id"])
        if file_name is None:
            raise SpqrConfigError(
                f"{path}: annotation {number} refers to image_id {ann['image_id']!r}, which is not "
                "in 'images' — fix the file"
            )
        caption = str(ann["caption"]).strip()
        if not caption:
            raise SpqrConfigError(f"{path}: annotation {number} has an empty caption — fix the file")
        if file_name not in resolved:
            found = next((f / file_name for f in folders if (f / file_name).is_file()), None)
            if found is None:
                raise SpqrConfigError(
                    f"{path}: image {file_name!r} not found (looked in "
                    f"{', '.join(str(f) for f in folders)}) — put the images in one of those folders"
                )
            resolved[file_name] = (found, _digest(found))
        image, digest = resolved[file_name]
        examples.append(BenignExample(caption, _image_loader(image), str(image), digest))
    return examples


def _coco_image_folders(path: Path) -> list[Path]:
    split = path.stem.removeprefix("captions_")
    here = path.parent
    root = here.parent if here.name == "annotations" else here
    candidates = [here, root / split, root / "images" / split, root / "images", root]
    seen: list[Path] = []
    for candidate in candidates:
        if candidate.is_dir() and candidate not in seen:
            seen.append(candidate)
    return seen


# ---------------------------------------------------------------- Hugging Face datasets


def _hf_datasets(path: Path, spec: str) -> list[BenignExample]:
    try:
        import datasets
    except ImportError:
        raise SpqrConfigError(
            f"{spec}: a Hugging Face datasets folder needs the datasets package — "
            "pip install datasets"
        ) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        first = first_line(exc)
        raise SpqrConfigError(
            f"{spec}: not loadable with datasets.load_from_disk ({first}) — pass a folder "
            "written by Dataset.save_to_disk"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else (next(iter(loaded)) if len(loaded) == 1 else None)
        if split is None:
            raise SpqrConfigError(
                f"{spec}: a DatasetDict with splits {', '.join(loaded)} and no 'train' — save "
                "the split to fine-tune on alone, or name one 'train'"
            )
        loaded = loaded[split]
    columns = list(loaded.column_names)
    missing = [c for c in ("image", "text") if c not in columns]
    if missing:
        hint = " (rename 'caption' to 'text')" if "caption" in columns and "text" in missing else ""
        raise SpqrConfigError(
            f"{spec}: no {' and no '.join(map(repr, missing))} column (columns: "
            f"{', '.join(columns) or 'none'}) — the dataset needs an image column 'image' and a "
            f"caption column 'text'{hint}"
        )
    if len(loaded) == 0:
        raise SpqrConfigError(f"{spec}: the dataset has no rows — pass a non-empty dataset")
    raw = loaded.cast_column("image", datasets.Image(decode=False))
    examples = []
    for index, row in enumerate(raw):
        caption = row["text"]
        if not isinstance(caption, str) or not caption.strip():
            raise SpqrConfigError(
                f"{spec}: row {index}: text is empty or not a string — give every image a caption"
            )
        image = row["image"] or {}
        data = image.get("bytes")
        if data is None and image.get("path"):
            file = Path(image["path"])
            file = file if file.is_absolute() else path / file
            if not file.is_file():
                raise SpqrConfigError(
                    f"{spec}: row {index}: image file {image['path']!r} not found — save the "
                    "dataset with embedded images (save_to_disk after casting to Image())"
                )
            data = file.read_bytes()
        if data is None:
            raise SpqrConfigError(f"{spec}: row {index}: no image — every row needs an image")
        examples.append(
            BenignExample(
                caption.strip(),
                _bytes_loader(data, f"{spec}[{index}]"),
                f"{spec}[{index}]",
                hashlib.blake2b(data, digest_size=16).hexdigest(),
            )
        )
    return examples


def _bytes_loader(data: bytes, ref: str) -> Callable[[], Any]:
    def load() -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise SpqrConfigError(f"{ref}: not a readable image ({exc}) — fix the dataset") from None

    return load


def preprocess(image: Any, resolution: int) -> Any:
    """An RGB PIL image → a float32 ``(3, r, r)`` tensor in [-1, 1]: resize the shorter side
    to ``resolution`` (bilinear, as the diffusers training scripts), then center-crop."""
    import numpy as np
    import torch
    from PIL import Image

    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    left = (image.size[0] - resolution) // 2
    top = (image.size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())
