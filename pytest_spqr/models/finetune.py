"""Benign fine-tuning of the aligned model, the standard diffusers way, and its cache.

:func:`train` fine-tunes *copies* of the aligned UNet (and text encoders, for a LoRA
profile that adapts them) on benign image–caption pairs with the denoising loss of the
diffusers training scripts (``train_text_to_image.py`` / ``train_text_to_image_lora.py``):
latents from the frozen VAE (its posterior mean, encoded once), noise added at a uniformly drawn timestep by a
``DDPMScheduler`` built from the pipeline's scheduler config, and an MSE loss against
the noise (epsilon prediction) or the velocity (v-prediction, SD 2.x). SDXL gets its
two text encoders' penultimate states, the pooled embedding and the six added time ids.
AdamW, gradient clipping, warm-up and the LR schedule come from the
:class:`~pytest_spqr.core.bft.TrainingPlan`.

The loop runs inside an ``accelerate.Accelerator``: on one device it only adds fp16/bf16
autocast and loss scaling on CUDA (CPU trains in float32); launched with
``accelerate launch`` on several GPUs it becomes data-parallel, each process taking its
share of every global batch. Every random draw (batch order, noise, timesteps, LoRA
initialisation, dropout) comes from the seed, so a CPU run is bit-identical for a seed
and a thread count.

:class:`FinetuneCache` stores the result under ``<cache>/finetunes/<key>/``: LoRA as a
diffusers adapter (``pytorch_lora_weights.safetensors``, with alpha in its metadata),
partial and full fine-tunes as a safetensors file of the changed UNet tensors only,
plus ``bft.json`` (plan, data, seed, losses, wall time). Entries are written to a
temporary folder and renamed into place; a file lock keeps two xdist workers from
training the same thing twice.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_spqr.core.bft import FORMAT_VERSION, TrainingPlan
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.models.adapted import (
    CHANGED_WEIGHTS,
    LORA_WEIGHTS,
    quiet_libraries,
    with_changed_tensors,
    with_lora,
)
from pytest_spqr.models.benign_data import BenignDataset, preprocess
from pytest_spqr.models.digests import hash_file
from pytest_spqr.models.generation import ProgressFactory, _no_progress
from pytest_spqr.models.store import mark_cache

log = logging.getLogger("pytest_spqr.bft")

RECORD = "bft.json"
SUPPORTED = "StableDiffusionPipeline (SD 1.x, SD 2.x) and StableDiffusionXLPipeline"


def family_of(pipe: Any) -> str:
    """``sd`` (SD 1.x/2.x) or ``sdxl``; any other pipeline is refused with one line."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if isinstance(pipe, StableDiffusionXLPipeline):
        return "sdxl"
    if isinstance(pipe, StableDiffusionPipeline):
        return "sd"
    raise SpqrConfigError(
        f"{type(pipe).__name__}: benign fine-tuning supports {SUPPORTED} — this pipeline "
        "still gets generation and judging; to gate a fine-tune you made yourself, pass "
        "--spqr-finetuned=PATH"
    )


@dataclass
class TrainedWeights:
    """The trained copies and what happened while training them."""

    method: str
    unet: Any
    text_encoders: dict[str, Any]
    losses: list[float]
    steps: int
    seconds: float
    resolution: int
    prediction_type: str
    family: str


# ---------------------------------------------------------------- what trains


def _selected(name: str, targets: tuple[str, ...]) -> bool:
    """``attn2.to_out`` selects ``…attn2.to_out.0.weight``: dotted pieces, whole names."""
    padded = f".{name}."
    return any(f".{target}." in padded for target in targets)


def _lora_config(profile: Any, targets: tuple[str, ...]) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=profile.rank,
        lora_alpha=profile.alpha,
        lora_dropout=profile.dropout,
        init_lora_weights="gaussian",
        target_modules=list(targets),
    )


def _float32(module: Any) -> Any:
    """``module`` in float32 (cast only when needed: diffusers warns on every ``.to``)."""
    import torch

    if any(p.dtype != torch.float32 for p in module.parameters()):
        module.to(torch.float32)
    return module


