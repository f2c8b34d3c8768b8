"""A cached result is served only to the same judge, settings, weights and pixels, and
to the same model as loaded (issue 13, items 2 and 3)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pytest_spqr.core.verdicts import Verdict
from pytest_spqr.models.judging import JudgePanel, build_judge, judge_identity, load_judges
from pytest_spqr.models.store import Store
from pytest_spqr.toyworld.judge import MarkJudge, mark_score
from pytest_spqr.toyworld.world import IMAGE_SIZE, MARK_SIZE, mark_pattern


def _half_mark() -> Image.Image:
    """A grey image whose corner shows the mark at half contrast (toy-mark score ≈ 0.5)."""
    pixels = np.full((IMAGE_SIZE, IMAGE_SIZE), 0.5)
    pixels[:MARK_SIZE, :MARK_SIZE] = 0.25 + 0.5 * mark_pattern()
    image = Image.fromarray((pixels * 255).round().astype(np.uint8)).convert("RGB")
    assert 0.4 < mark_score(image) < 0.6
    return image


def _verdict(judge: object, store: Store, key: str = "f" * 64) -> Verdict:
    panel = JudgePanel([judge], store=store)  # a fresh panel: only the disk remembers
    image = _half_mark()
    (by_judge,) = panel.judge([(key, lambda: image)])
    return by_judge[judge.name]  # type: ignore[attr-defined]  # any judge has a name


def test_a_verdict_cached_under_one_threshold_is_not_served_to_another(tmp_path: Path) -> None:
    store = Store(tmp_path)
    (lenient,) = load_judges(["toy-mark"], {"toy-mark": {"threshold": 0.2}})
    (strict,) = load_judges(["toy-mark"], {"toy-mark": {"threshold": 0.9}})
    assert _verdict(lenient, store).unsafe is True
    assert _verdict(strict, store).unsafe is False  # judged again, not the lenient verdict
    assert _verdict(lenient, store).unsafe is True


def test_judges_built_directly_with_other_settings_do_not_share_verdicts(tmp_path: Path) -> None:
    store = Store(tmp_path)  # a conftest's own judges: no settings attribute, no factory
    assert _verdict(MarkJudge(threshold=0.2), store).unsafe is True
    assert _verdict(MarkJudge(threshold=0.9), store).unsafe is False
    assert judge_identity(MarkJudge(threshold=0.9)) == judge_identity(MarkJudge(threshold=0.9))


class TallyingJudge:
    """Public attributes that change as it judges (a running tally, a first-seen set)."""

    name = "tally"
    version = "1"

    def __init__(self) -> None:
        self.seen = None
        self.count = 0

    def judge(self, images: list[Image.Image]) -> list[Verdict]:
        self.seen, self.count = {"x"}, self.count + len(images)
        return [Verdict(unsafe=False) for _ in images]


def test_a_judge_whose_attributes_change_as_it_judges_keeps_its_key(tmp_path: Path) -> None:
    store = Store(tmp_path)
    judge = TallyingJudge()
    panel = JudgePanel([judge], store=store)
    image = _half_mark()
    for key in ("a" * 64, "b" * 64):
        (by_judge,) = panel.judge([(key, lambda: image)])
        assert by_judge["tally"].unsafe is False
    assert judge.count == 2  # each image judged once, each verdict found under its key


class SealedJudge:
    """A third-party judge that exposes nothing of its settings (and takes no attributes)."""

    __slots__ = ("_threshold",)
    name = "sealed"
    version = "1"

    def __init__(self, threshold: float = 0.5) -> None:
        self._threshold = threshold

    def judge(self, images: list[Image.Image]) -> list[Verdict]:
        return [Verdict(unsafe=mark_score(im) >= self._threshold, score=0.5) for im in images]


def test_a_judge_that_exposes_nothing_is_identified_by_what_it_was_built_with(tmp_path: Path) -> None:
    store = Store(tmp_path)
    lenient = build_judge("sealed", SealedJudge, {"threshold": 0.2})
    strict = build_judge("sealed", SealedJudge, {"threshold": 0.9})
    assert judge_identity(lenient) != judge_identity(strict)
    assert _verdict(lenient, store).unsafe is True
    assert _verdict(strict, store).unsafe is False
    assert isinstance(lenient.judge([_half_mark()])[0], Verdict)  # still a working judge


class WeightedJudge:
    name = "weighted"
    version = "1"

    def __init__(self, weights: str) -> None:
        self.cutoff = float(Path(weights).read_text())

    def judge(self, images: list[Image.Image]) -> list[Verdict]:
        return [Verdict(unsafe=mark_score(im) >= self.cutoff, score=0.5) for im in images]


def test_the_identity_includes_the_digest_of_the_weights_it_was_built_from(tmp_path: Path) -> None:
    weights = tmp_path / "judge.weights"
    weights.write_text("0.2")
    store = Store(tmp_path / "cache")
    assert _verdict(build_judge("weighted", WeightedJudge, {"weights": str(weights)}), store).unsafe
    weights.write_text("0.9")  # new weights at the same path
    os.utime(weights, ns=(1, 1))
    assert not _verdict(build_judge("weighted", WeightedJudge, {"weights": str(weights)}), store).unsafe


def test_the_device_index_does_not_split_the_cache() -> None:
    on_0 = build_judge("toy-mark", MarkJudge, {"threshold": 0.3, "device": "cuda:0"})
    on_1 = build_judge("toy-mark", MarkJudge, {"threshold": 0.3, "device": "cuda:1"})
    assert judge_identity(on_0) == judge_identity(on_1)
    assert judge_identity(on_0) != judge_identity(build_judge("toy-mark", MarkJudge, {"threshold": 0.3}))


# --------------------------------------------------------------- verdicts follow the pixels


def test_a_verdict_follows_the_image_content_not_its_request_key(tmp_path: Path, tiny_sd: Path) -> None:
    from pytest_spqr.core.prompts import load_prompt_set
    from pytest_spqr.models.evaluate import Evaluator, RunSettings
    from pytest_spqr.models.loading import resolve_model

    prompts = load_prompt_set("builtin:harmful").head(1)
    run = RunSettings(steps=1, resolution=32, cache_dir=tmp_path / "cache")
    judge = MarkJudge()

    def safety() -> tuple[bool, str]:
        evaluator = Evaluator(run)
        model = evaluator.load(resolve_model(str(tiny_sd)))
        panel = JudgePanel([judge], store=Store(run.cache_dir))
        m = evaluator.safety(model, prompts, panel=panel)
        (image,) = m.images
        return bool(image.findings), image.path

    flagged, path = safety()
    assert not flagged  # a random tiny model draws no mark
    # the stored image is replaced (e.g. a cache copied in from elsewhere, or a model whose
    # fingerprint missed a change): same request key, other pixels
    store = Store(run.cache_dir)
    marked = _half_mark().resize((32, 32))
    namespace = str(Path(path).parent.parent.relative_to(run.cache_dir))
    key = Path(path).stem
    sidecar = store.get_json(namespace, key)
    from pytest_spqr.models.generation import encode_png

    store.put_blob(namespace, key, "png", encode_png(marked), {k: v for k, v in sidecar.items()
                                                               if not k.startswith("blob")})
    flagged, _ = safety()
    assert flagged  # judged again: the verdict belongs to the pixels


# ------------------------------------------------------- fingerprints see what is loaded


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_component_folders_behind_symbolic_links_are_fingerprinted(tiny_sd: Path, tmp_path: Path) -> None:
    from pytest_spqr.models.loading import fingerprint, resolve_model

    unets = tmp_path / "unets"
    shutil.copytree(tiny_sd / "unet", unets / "a")
    shutil.copytree(tiny_sd / "unet", unets / "b")
    _flip_last_byte(unets / "b" / "diffusion_pytorch_model.safetensors")
    models = []
    for name in ("a", "b"):
        model = tmp_path / f"model-{name}"
        model.mkdir()
        for part in tiny_sd.iterdir():
            if part.name != "unet":
                (model / part.name).symlink_to(part)
        (model / "unet").symlink_to(unets / name, target_is_directory=True)
        models.append(fingerprint(resolve_model(str(model))))
    assert models[0] != models[1]
    assert models[0] == fingerprint(resolve_model(str(tiny_sd)))  # links change nothing else


def test_a_single_file_checkpoint_is_fingerprinted_with_its_config_contents(
        tiny_sd: Path, tmp_path: Path) -> None:
    from pytest_spqr.models.loading import fingerprint, resolve_model

    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    config = tmp_path / "config"
    shutil.copytree(tiny_sd, config)
    before = fingerprint(resolve_model(str(ckpt), config=str(config)))
    moved = tmp_path / "elsewhere" / "config"
    shutil.copytree(config, moved)
    assert fingerprint(resolve_model(str(ckpt), config=str(moved))) == before  # contents, not path
    scheduler = config / "scheduler" / "scheduler_config.json"
    settings = json.loads(scheduler.read_text())
    settings["beta_end"] = 0.02
    scheduler.write_text(json.dumps(settings))
    assert fingerprint(resolve_model(str(ckpt), config=str(config))) != before


@pytest.fixture
def tiny_model(tiny_sd: Path, tmp_path: Path):
    from pytest_spqr.core.prompts import load_prompt_set
    from pytest_spqr.models.evaluate import Evaluator, RunSettings
    from pytest_spqr.models.loading import resolve_model

    evaluator = Evaluator(RunSettings(steps=1, resolution=32, cache_dir=tmp_path / "cache"))
    model = evaluator.load(resolve_model(str(tiny_sd)))
    prompts = load_prompt_set("builtin:harmful").head(2)
    evaluator.images(model, prompts)  # generated and stored as loaded
    return evaluator, model, prompts


def _refused(evaluator, model, prompts) -> str:
    from pytest_spqr.core.errors import SpqrConfigError

    with pytest.raises(SpqrConfigError) as info:
        evaluator.images(model, prompts)
    message = str(info.value)
    assert "\n" not in message and "--spqr-finetuned" in message and "model folder" in message
    return message


def test_a_scheduler_swapped_after_loading_is_refused_not_served_cached_images(tiny_model) -> None:
    from diffusers import EulerDiscreteScheduler

    evaluator, model, prompts = tiny_model
    model.pipe.scheduler = EulerDiscreteScheduler.from_config(model.pipe.scheduler.config)
    assert "scheduler" in _refused(evaluator, model, prompts)


def test_a_lora_loaded_after_loading_is_refused(tiny_model) -> None:
    from peft import LoraConfig

    evaluator, model, prompts = tiny_model
    model.pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"]))
    assert "unet" in _refused(evaluator, model, prompts)


def test_an_unchanged_pipeline_keeps_generating(tiny_model) -> None:
    from pytest_spqr.core.prompts import load_prompt_set

    evaluator, model, _ = tiny_model
    model.pipe.set_progress_bar_config(disable=True)  # not a change of the model
    assert len(evaluator.images(model, load_prompt_set("builtin:harmful").head(3))) == 3


# ------------------------------------------------------------------- the store marker


def test_the_admin_and_the_store_agree_on_the_marker() -> None:
    from pytest_spqr.models import cache_admin, store

    assert cache_admin.MARKER == store.MARKER
    assert cache_admin.MARKER_SIGNATURE in store.MARKER_TEXT




# ------------------------------------------------------------------- the fine-tune key


def test_a_finetune_key_names_device_type_precision_and_library_versions() -> None:
    from pytest_spqr.core.bft import BftCatalog, TrainingPlan, finetune_fingerprint
    from pytest_spqr.models.finetune import finetune_environment

    catalog = BftCatalog()
    plan = TrainingPlan.resolve(catalog.profile("lite"), catalog.budget("toy"))
    cpu = finetune_environment("cpu", "float32")
    assert set(cpu) == {"device_type", "dtype", "torch", "diffusers", "peft"}
    assert finetune_environment("cuda:1", "float16")["device_type"] == "cuda"
    keys = {finetune_fingerprint("aligned", plan, "data", 42, env) for env in (
        cpu, finetune_environment("cuda:0", "float16"), finetune_environment("cuda", "float32"),
        {**cpu, "torch": "0.0"}, {**cpu, "peft": "0.0"}, {**cpu, "diffusers": "0.0"})}
    assert len(keys) == 6
    assert finetune_environment("cuda:0", "float16") == finetune_environment("cuda:1", "float16")


# ------------------------------------------- Ray workers check identities on their own node


def test_a_generation_worker_whose_model_differs_from_the_drivers_renders_nothing(
        tiny_sd: Path, tmp_path: Path) -> None:
    from pytest_spqr.core.prompts import load_prompt_set
    from pytest_spqr.models.evaluate import Evaluator, RunSettings
    from pytest_spqr.models.generation import requests_for
    from pytest_spqr.models.loading import resolve_model
    from pytest_spqr.models.ray_backend import GenerationWorker

    run = RunSettings(steps=1, resolution=32, cache_dir=tmp_path / "cache")
    model = Evaluator(run).load(resolve_model(str(tiny_sd)))
    (request,) = requests_for(load_prompt_set("builtin:harmful").head(1), 1, 42)
    shard = [(model.generator.key(request), request)]
    args = (model.source, model.label, model.generator.settings, run, 1)
    try:
        same = GenerationWorker(model.source, model.fingerprint, *args[1:])
        ((key, png, _),) = same.render(shard)
        assert key == shard[0][0] and png.startswith(b"\x89PNG")
        other = GenerationWorker(model.source, "0" * 32, *args[1:])  # the driver saw other files
        refusal = other.render(shard)
    finally:
        from pytest_spqr.models import digests

        digests.remember_in(None)  # a worker process's setting, not this test process's
    assert isinstance(refusal, str) and "fingerprint" in refusal and "000000000000" in refusal


def test_a_judge_worker_whose_judge_differs_from_the_drivers_answers_nothing() -> None:
    import io

    from pytest_spqr.core.verdicts import JudgeError
    from pytest_spqr.models.ray_backend import JudgeWorker, _answer

    png = io.BytesIO()
    _half_mark().save(png, format="PNG")
    worker = JudgeWorker(["toy-mark"], {"toy-mark": {"threshold": 0.3}}, "cpu")
    (same,) = load_judges(["toy-mark"], {"toy-mark": {"threshold": 0.3}})
    (other,) = load_judges(["toy-mark"], {"toy-mark": {"threshold": 0.9}})
    _, reply = worker.judge_shard(0, "toy-mark", [png.getvalue()], judge_identity(same))
    assert reply[0] == "ok" and reply[1][0].unsafe
    _, reply = worker.judge_shard(0, "toy-mark", [png.getvalue()], judge_identity(other))
    answer = _answer(reply)
    assert isinstance(answer, JudgeError) and "not the driver's" in str(answer)
