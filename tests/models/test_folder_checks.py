"""A model folder is checked without loading it; what only loading finds is explained in
one line whose advice fits the cause."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.models.folder_checks import (
    check_model_files,
    check_model_folder,
    check_safetensors,
)
from pytest_spqr.models.loading import load_pipeline, read_model_index, resolve_model
from tests.conftest import FIXTURES


@pytest.fixture
def model(tiny_sd: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_sd, copy)
    return copy


def _one_line(info: pytest.ExceptionInfo[SpqrConfigError]) -> str:
    message = str(info.value)
    assert "\n" not in message and " — " in message
    assert "trust_remote_code" not in message
    return message


@pytest.mark.parametrize("name", ["tiny-sd", "toyworld/aligned", "toyworld/base", "toyworld/fragile"])
def test_shipped_models_pass(name: str) -> None:
    check_model_files(resolve_model(str(FIXTURES / name)), allow_pickle=False)


def test_whole_safetensors_file_passes(tiny_sd: Path) -> None:
    check_safetensors(tiny_sd / "unet" / "diffusion_pytorch_model.safetensors")


def test_truncated_safetensors(model: Path) -> None:
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    full = weights.stat().st_size
    os.truncate(weights, full - 1)
    with pytest.raises(SpqrConfigError) as info:
        check_safetensors(weights)
    assert _one_line(info) == (f"{weights}: corrupt (truncated: {full - 1} bytes, the header says "
                               f"{full}) — re-download it")


def test_safetensors_cut_inside_its_header(model: Path) -> None:
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    os.truncate(weights, 20)
    with pytest.raises(SpqrConfigError, match=r"corrupt \(truncated: 20 bytes, the header alone says"):
        check_safetensors(weights)


def test_zero_byte_safetensors(model: Path) -> None:
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(SpqrConfigError) as info:
        check_safetensors(weights)
    assert "corrupt (0 bytes: too short for a safetensors header) — re-download it" in _one_line(info)


def test_trailing_bytes_are_corrupt_too(model: Path) -> None:
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    with weights.open("ab") as handle:
        handle.write(b"\0" * 10)
    with pytest.raises(SpqrConfigError, match="trailing bytes"):
        check_safetensors(weights)


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"PK\x03\x04 a zip archive, perhaps a pickle")
    with pytest.raises(SpqrConfigError, match="corrupt"):
        check_safetensors(path)


def test_model_index_that_is_not_an_object(model: Path) -> None:
    (model / "model_index.json").write_text('"StableDiffusionPipeline"')
    with pytest.raises(SpqrConfigError) as info:
        read_model_index(model)
    assert "model_index.json: not a JSON object (a str)" in _one_line(info)


def test_broken_component_config(model: Path) -> None:
    (model / "vae" / "config.json").write_text("{\n  \"in_channels\": 3,\n")
    with pytest.raises(SpqrConfigError) as info:
        check_model_folder(model, allow_pickle=False)
    assert _one_line(info).startswith(f"{model / 'vae' / 'config.json'}: not valid JSON (line 3 ")


def test_component_config_that_is_not_an_object(model: Path) -> None:
    (model / "scheduler" / "scheduler_config.json").write_text("[]")
    with pytest.raises(SpqrConfigError, match="scheduler_config.json: not a JSON object"):
        check_model_folder(model, allow_pickle=False)


def test_component_without_weights(model: Path) -> None:
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(SpqrConfigError) as info:
        check_model_folder(model, allow_pickle=False)
    assert "unet: a config.json but no weights file" in _one_line(info)


def test_missing_shard_of_a_sharded_component(model: Path) -> None:
    unet = model / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "part-1.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}}
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SpqrConfigError, match="names the shard part-2.safetensors but it is not in"):
        check_model_folder(model, allow_pickle=False)


def test_pickle_only_component_unless_allowed(model: Path) -> None:
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(SpqrConfigError, match="only pickle weights.*--spqr-allow-pickle"):
        check_model_folder(model, allow_pickle=False)
    check_model_folder(model, allow_pickle=True)


def test_custom_component_class(model: Path) -> None:
    index = json.loads((model / "model_index.json").read_text())
    index["text_encoder"] = ["acme_models", "SecretEncoder"]
    (model / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(SpqrConfigError) as info:
        check_model_folder(model, allow_pickle=False)
    assert "component 'text_encoder' is acme_models.SecretEncoder" in _one_line(info)
    assert "never runs remote code" in str(info.value)


# -- what only loading finds: explained once, with the right advice ----------------------------
def test_custom_component_at_load_time_never_relays_trust_remote_code(model: Path) -> None:
    """Were the start-up check bypassed, the load error still gives this project's advice."""
    index = json.loads((model / "model_index.json").read_text())
    index["unet"] = ["my_module", "MyUNet"]
    (model / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(SpqrConfigError) as info:
        load_pipeline(resolve_model(str(model)))
    assert "never runs remote code" in _one_line(info)


def test_truncated_weights_at_load_time_are_corrupt_not_incomplete(model: Path) -> None:
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(SpqrConfigError) as info:
        load_pipeline(resolve_model(str(model)))
    message = _one_line(info)
    assert "corrupt" in message and "re-download" in message and "complete" not in message


def test_shape_mismatch_at_load_time(model: Path) -> None:
    config = json.loads((model / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = 64
    (model / "unet" / "config.json").write_text(json.dumps(config))
    check_model_folder(model, allow_pickle=False)  # only loading can tell
    with pytest.raises(SpqrConfigError) as info:
        load_pipeline(resolve_model(str(model)))
    message = _one_line(info)
    assert "the weights do not fit the configuration (" in message and "expected shape" in message
    assert "ignore_mismatched_sizes" not in message and "re-download" in message