def _trainable_copies(pipe: Any, plan: TrainingPlan, amp: bool) -> tuple[Any, dict[str, Any]]:
    """Copies of the UNet (and text encoders) with exactly the profile's parameters trainable.

    Trainable parameters are float32. Frozen LoRA base weights keep the pipeline's dtype
    under mixed precision (as the diffusers LoRA script does) and are float32 otherwise.
    """
    import torch

    profile = plan.profile
    unet = copy.deepcopy(pipe.unet)
    unet.requires_grad_(False)
    if not amp:
        _float32(unet)
    encoders: dict[str, Any] = {}
    if profile.method == "full":
        _float32(unet).requires_grad_(True)
    elif profile.method == "partial":
        _float32(unet)
        chosen = [p for n, p in unet.named_parameters() if _selected(n, profile.target_modules)]
        if not chosen:
            raise SpqrConfigError(
                f"bft profile {profile.name!r}: target_modules {list(profile.target_modules)} "
                "match no UNet parameter — use dotted module names such as attn2.to_k"
            )
        for param in chosen:
            param.requires_grad_(True)
    else:
        from diffusers.training_utils import cast_training_params

        try:
            unet.add_adapter(_lora_config(profile, profile.target_modules))
        except ValueError as exc:
            raise SpqrConfigError(
                f"bft profile {profile.name!r}: LoRA target_modules "
                f"{list(profile.target_modules)} do not fit the UNet ({str(exc)[:120]}) — use "
                "module names such as to_q, to_k, to_v, to_out.0"
            ) from None
        cast_training_params(unet, dtype=torch.float32)
        if profile.text_encoder:
            for name in ("text_encoder", "text_encoder_2"):
                encoder = getattr(pipe, name, None)
                if encoder is None:
                    continue
                encoder = copy.deepcopy(encoder)
                encoder.requires_grad_(False)
                if not amp:
                    _float32(encoder)
                try:
                    encoder.add_adapter(_lora_config(profile, profile.text_encoder_target_modules))
                except ValueError as exc:
                    raise SpqrConfigError(
                        f"bft profile {profile.name!r}: text_encoder_target_modules "
                        f"{list(profile.text_encoder_target_modules)} do not fit {name} "
                        f"({str(exc)[:120]}) — use names such as q_proj, k_proj, v_proj, out_proj"
                    ) from None
                cast_training_params(encoder, dtype=torch.float32)
                encoders[name] = encoder
    return unet, encoders


# ---------------------------------------------------------------- data


def _encode_latents(pipe: Any, dataset: BenignDataset, resolution: int, device: Any) -> Any:
    """The VAE posterior mean of every image, computed once (the VAE is frozen).

    The diffusers scripts draw ``latent_dist.sample()`` each step; for Stable Diffusion's
    VAE the posterior is narrow, so its mean is what a sample is, up to little noise. A
    VAE with a wide posterior (the toy world's, trained with a tiny KL weight) was only
    ever used through its mean, and a sample would be a distribution shift.
    """
    import torch

    vae = pipe.vae
    if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        vae = copy.deepcopy(vae).to(torch.float32)
    means = []
    with torch.no_grad():
        for start in range(0, len(dataset), 16):
            chunk = dataset.examples[start : start + 16]
            pixels = torch.stack([preprocess(e.load(), resolution) for e in chunk])
            dist = vae.encode(pixels.to(device, vae.dtype)).latent_dist
            means.append(dist.mean.float().cpu())
    return torch.cat(means)


class _Batches:
    """Indices of each global batch: epochs of seeded permutations, wrapping as needed."""

    def __init__(self, n: int, generator: Any) -> None:
        self.n = n
        self.generator = generator
        self.order: list[int] = []
        self.position = 0

    def take(self, k: int) -> list[int]:
        import torch

        out: list[int] = []
        while len(out) < k:
            if self.position >= len(self.order):
                self.order = torch.randperm(self.n, generator=self.generator).tolist()
                self.position = 0
            step = min(k - len(out), len(self.order) - self.position)
            out += self.order[self.position : self.position + step]
            self.position += step
        return out


# ---------------------------------------------------------------- training


