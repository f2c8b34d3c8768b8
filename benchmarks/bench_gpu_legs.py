"""The pieces of ``bench_gpu.py`` that touch tensors: the random pipeline and the measured legs.

Each leg loads the saved folder itself, warms up, then times the same amount of work as its
counterpart; peak GPU memory is counted from the start of the leg
(``torch.cuda.reset_peak_memory_stats``) and the leg frees what it loaded before returning.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_spqr.core.prompts import Prompt
from pytest_spqr.core.seeds import seed_for
from pytest_spqr.models.tokenizer import build_clip_tokenizer

RUN_SEED = 42
LORA_PAIRS = 24
"""Image–caption pairs of the built-in ``general`` benign set both LoRA loops train on."""
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
SUBJECTS = ("cat", "dog", "lighthouse", "bicycle", "teapot", "mountain lake", "city street",
            "sailing boat", "bowl of fruit", "red car", "old library", "forest path")
STYLES = ("photo", "watercolor painting", "pencil sketch", "oil painting")


@dataclass(frozen=True)
class Size:
    """Explicit component configs: SD 1.5's own, or a toy one that runs on a CPU."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    vocab: int
    resolution: int


_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
SD15_SIZE = Size(
    "SD 1.5-configured",
    unet={"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
          "block_out_channels": (320, 640, 1280, 1280), "down_block_types": _DOWN,
          "up_block_types": _UP, "cross_attention_dim": 768, "attention_head_dim": 8},
    vae={"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
         "block_out_channels": (128, 256, 512, 512), "sample_size": 512,
         "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4},
    text={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
          "num_attention_heads": 12, "projection_dim": 768, "hidden_act": "quick_gelu"},
    vocab=49408,
    resolution=512,
)
TINY_SIZE = Size(
    "tiny",
    unet={"sample_size": 32, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
          "block_out_channels": (32, 64), "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
          "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "cross_attention_dim": 32},
    vae={"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (32, 64),
         "sample_size": 64, "down_block_types": ("DownEncoderBlock2D",) * 2,
         "up_block_types": ("UpDecoderBlock2D",) * 2},
    text={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
          "num_attention_heads": 4, "projection_dim": 32},
    vocab=1000,
    resolution=64,
)


def all_prompts() -> list[str]:
    return [f"a {style} of a {subject}" for style in STYLES for subject in SUBJECTS]


def prompt_split(warmup: int, timed: int) -> tuple[list[str], list[str]]:
    """Distinct prompts: the first ``warmup`` warm up, the next ``timed`` are timed."""
    prompts = all_prompts()
    if warmup + timed > len(prompts):
        raise SystemExit(f"bench_gpu: --images {timed} is more than the {len(prompts) - warmup} "
                         "distinct prompts there are; use at most that")
    return prompts[:warmup], prompts[warmup:warmup + timed]


def _pipeline_class() -> Any:
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline


def build_pipeline(size: Size, out: Path, *, device: str) -> dict[str, Any]:
    """Initialise ``size`` at random (seed 0) on ``device``, save it (fp16 on CUDA) at ``out``."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    started = time.perf_counter()
    tokenizer = build_clip_tokenizer(all_prompts(), vocab_size=size.vocab, model_max_length=77)
    text_config = CLIPTextConfig(
        vocab_size=size.vocab, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **size.text)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**size.unet)
        vae = AutoencoderKL(**size.vae, scaling_factor=0.18215)
        text_encoder = CLIPTextModel(text_config)
    # SD 1.5's scheduler_config.json
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False,
                              skip_prk_steps=True, steps_offset=1)
    pipe = _pipeline_class()(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                             requires_safety_checker=False)
    if device.startswith("cuda"):
        pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    if not (out / "tokenizer" / "vocab.json").exists():  # transformers 4.x reads these two
        tokenizer.backend_tokenizer.model.save(str(out / "tokenizer"))
    params = sum(p.numel() for p in unet.parameters())
    del pipe, unet, vae, text_encoder
    _free()
    return {"unet_params": params, "flop_per_cfg_step": flop_per_cfg_step(size),
            "build_seconds": time.perf_counter() - started}


def flop_per_cfg_step(size: Size) -> float:
    """FLOP of one classifier-free-guidance step (the UNet on a batch of 2) at ``size``."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel(**size.unet)
        latent = size.resolution // 2 ** (len(size.vae["block_out_channels"]) - 1)
        sample = torch.empty(2, 4, latent, latent)
        text = torch.empty(2, 77, size.unet["cross_attention_dim"])
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            unet(sample, torch.tensor([500, 500]), encoder_hidden_states=text)
    return float(counter.get_total_flops())


def quiet() -> None:
    """No loading or saving bars from diffusers and transformers (progress lines are ours)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def _peak(device: str) -> Iterator[dict[str, float | None]]:
    """Peak GPU memory allocated inside the block (None on the CPU)."""
    import torch

    out: dict[str, float | None] = {"peak_gpu_mib": None}
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if cuda:
        torch.cuda.synchronize(device)
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _load(model: Path, device: str) -> Any:
    """The saved folder as a plain diffusers pipeline (fp16 on CUDA, float32 on CPU)."""
    import torch

    from pytest_spqr.models.loading import _components_dtype  # torch_dtype, or dtype now

    quiet()  # the project's loader turns the bars back on when it is done
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = _pipeline_class().from_pretrained(str(model), use_safetensors=True,
                                             local_files_only=True, safety_checker=None,
                                             requires_safety_checker=False,
                                             **_components_dtype(dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# ---------------------------------------------------------------- generation


def raw_leg(model: Path, out: Path, work: Any, resolution: int, device: str) -> dict[str, Any]:
    """Images/s of ``StableDiffusionPipeline.__call__`` on the plugin's prompts and seeds."""
    import torch

    warmup, timed = prompt_split(work.warmup_images, work.timed_images)
    out.mkdir(parents=True, exist_ok=True)
    with _peak(device) as peak:
        pipe = _load(model, device)

        def generate(pipe: Any, prompts: list[str]) -> None:
            for start in range(0, len(prompts), work.batch):
                chunk = prompts[start:start + work.batch]
                seeds = [seed_for(RUN_SEED, Prompt(text=p), 0) for p in chunk]
                with torch.inference_mode():
                    images = pipe(prompt=chunk, num_inference_steps=work.steps,
                                  guidance_scale=work.guidance, height=resolution,
                                  width=resolution, output_type="pil",
                                  generator=[torch.Generator("cpu").manual_seed(s) for s in seeds]).images
                for seed, image in zip(seeds, images, strict=True):
                    image.save(out / f"{seed}.png")

        first = time.perf_counter()
        generate(pipe, warmup)
        begin = time.perf_counter()
        generate(pipe, timed)
        seconds = time.perf_counter() - begin
    del pipe
    _free()
    return {"images_per_s": len(timed) / seconds, "seconds": seconds,
            "warmup_seconds": begin - first, **peak}


# ---------------------------------------------------------------- LoRA fine-tuning


def lora_spqr_leg(model: Path, work: Any, resolution: int, device: str) -> dict[str, Any]:
    """Steps/s of the project's trainer, ``lite`` profile, on the built-in general set."""
    import torch

    from pytest_spqr.core.bft import PROFILES, BftBudget, TrainingPlan
    from pytest_spqr.models.benign_data import load_scenario
    from pytest_spqr.models.finetune import train
    from pytest_spqr.models.loading import load_pipeline, resolve_model

    budget = BftBudget("bench", "bench_gpu: a few dozen steps", shared={
        "max_steps": work.lora_warmup + work.lora_steps, "batch_size": work.lora_batch,
        "resolution": resolution, "lr_warmup_steps": 0, "mixed_precision": "fp16"})
    plan = TrainingPlan.resolve(PROFILES["lite"], budget)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    ticks: list[float] = []

    @contextmanager
    def progress(total: int, desc: str) -> Iterator[Callable[..., None]]:
        yield lambda n, **postfix: ticks.append(time.perf_counter())  # once per optimizer step

    with _peak(device) as peak:
        pipe = load_pipeline(resolve_model(str(model)), device=device, dtype=dtype)
        trained = train(pipe, plan, load_scenario("general"), seed=0, progress=progress)
    del pipe, trained
    _free()
    return _steps_result(ticks, work, peak)


def _steps_result(ticks: list[float], work: Any, peak: dict[str, Any]) -> dict[str, Any]:
    seconds = ticks[-1] - ticks[work.lora_warmup - 1]
    return {"steps_per_s": work.lora_steps / seconds, "seconds": seconds, **peak}


def lora_peft_leg(model: Path, work: Any, resolution: int, device: str) -> dict[str, Any]:
    """Steps/s of a plain diffusers + peft LoRA loop with the same data, batch and size."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from pytest_spqr.models.benign_data import load_scenario, preprocess

    amp = device.startswith("cuda")
    data = load_scenario("general")
    assert len(data) == LORA_PAIRS, f"the built-in general set has {len(data)} pairs"
    ticks: list[float] = []
    with _peak(device) as peak, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe = _load(model, device)
        unet, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
        for module in (unet, vae, text_encoder):
            module.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                    init_lora_weights="gaussian", target_modules=LORA_TARGETS))
        if amp:
            cast_training_params(unet, dtype=torch.float32)
        params = [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        vae_f32 = vae.to(torch.float32)
        with torch.no_grad():
            pixels = torch.stack([preprocess(e.load(), resolution) for e in data.examples])
            latents = torch.cat([vae_f32.encode(chunk.to(device)).latent_dist.mean
                                 for chunk in pixels.split(8)]) * vae.config.scaling_factor
        ids = pipe.tokenizer(data.captions, padding="max_length", truncation=True,
                             max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
        unet.train()
        for _ in range(work.lora_warmup + work.lora_steps):
            chosen = torch.randperm(len(data))[:work.lora_batch]
            x0 = latents[chosen.to(latents.device)]
            noise = torch.randn_like(x0)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(chosen),),
                              device=device)
            noisy = noise_scheduler.add_noise(x0, noise, t)
            with torch.autocast(device_type="cuda" if amp else "cpu", dtype=torch.float16,
                                enabled=amp):
                with torch.no_grad():
                    embeds = text_encoder(ids[chosen].to(device))[0]
                pred = unet(noisy.to(unet.dtype), t, encoder_hidden_states=embeds).sample
            loss = F.mse_loss(pred.float(), noise.float())
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            ticks.append(time.perf_counter())
    del pipe, unet, vae, text_encoder, optimizer
    _free()
    return _steps_result(ticks, work, peak)
