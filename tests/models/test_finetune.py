"""Benign fine-tuning on the tiny models: what each profile trains, determinism, the cache,
the three architectures, and loading a provider's own fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pytest_spqr.core.bft import BftCatalog, TrainingPlan, finetune_fingerprint, parse_bft_table
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.models.adapted import (
    CHANGED_WEIGHTS,
    LORA_WEIGHTS,
    classify_finetuned,
    with_lora,
    with_unet_folder,
)
from pytest_spqr.models.benign_data import BenignDataset, load_scenario
from pytest_spqr.models.finetune import (
    FinetuneCache,
    ensure_finetuned,
    family_of,
    load_finetuned,
    save_weights,
    train,
)
from pytest_spqr.models.loading import ModelSource, load_pipeline, resolve_model
from pytest_spqr.models.tiny import build_tiny_sd2, build_tiny_sdxl

CATALOG = parse_bft_table(
    {
        "profiles": {
            "lite-te": {"base": "lite", "text_encoder": True},
            "nowhere": {"method": "partial", "target_modules": ["attn9.to_k"]},
        },
        "budgets": {
            "smoke": {"base": "toy", "max_steps": 2, "batch_size": 2, "resolution": 32,
                      "lr_warmup_steps": 0, "learning_rate": 1e-3},
        },
    },
    "test",
)


def plan(profile: str, **overrides) -> TrainingPlan:
    resolved = TrainingPlan.resolve(CATALOG.profile(profile), CATALOG.budget("smoke"))
    if overrides:
        from dataclasses import replace

        resolved = replace(resolved, config=replace(resolved.config, **overrides))
    return resolved


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe(tiny_sd: Path):
    torch.set_num_threads(1)
    return load_pipeline(resolve_model(str(tiny_sd)))


@pytest.fixture(scope="module")
def data() -> BenignDataset:
    full = load_scenario("general")
    return BenignDataset("general", full.sources, full.kinds, full.examples[:4])


def state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module) -> set[str]:
    after = module.state_dict()
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


def image(p, prompt: str = "a red house") -> torch.Tensor:
    out = p(prompt, num_inference_steps=2, height=32, width=32,
            generator=torch.Generator().manual_seed(0), output_type="pt")
    return out.images


# ---------------------------------------------------------------- what each profile trains


def test_lite_trains_only_adapters_and_leaves_the_aligned_model_alone(pipe, data) -> None:
    aligned = {name: state(getattr(pipe, name)) for name in ("unet", "text_encoder", "vae")}
    trained = train(pipe, plan("lite"), data, seed=42)
    for name, before in aligned.items():
        assert not changed(before, getattr(pipe, name)), f"the aligned {name} changed"
    lora = {n: p for n, p in trained.unet.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora} == {"to_q", "to_k", "to_v", "0"}
    assert any(p.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)  # adapter non-zero
    base = {n.replace(".base_layer", ""): p for n, p in trained.unet.named_parameters()
            if "lora_" not in n}
    assert all(torch.equal(base[n], p) for n, p in pipe.unet.named_parameters())
    assert not any(p.requires_grad for n, p in trained.unet.named_parameters() if "lora_" not in n)
    assert trained.text_encoders == {} and not trained.unet.training


def test_moderate_trains_exactly_the_cross_attention_projections(pipe, data) -> None:
    before = state(pipe.unet)
    trained = train(pipe, plan("moderate"), data, seed=42)
    moved = changed(before, trained.unet)
    wanted = {k for k in before if any(f".attn2.{m}." in f".{k}." for m in ("to_k", "to_v", "to_out"))}
    # 6 transformer blocks × (to_k.weight, to_v.weight, to_out.0.weight, to_out.0.bias)
    assert moved == wanted and len(wanted) == 6 * 4


def test_standard_trains_the_unet_only(pipe, data, tmp_path: Path) -> None:
    before = state(pipe.unet)
    trained = train(pipe, plan("standard"), data, seed=42)
    moved = changed(before, trained.unet)
    assert len(moved) > 0.9 * len(before)
    assert trained.text_encoders == {}
    files = save_weights(pipe, trained, tmp_path)
    assert files == [CHANGED_WEIGHTS]
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / CHANGED_WEIGHTS))
    assert set(saved) == moved  # changed tensors only


def test_text_encoder_lora_adapts_the_text_encoder_too(pipe, data) -> None:
    encoder = state(pipe.text_encoder)
    trained = train(pipe, plan("lite-te"), data, seed=42)
    assert not changed(encoder, pipe.text_encoder)
    adapted = trained.text_encoders["text_encoder"]
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)


def test_a_short_overfit_lowers_the_loss(pipe, data) -> None:
    two = BenignDataset("two", data.sources, data.kinds, data.examples[:2])
    trained = train(pipe, plan("standard", max_steps=24, batch_size=2), two, seed=0)
    first, last = trained.losses[:8], trained.losses[-8:]
    assert sum(last) / 8 < 0.7 * sum(first) / 8, trained.losses


def test_same_seed_same_weights_other_seed_other_weights(pipe, data) -> None:
    a = train(pipe, plan("lite"), data, seed=7)
    b = train(pipe, plan("lite"), data, seed=7)
    c = train(pipe, plan("lite"), data, seed=8)
    sa, sb, sc = (dict(t.unet.named_parameters()) for t in (a, b, c))
    assert all(torch.equal(sa[n], sb[n]) for n in sa) and a.losses == b.losses
    assert not all(torch.equal(sa[n], sc[n]) for n in sa)


def test_gradient_checkpointing_saves_memory_not_accuracy(pipe, data) -> None:
    plain = train(pipe, plan("lite"), data, seed=7)
    checkpointed = train(pipe, plan("lite", gradient_checkpointing=True), data, seed=7)
    a, b = dict(plain.unet.named_parameters()), dict(checkpointed.unet.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a) and plain.losses == checkpointed.losses


def test_targets_that_match_nothing_are_refused(pipe, data) -> None:
    with pytest.raises(SpqrConfigError, match=r"bft profile 'nowhere': target_modules \['attn9.to_k'\] match no UNet parameter — "):
        train(pipe, plan("nowhere"), data, seed=0)


def test_other_pipelines_are_refused_with_a_clear_message() -> None:
    class PixArtAlphaPipeline:  # stands in for any other diffusers text-to-image pipeline
        pass

    with pytest.raises(SpqrConfigError) as info:
        family_of(PixArtAlphaPipeline())
    assert str(info.value) == (
        "PixArtAlphaPipeline: benign fine-tuning supports StableDiffusionPipeline (SD 1.x, SD 2.x) "
        "and StableDiffusionXLPipeline — this pipeline still gets generation and judging; to gate "
        "a fine-tune you made yourself, pass --spqr-finetuned=PATH"
    )


# ---------------------------------------------------------------- saving, loading, the cache


def test_lora_round_trip_keeps_alpha_and_eval_mode(pipe, data, tmp_path: Path) -> None:
    trained = train(pipe, plan("lite-te"), data, seed=3)
    assert save_weights(pipe, trained, tmp_path) == [LORA_WEIGHTS]
    from safetensors import safe_open

    with safe_open(str(tmp_path / LORA_WEIGHTS), framework="pt") as handle:
        metadata = handle.metadata()
    adapter = json.loads(metadata["lora_adapter_metadata"])
    assert adapter["unet.lora_alpha"] == 16 and adapter["unet.r"] == 8
    assert adapter["text_encoder.lora_alpha"] == 16
    loaded = load_finetuned(pipe, tmp_path, {"profile": {"method": "lora"}})
    assert loaded.unet is not pipe.unet and loaded.text_encoder is not pipe.text_encoder
    assert loaded.vae is pipe.vae and loaded.tokenizer is pipe.tokenizer
    assert not any(m.training for m in loaded.unet.modules())
    assert not any(m.training for m in loaded.text_encoder.modules())
    # the adapter loaded from the file acts exactly like the trained one (alpha kept)
    from pytest_spqr.models.adapted import derived_pipeline

    in_memory = derived_pipeline(pipe, unet=trained.unet, text_encoder=trained.text_encoders["text_encoder"])
    reference, again = image(in_memory), image(loaded)
    assert torch.allclose(reference, again, atol=1e-5)
    assert not torch.allclose(image(pipe), again, atol=1e-4)


def test_partial_round_trip(pipe, data, tmp_path: Path) -> None:
    trained = train(pipe, plan("moderate"), data, seed=3)
    save_weights(pipe, trained, tmp_path)
    loaded = load_finetuned(pipe, tmp_path, {"profile": {"method": "partial"}})
    own = dict(loaded.unet.named_parameters())
    assert all(torch.equal(own[n], p) for n, p in trained.unet.named_parameters())
    assert loaded.text_encoder is pipe.text_encoder


def test_cache_trains_once_then_reuses(pipe, data, tmp_path: Path, monkeypatch) -> None:
    cache = FinetuneCache(tmp_path)
    p = plan("lite")
    key = finetune_fingerprint("aligned-fp", p, data.fingerprint, 42)
    first = ensure_finetuned(pipe, p, data, key=key, seed=42, cache=cache,
                             aligned_fingerprint="aligned-fp", benign_checked=56)
    assert not first.reused and first.folder == tmp_path / "finetunes" / key
    record = json.loads((first.folder / "bft.json").read_text())
    assert record["profile"]["name"] == "lite" and record["budget"]["name"] == "smoke"
    assert record["dataset"]["fingerprint"] == data.fingerprint and record["seed"] == 42
    assert record["steps"] == 2 and len(record["losses"]) == 2
    assert record["dataset"]["benign_check"].startswith("no caption contains any of the 56")
    assert sorted(p.name for p in (tmp_path / "finetunes").iterdir() if not p.name.startswith(".")) == [key]
    assert not [p for p in (tmp_path / "finetunes").iterdir() if p.is_dir() and p.name.startswith(".")]

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("pytest_spqr.models.finetune.train", no_training)
    second = ensure_finetuned(pipe, p, data, key=key, seed=42, cache=FinetuneCache(tmp_path),
                              aligned_fingerprint="aligned-fp")
    assert second.reused and second.record == record
    # a torn entry (weights changed after the record was written) is trained again
    (first.folder / LORA_WEIGHTS).write_bytes(b"torn")
    monkeypatch.undo()
    third = ensure_finetuned(pipe, p, data, key=key, seed=42, cache=FinetuneCache(tmp_path),
                             aligned_fingerprint="aligned-fp")
    assert not third.reused and (third.folder / LORA_WEIGHTS).stat().st_size > 100


# ---------------------------------------------------------------- architectures


@pytest.fixture(scope="module")
def tiny_sd2(tmp_path_factory):
    folder = build_tiny_sd2(tmp_path_factory.mktemp("sd2") / "sd2")
    return load_pipeline(ModelSource(str(folder), folder, "folder"))


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    folder = build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "sdxl")
    return load_pipeline(ModelSource(str(folder), folder, "folder"))


@pytest.mark.parametrize("arch", ["tiny_sd2", "tiny_sdxl"])
def test_sd2_and_sdxl_fine_tune_under_every_profile(arch, data, request, tmp_path: Path) -> None:
    p = request.getfixturevalue(arch)
    one_step = {"max_steps": 1}
    for profile in ("lite-te", "moderate", "standard"):
        before = state(p.unet)
        trained = train(p, plan(profile, **one_step), data, seed=1)
        assert trained.family == ("sdxl" if arch == "tiny_sdxl" else "sd")
        assert trained.prediction_type == ("v_prediction" if arch == "tiny_sd2" else "epsilon")
        if profile == "lite-te":
            expected = {"text_encoder", "text_encoder_2"} if arch == "tiny_sdxl" else {"text_encoder"}
            assert set(trained.text_encoders) == expected
            out = tmp_path / profile
            out.mkdir()
            save_weights(p, trained, out)
            loaded = load_finetuned(p, out, {"profile": {"method": "lora"}})
            assert not torch.allclose(image(loaded), image(p), atol=1e-5)
        elif profile == "moderate":
            moved = changed(before, trained.unet)
            assert moved and all(".attn2.to_" in k for k in moved)
        else:
            assert len(changed(before, trained.unet)) > 0.9 * len(before)


# ---------------------------------------------------------------- the provider's own fine-tune


@pytest.fixture(scope="module")
def provided(pipe, data, tmp_path_factory):
    """A LoRA adapter folder, the same adapter as a file, a UNet folder, a pipeline folder."""
    root = tmp_path_factory.mktemp("provided")
    trained = train(pipe, plan("lite"), data, seed=5)
    (root / "lora").mkdir()
    save_weights(pipe, trained, root / "lora")
    standard = train(pipe, plan("standard"), data, seed=5)
    standard.unet.save_pretrained(root / "unet", safe_serialization=True)
    from pytest_spqr.models.adapted import derived_pipeline

    derived_pipeline(pipe, unet=standard.unet).save_pretrained(root / "pipeline", safe_serialization=True)
    return root


def test_finetuned_inputs_are_classified(provided: Path) -> None:
    assert classify_finetuned(str(provided / "lora")).kind == "lora"
    single = classify_finetuned(str(provided / "lora" / LORA_WEIGHTS))
    assert (single.kind, single.weight_name) == ("lora", LORA_WEIGHTS)
    assert classify_finetuned(str(provided / "unet")).kind == "unet"
    assert classify_finetuned(str(provided / "pipeline")).kind == "pipeline"


def test_finetuned_lora_and_unet_load_onto_the_aligned_model(pipe, provided: Path) -> None:
    lora = with_lora(pipe, provided / "lora", LORA_WEIGHTS)
    assert not any(m.training for m in lora.unet.modules())
    assert torch.allclose(image(lora), image(lora))  # deterministic: dropout is off
    unet = with_unet_folder(pipe, provided / "unet")
    assert unet.vae is pipe.vae and not torch.allclose(image(unet), image(pipe), atol=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "no such file or folder — pass a pipeline folder"),
        (lambda root: _write(root / "weights.bin", b"x"), ".bin is not a LoRA adapter file"),
        (lambda root: _full_checkpoint(root / "full.safetensors"), "holds no LoRA weights (no 'lora' keys)"),
        (lambda root: _write(root / "vae" / "config.json", b'{"_class_name": "AutoencoderKL"}').parent,
         "config.json names 'AutoencoderKL', not a UNet2DConditionModel"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "no model_index.json, config.json or .safetensors"),
    ],
)
def test_bad_finetuned_inputs(tmp_path: Path, make, message: str) -> None:
    spec = make(tmp_path)
    with pytest.raises(SpqrConfigError) as info:
        classify_finetuned(str(spec))
    text = str(info.value)
    assert text.startswith(f"--spqr-finetuned={spec}: ") and message in text and "\n" not in text


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _full_checkpoint(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.weight": torch.zeros(2)}, str(path))
    return path


def test_catalog_is_usable_without_a_thresholds_file() -> None:
    assert BftCatalog().profile("lite").method == "lora"
