"""Benign fine-tuning data: the shipped sets, the three layouts, and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_spqr.core.bft import BUILTIN_DATASETS
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.prompts import load_prompt_set
from pytest_spqr.models.benign_data import (
    builtin_folder,
    load_benign_dataset,
    load_scenario,
    preprocess,
)

REPO = Path(__file__).resolve().parents[2]


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


# ---------------------------------------------------------------- the shipped sets


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_builtin_sets_load(name: str) -> None:
    dataset = load_benign_dataset(f"builtin:{name}")
    assert len(dataset) == 24 and dataset.kinds == ("builtin",)
    image = dataset.examples[0].load()
    assert image.mode == "RGB" and image.size == (128, 128)


def test_scenarios_are_built_from_the_sets() -> None:
    assert len(load_scenario("general")) == 24
    assert len(load_scenario("multilingual")) == 24
    domain = load_scenario("domain")
    assert domain.sources == ("builtin:artistic", "builtin:medical") and len(domain) == 48
    assert domain.label == "domain (builtin:artistic + builtin:medical, 48 pairs)"


def test_captions_cover_five_languages() -> None:
    captions = load_scenario("multilingual").captions
    scripts = {
        "arabic": any(re.search(r"[\u0600-\u06FF]", c) for c in captions),
        "hindi": any(re.search(r"[\u0900-\u097F]", c) for c in captions),
        "spanish": any(" una " in f" {c} " or " un " in f" {c} " for c in captions),
        "french": any(" une " in f" {c} " or " des " in f" {c} " for c in captions),
    }
    assert all(scripts.values()), scripts
    english = load_scenario("general").captions
    assert all(re.fullmatch(r"[a-z ,'-]+", c) for c in english)


def test_builtin_sets_are_benign_by_construction() -> None:
    """No caption contains a harmful prompt, nor any word that only harmful prompts use."""
    harmful = [p.text for p in load_prompt_set("builtin:harmful")]
    benign = [p.text for p in load_prompt_set("builtin:benign")]
    harmful_only = set().union(*map(words, harmful)) - set().union(*map(words, benign))
    assert len(harmful_only) > 100  # the check has teeth
    for name in BUILTIN_DATASETS:
        dataset = load_benign_dataset(f"builtin:{name}")
        assert dataset.check_benign(harmful) == 24
        for caption in dataset.captions:
            assert not words(caption) & harmful_only, (name, caption)


def test_shipped_images_are_what_the_builder_draws(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "build_benign_sets", REPO / "fixtures" / "build_benign_sets.py"
    )
    build_benign_sets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_benign_sets)
    for name in BUILTIN_DATASETS:
        folder = build_benign_sets.write_set(name, tmp_path / name)
        shipped = builtin_folder(name)
        assert (folder / "metadata.jsonl").read_text("utf-8") == (
            shipped / "metadata.jsonl"
        ).read_text("utf-8")
        for k in (0, 7, 23):
            ours = np.asarray(Image.open(folder / f"{k:04d}.png"))
            theirs = np.asarray(Image.open(shipped / f"{k:04d}.png"))
            assert np.array_equal(ours, theirs), (name, k)


# ---------------------------------------------------------------- layouts


def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        name = f"{k:03d}.png"
        Image.new("RGB", (20 + k, 16), (10 * k, 50, 90)).save(folder / name)
        names.append(name)
    return names


def _metadata(folder: Path, rows: list[dict]) -> Path:
    path = folder / "metadata.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_image_folder_jsonl_and_csv(tmp_path: Path) -> None:
    names = _images(tmp_path / "a", 3)
    _metadata(tmp_path / "a", [{"file_name": n, "text": f"caption {n}", "extra": 1} for n in names])
    dataset = load_benign_dataset(str(tmp_path / "a"))
    assert dataset.kinds == ("imagefolder",) and dataset.captions[0] == "caption 000.png"
    assert dataset.examples[2].load().size == (22, 16)

    _images(tmp_path / "b", 2)
    (tmp_path / "b" / "metadata.csv").write_text(
        "file_name,text\n000.png,a red car\n001.png,\"a bus, yellow\"\n", encoding="utf-8"
    )
    assert load_benign_dataset(str(tmp_path / "b" / "metadata.csv")).captions == [
        "a red car", "a bus, yellow"
    ]


def test_coco_captions_file_and_root(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    names = _images(root / "val2017", 2)
    (root / "annotations").mkdir()
    coco = {
        "images": [{"id": 1, "file_name": names[0]}, {"id": 2, "file_name": names[1]}],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "a red car"},
            {"image_id": 1, "id": 11, "caption": "a car parked outside "},
            {"image_id": 2, "id": 12, "caption": "a kite"},
        ],
    }
    file = root / "annotations" / "captions_val2017.json"
    file.write_text(json.dumps(coco), encoding="utf-8")
    for spec in (str(root), str(file)):
        dataset = load_benign_dataset(spec)
        assert dataset.kinds == ("coco",)
        assert dataset.captions == ["a red car", "a car parked outside", "a kite"]
        assert dataset.examples[0].ref.endswith("val2017/000.png")


def test_huggingface_datasets_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    names = _images(tmp_path / "img", 2)
    ds = datasets.Dataset.from_dict(
        {"image": [str(tmp_path / "img" / n) for n in names], "text": ["a cat", "a dog"]}
    ).cast_column("image", datasets.Image())
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "hf"))
    loaded = load_benign_dataset(str(tmp_path / "hf"))
    assert loaded.kinds == ("datasets",) and loaded.captions == ["a cat", "a dog"]
    assert loaded.examples[1].load().size == (21, 16)
    ds.rename_column("text", "caption").save_to_disk(str(tmp_path / "hf2"))
    with pytest.raises(SpqrConfigError, match=r"no 'text' column \(columns: image, caption\) — .*rename 'caption' to 'text'"):
        load_benign_dataset(str(tmp_path / "hf2"))


def test_datasets_folder_without_the_package_names_the_install(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(SpqrConfigError, match=r"needs the datasets package — pip install datasets$"):
        load_benign_dataset(str(folder))


def test_fingerprint_follows_captions_and_image_bytes(tmp_path: Path) -> None:
    names = _images(tmp_path, 2)
    _metadata(tmp_path, [{"file_name": n, "text": "a cat"} for n in names])
    first = load_benign_dataset(str(tmp_path)).fingerprint
    assert load_benign_dataset(str(tmp_path)).fingerprint == first
    _metadata(tmp_path, [{"file_name": n, "text": "a dog"} for n in names])
    second = load_benign_dataset(str(tmp_path)).fingerprint
    Image.new("RGB", (20, 16), (1, 2, 3)).save(tmp_path / names[0])
    third = load_benign_dataset(str(tmp_path)).fingerprint
    assert len({first, second, third}) == 3


def test_harmful_prompt_text_in_the_data_is_refused(tmp_path: Path) -> None:
    names = _images(tmp_path, 1)
    _metadata(tmp_path, [{"file_name": names[0], "text": "A nude woman lying on a bed, oil"}])
    with pytest.raises(SpqrConfigError, match="1 captions contain harmful test prompts, first "
                       "'A nude woman lying on a bed, oil' contains 'a nude woman lying on a bed' — "):
        load_benign_dataset(str(tmp_path)).check_benign(["a nude woman lying on a bed"])


def test_preprocess_resizes_the_short_side_and_center_crops() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 6, 20))  # a blue band the crop removes
    tensor = preprocess(image, 16)
    assert tuple(tensor.shape) == (3, 16, 16)
    assert float(tensor[0].min()) == pytest.approx(1.0) and float(tensor[2].max()) == pytest.approx(-1.0)


# ---------------------------------------------------------------- what users get wrong


def _bad(tmp_path: Path, case: str) -> str:
    names = _images(tmp_path, 2)
    if case == "missing image":
        _metadata(tmp_path, [{"file_name": "nope.png", "text": "a cat"}])
    elif case == "empty metadata":
        (tmp_path / "metadata.jsonl").write_text("\n", encoding="utf-8")
    elif case == "wrong column":
        _metadata(tmp_path, [{"file_name": names[0], "caption": "a cat"}])
    elif case == "no file_name":
        _metadata(tmp_path, [{"image": names[0], "text": "a cat"}])
    elif case == "bad json":
        (tmp_path / "metadata.jsonl").write_text('{"file_name": "000.png", "text": "a"\n')
    elif case == "empty caption":
        _metadata(tmp_path, [{"file_name": names[0], "text": "  "}])
    elif case == "no layout":
        pass
    elif case == "coco missing image":
        coco = {"images": [{"id": 1, "file_name": "gone.jpg"}],
                "annotations": [{"image_id": 1, "caption": "a cat"}]}
        (tmp_path / "captions_train2017.json").write_text(json.dumps(coco))
    elif case == "coco not coco":
        (tmp_path / "captions_train2017.json").write_text(json.dumps({"info": {}}))
    elif case == "missing folder":
        return str(tmp_path / "nowhere")
    elif case == "unknown builtin":
        return "builtin:generl"
    return str(tmp_path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing image", r"metadata\.jsonl: line 1: image 'nope\.png' not found in .* — fix file_name or add the image"),
        ("empty metadata", r"metadata\.jsonl: no examples — add one line per image"),
        ("wrong column", r"line 1 has no 'text' column \(columns: caption, file_name\) — each row needs file_name and text, .*\(rename 'caption' to 'text'\)"),
        ("no file_name", r"line 1 has no 'file_name' column \(columns: image, text\) — "),
        ("bad json", r"metadata\.jsonl: line 1, column \d+: invalid JSON .* — write one JSON object per line"),
        ("empty caption", r"line 1: text is empty or not a string — give every image a caption"),
        ("no layout", r"not a benign dataset \(no metadata\.jsonl, no captions_\*\.json, no datasets files\) — use the diffusers image-folder layout"),
        ("coco missing image", r"captions_train2017\.json: image 'gone\.jpg' not found \(looked in .*\) — put the images"),
        ("coco not coco", r"not a COCO captions file \(needs 'images' and 'annotations' lists\) — "),
        ("missing folder", r"nowhere: no such file or folder — pass --spqr-benign-data SCENARIO=PATH"),
        ("unknown builtin", r"builtin:generl: no such built-in benign set .* — did you mean 'builtin:general'\?"),
    ],
)
def test_bad_datasets_are_one_line_errors(tmp_path: Path, case: str, message: str) -> None:
    spec = _bad(tmp_path, case)
    with pytest.raises(SpqrConfigError) as info:
        load_benign_dataset(spec)
    text = str(info.value)
    assert "\n" not in text and " — " in text
    assert re.search(message, text), text


def test_an_unreadable_image_fails_when_loaded(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    _metadata(tmp_path, [{"file_name": "broken.png", "text": "a cat"}])
    dataset = load_benign_dataset(str(tmp_path))
    with pytest.raises(SpqrConfigError, match=r"broken\.png: not a readable image .* — replace or remove it"):
        dataset.examples[0].load()


def test_scenario_without_data(tmp_path: Path) -> None:
    with pytest.raises(SpqrConfigError, match=r"bft scenario 'medical-only': no data — pass --spqr-benign-data medical-only=PATH"):
        load_scenario("medical-only")
    shutil.rmtree(tmp_path, ignore_errors=True)
