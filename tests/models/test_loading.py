"""Loading: folders, cached hub ids and single files; safetensors only by default;
fingerprints follow the weights' content."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.models.loading import fingerprint, load_pipeline, resolve_model
from tests.conftest import FIXTURES


def _fake_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """The layout huggingface_hub keeps: models--org--name/snapshots/<rev>/ + refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_hub_id_resolves_from_the_local_cache(tiny_sd: Path, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    snapshot = _fake_hub_cache(tmp_path, "acme/aligned-sd", tiny_sd)
    source = resolve_model("acme/aligned-sd")
    assert source.kind == "hub" and source.path == snapshot
    pipe = load_pipeline(source)
    assert pipe.safety_checker is None if hasattr(pipe, "safety_checker") else True


def test_folder_loads_with_safety_checker_off_and_quiet_progress(tiny_sd: Path) -> None:
    pipe = load_pipeline(resolve_model(str(tiny_sd)))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert getattr(pipe, "safety_checker", None) is None
    assert pipe._progress_bar_config == {"disable": True}


def test_fingerprint_follows_weight_content(tiny_sd: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_sd, copy)
    assert fingerprint(resolve_model(str(copy))) == fingerprint(resolve_model(str(tiny_sd)))
    (copy / "spqr.toml").write_text("[evaluation]\nsteps = 3\n")
    assert fingerprint(resolve_model(str(copy))) == fingerprint(resolve_model(str(tiny_sd)))
    weights = next((copy / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert fingerprint(resolve_model(str(copy))) != fingerprint(resolve_model(str(tiny_sd)))


def test_single_checkpoint_file_goes_through_from_single_file(
    tiny_sd: Path, tmp_path: Path, monkeypatch
) -> None:
    """A single .safetensors checkpoint loads with the config folder's pipeline class,
    offline, safety checker off. (Building a real original-layout checkpoint needs
    diffusers' reverse-conversion script, so the diffusers call itself is stubbed.)"""
    from diffusers import StableDiffusionPipeline

    calls = []

    def fake_from_single_file(cls, path, **kwargs):
        calls.append((cls, path, kwargs))
        return StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None,
                                                       requires_safety_checker=False)

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file",
                        classmethod(fake_from_single_file))
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"{}")
    pipe = load_pipeline(resolve_model(str(ckpt), config=str(tiny_sd)))
    ((cls, path, kwargs),) = calls
    assert cls is StableDiffusionPipeline and path == str(ckpt)
    assert kwargs["config"] == str(tiny_sd.resolve())
    assert kwargs["local_files_only"] is True and kwargs["safety_checker"] is None
    assert pipe._progress_bar_config == {"disable": True}


def test_pickle_single_file_is_refused(tmp_path: Path, tiny_sd: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not really")
    source = resolve_model(str(ckpt), config=str(tiny_sd))
    with pytest.raises(SpqrConfigError, match="pickle.*--spqr-allow-pickle"):
        load_pipeline(source)


def test_incomplete_folder_is_one_line(tiny_sd: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(SpqrConfigError) as info:
        load_pipeline(resolve_model(str(broken)))
    assert "\n" not in str(info.value) and "could not be loaded" in str(info.value)


@pytest.mark.parametrize("name", ["tiny-sd", "toyworld/aligned"])
def test_folder_facts_match_the_loaded_pipeline(name: str) -> None:
    """Image cache keys made before loading (warm runs) equal those made after."""
    from pytest_spqr.models.evaluate import _scheduler_tag, native_resolution
    from pytest_spqr.models.loading import folder_facts

    source = resolve_model(str(FIXTURES / name))
    facts = folder_facts(source.folder)
    pipe = load_pipeline(source)
    assert facts is not None
    assert (facts.resolution, facts.scheduler) == (native_resolution(pipe), _scheduler_tag(pipe))


def test_the_text_to_image_classes_checked_by_name_are_text_to_image() -> None:
    import diffusers

    from pytest_spqr.models.loading import KNOWN_TEXT_TO_IMAGE, check_text_to_image

    for name in sorted(KNOWN_TEXT_TO_IMAGE):
        check_text_to_image(getattr(diffusers, name), where=name)