def _accelerator(device: Any, mixed_precision: str) -> Any:
    from accelerate import Accelerator  # type: ignore[import-untyped]  # ships no py.typed

    on_cuda = device.type == "cuda"
    if on_cuda:
        import torch

        torch.cuda.set_device(device)
    precision = mixed_precision if on_cuda else "no"
    try:
        return Accelerator(cpu=not on_cuda, mixed_precision=precision, device_placement=False)
    except ValueError as exc:
        raise SpqrConfigError(
            f"bft: accelerate is already set up differently in this process ({exc}) — use one "
            "mixed_precision for every budget of a run"
        ) from None


def train(
    pipe: Any,
    plan: TrainingPlan,
    dataset: BenignDataset,
    *,
    seed: int,
    label: str = "",
    progress: ProgressFactory = _no_progress,
) -> TrainedWeights:
    """Fine-tune copies of ``pipe``'s weights as ``plan`` says; ``pipe`` is left untouched."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from pytest_spqr.models.adapted import derived_pipeline
    from pytest_spqr.models.evaluate import native_resolution

    family = family_of(pipe)
    cfg = plan.config
    device = pipe.unet.device
    resolution = cfg.resolution or native_resolution(pipe)
    if len(dataset) == 0:
        raise SpqrConfigError(f"benign data {dataset.label}: empty — give at least one pair")
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = noise_scheduler.config.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise SpqrConfigError(
            f"{type(pipe).__name__}: prediction_type {prediction!r} — benign fine-tuning "
            "supports epsilon and v_prediction models"
        )
    accelerator = _accelerator(device, cfg.mixed_precision)
    world, rank = accelerator.num_processes, accelerator.process_index
    total = cfg.total_steps(len(dataset), processes=world)
    accum = cfg.gradient_accumulation_steps
    name = label or plan.profile.name
    log.info("bft %s: %s; data %s; seed %d; %d steps", name, plan.describe(len(dataset)),
             dataset.label, seed, total)
    started = time.perf_counter()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), quiet_libraries():
        torch.manual_seed(seed)
        generator = torch.Generator("cpu").manual_seed(seed)
        amp = device.type == "cuda" and cfg.mixed_precision != "no"
        unet, encoders = _trainable_copies(pipe, plan, amp)
        means = _encode_latents(pipe, dataset, resolution, device)
        scaling = pipe.vae.config.scaling_factor
        train_pipe = derived_pipeline(pipe, unet=unet, **encoders)
        modules = [unet, *encoders.values()]
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            for encoder in encoders.values():
                encoder.gradient_checkpointing_enable()
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon,
            weight_decay=cfg.weight_decay,
        )
        schedule = cfg.lr_scheduler
        if schedule == "constant" and cfg.lr_warmup_steps:
            schedule = "constant_with_warmup"
        lr_scheduler = get_scheduler(
            schedule, optimizer, num_warmup_steps=cfg.lr_warmup_steps, num_training_steps=total
        )
        # Only the UNet is wrapped (data-parallel across processes): the text encoders run
        # inside the pipeline's own encode_prompt, so their LoRA gradients are averaged below.
        wrapped_unet, optimizer = accelerator.prepare(unet, optimizer)
        encoder_params = [p for m in encoders.values() for p in m.parameters() if p.requires_grad]
        for module in modules:
            module.train()

        def encode(captions: list[str]) -> tuple[Any, dict[str, Any] | None]:
            if family == "sd":
                embeds, _ = train_pipe.encode_prompt(captions, device, 1, False)
                return embeds, None
            embeds, _, pooled, _ = train_pipe.encode_prompt(
                prompt=captions, device=device, num_images_per_prompt=1,
                do_classifier_free_guidance=False,
            )
            ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution],
                               dtype=embeds.dtype, device=device)
            return embeds, {"text_embeds": pooled, "time_ids": ids.repeat(len(captions), 1)}

        batches = _Batches(len(dataset), generator)
        captions = dataset.captions
        micro = cfg.batch_size
        losses: list[float] = []
        every = max(1, total // 10)
        window: list[float] = []
        with progress(total, f"spqr: fine-tuning {name}") as advance:
            for step in range(total):
                step_loss = 0.0
                for _ in range(accum):
                    chosen = batches.take(micro * world)
                    k = len(chosen)
                    noise = torch.randn((k, *means.shape[1:]), generator=generator)
                    timesteps = torch.randint(
                        0, noise_scheduler.config.num_train_timesteps, (k,), generator=generator
                    )
                    mine = slice(rank * micro, (rank + 1) * micro)
                    index = torch.tensor(chosen[mine])
                    latents = means[index] * scaling
                    latents, noise = latents.to(device), noise[mine].to(device)
                    t = timesteps[mine].to(device)
                    noisy = noise_scheduler.add_noise(latents, noise, t)
                    target = noise if prediction == "epsilon" else noise_scheduler.get_velocity(
                        latents, noise, t
                    )
                    texts = [captions[i] for i in index.tolist()]
                    with accelerator.autocast():
                        if encoders:
                            embeds, added = encode(texts)
                        else:
                            with torch.no_grad():
                                embeds, added = encode(texts)
                        pred = wrapped_unet(
                            noisy.to(unet.dtype), t, encoder_hidden_states=embeds,
                            added_cond_kwargs=added, return_dict=False,
                        )[0]
                    loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
                    if not math.isfinite(loss.item()):
                        raise SpqrConfigError(
                            f"bft {name}: the loss became {loss.item()} at step {step + 1} — "
                            "lower the learning rate of this profile or budget"
                        )
                    accelerator.backward(loss / accum)
                    step_loss += loss.item() / accum
                if world > 1:
                    for param in encoder_params:
                        if param.grad is not None:
                            param.grad = accelerator.reduce(param.grad, reduction="mean")
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(step_loss)
                window.append(step_loss)
                advance(1, loss=step_loss)  # a bar with the loss and ETA; the first → last loss when done
                if (step + 1) % every == 0 or step + 1 == total:
                    log.info("bft %s: step %d/%d loss %.4f (mean of last %d) lr %.2e", name,
                             step + 1, total, sum(window) / len(window), len(window),
                             lr_scheduler.get_last_lr()[0])
                    window = []
        unet = accelerator.unwrap_model(wrapped_unet)
        for module in (unet, *encoders.values()):
            module.eval()
    seconds = time.perf_counter() - started
    log.info("bft %s: done in %.1f s, loss %.4f → %.4f", name, seconds, losses[0], losses[-1])
    return TrainedWeights(plan.profile.method, unet, encoders, losses, total, seconds,
                          resolution, prediction, family)


# ---------------------------------------------------------------- saving and loading


def save_weights(pipe: Any, trained: TrainedWeights, folder: Path) -> list[str]:
    """Write the fine-tune into ``folder``; returns the file names written."""
    import torch

    if trained.method == "lora":
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        kwargs: dict[str, Any] = {
            "unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(trained.unet)),
            "unet_lora_adapter_metadata": trained.unet.peft_config["default"].to_dict(),
        }
        for name, encoder in trained.text_encoders.items():
            kwargs[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(
                get_peft_model_state_dict(encoder)
            )
            kwargs[f"{name}_lora_adapter_metadata"] = encoder.peft_config["default"].to_dict()
        type(pipe).save_lora_weights(str(folder), weight_name=LORA_WEIGHTS, **kwargs)
        return [LORA_WEIGHTS]
    from safetensors.torch import save_file

    original = dict(pipe.unet.named_parameters())
    changed: dict[str, Any] = {}
    for name, param in trained.unet.named_parameters():
        if not param.requires_grad:
            continue
        value = param.detach().float().cpu()
        if not torch.equal(value, original[name].detach().float().cpu()):
            changed[name] = value.contiguous()
    save_file(changed, str(folder / CHANGED_WEIGHTS),
              metadata={"format": "pytest-spqr changed UNet tensors", "tensors": str(len(changed))})
    return [CHANGED_WEIGHTS]


def finetune_environment(device: str, dtype: str) -> dict[str, str]:
    """What besides the plan changes a fine-tune's weights: where it trains (device type),
    in which precision, and the versions of the libraries that train it (part of its key)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"device_type": str(device).split(":")[0], "dtype": str(dtype)}
    for package in ("torch", "diffusers", "peft"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


def load_finetuned(pipe: Any, folder: Path, record: dict[str, Any]) -> Any:
    """The aligned pipeline with a cached fine-tune applied (a new pipeline object)."""
    if record["profile"]["method"] == "lora":
        return with_lora(pipe, folder, LORA_WEIGHTS)
    return with_changed_tensors(pipe, folder / CHANGED_WEIGHTS)


def _sha256(path: Path) -> str:
    return hash_file(path, "sha256")


@dataclass
class FinetuneOutcome:
    folder: Path
    record: dict[str, Any]
    reused: bool
    """True when the weights came from the cache (no training in this run)."""


@dataclass
class FinetuneCache:
    """``<cache_dir>/finetunes/<key>/``: weights + ``bft.json``, written atomically."""

    cache_dir: Path
    trained: int = field(default=0)
    reused: int = field(default=0)

    @property
    def root(self) -> Path:
        return Path(self.cache_dir) / "finetunes"

    def lookup(self, key: str) -> FinetuneOutcome | None:
        folder = self.root / key
        try:
            record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
            ok = record.get("key") == key and all(
                _sha256(folder / name) == digest for name, digest in record["files"].items()
            )
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            return None
        return FinetuneOutcome(folder, record, reused=True) if ok else None

    def ensure(
        self,
        key: str,
        build: Callable[[Path], dict[str, Any]],
    ) -> FinetuneOutcome:
        """The entry for ``key``, building it with ``build(tmp_folder) -> record`` if absent."""
        from filelock import FileLock

        hit = self.lookup(key)
        if hit is not None:
            self.reused += 1
            return hit
        self.root.mkdir(parents=True, exist_ok=True)
        mark_cache(Path(self.cache_dir))
        with FileLock(str(self.root / f".{key}.lock")):
            hit = self.lookup(key)  # another worker may have finished it meanwhile
            if hit is not None:
                self.reused += 1
                return hit
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}."))
            try:
                record = build(tmp)
                record["key"] = key
                record["files"] = {
                    p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.name != RECORD
                }
                (tmp / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
                final = self.root / key
                if final.exists():  # a torn or corrupt entry: move it aside, then replace
                    stale = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{key}.stale."))
                    os.replace(final, stale / "old")
                    shutil.rmtree(stale, ignore_errors=True)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self.trained += 1
        return FinetuneOutcome(final, record, reused=False)


def ensure_finetuned(
    pipe: Any,
    plan: TrainingPlan,
    dataset: BenignDataset,
    *,
    key: str,
    seed: int,
    cache: FinetuneCache,
    aligned_fingerprint: str,
    benign_checked: int | None = None,
    label: str = "",
    progress: ProgressFactory = _no_progress,
) -> FinetuneOutcome:
    """The cached fine-tune for ``key``, training and storing it on a miss."""

    def build(folder: Path) -> dict[str, Any]:
        trained = train(pipe, plan, dataset, seed=seed, label=label, progress=progress)
        files = save_weights(pipe, trained, folder)
        return _record(plan, dataset, trained, files, seed, aligned_fingerprint, benign_checked)

    outcome = cache.ensure(key, build)
    if outcome.reused:
        log.info("bft %s: reusing the cached fine-tune %s", label or plan.profile.name, outcome.folder)
    return outcome


def _record(plan: TrainingPlan, dataset: BenignDataset, trained: TrainedWeights, files: list[str],
            seed: int, aligned: str, benign_checked: int | None) -> dict[str, Any]:
    import diffusers
    import peft
    import torch

    losses = trained.losses
    stride = max(1, len(losses) // 200)
    return {
        "format": FORMAT_VERSION,
        "aligned_fingerprint": aligned,
        "profile": {"name": plan.profile.name, "summary": plan.profile.summary(),
                    **plan.profile.identity()},
        "budget": {"name": plan.budget.name, "is_paper": plan.budget.is_paper,
                   "description": plan.budget.description},
        "training": asdict(plan.config),
        "steps": trained.steps,
        "resolution": trained.resolution,
        "family": trained.family,
        "prediction_type": trained.prediction_type,
        "dataset": {"name": dataset.name, "sources": list(dataset.sources),
                    "kinds": list(dataset.kinds), "pairs": len(dataset),
                    "fingerprint": dataset.fingerprint,
                    "benign_check": (f"no caption contains any of the {benign_checked} harmful "
                                     "prompts checked" if benign_checked is not None else None)},
        "seed": seed,
        "seconds": round(trained.seconds, 2),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses[::stride],
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "peft": peft.__version__},
    }
