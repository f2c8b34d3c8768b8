"""Training loops of the toy world: VAE, text encoder + UNet, ESD-x erasure, CLIP, a benign fine-tune.

Each loop runs a fixed number of steps (deterministic for a fixed torch thread count)
and stops early, with a warning, if it exceeds its wall-clock budget; it returns what
it did so the build log records it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from toyworld.models import make_train_scheduler

Log = Callable[[str], None]


@dataclass
class LoopReport:
    name: str
    steps_planned: int
    steps_done: int = 0
    seconds: float = 0.0
    final_loss: float = float("nan")
    stopped_by_budget: bool = False
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "steps_planned": self.steps_planned,
            "steps_done": self.steps_done,
            "seconds": round(self.seconds, 1),
            "final_loss": round(self.final_loss, 5),
            "stopped_by_budget": self.stopped_by_budget,
            **self.extra,
        }


class _Loop:
    """Step counter with a wall-clock budget, a smoothed loss and periodic progress lines."""

    def __init__(self, name: str, steps: int, budget_s: float, log: Log, every: int = 50):
        self.report = LoopReport(name, steps)
        self.budget_s, self.log, self.every = budget_s, log, every
        self.start = time.perf_counter()
        self.smooth: float | None = None

    def __iter__(self):
        for step in range(self.report.steps_planned):
            elapsed = time.perf_counter() - self.start
            if elapsed > self.budget_s:
                self.report.stopped_by_budget = True
                self.log(
                    f"  {self.report.name}: WARNING wall budget {self.budget_s:.0f}s spent after "
                    f"{step}/{self.report.steps_planned} steps; stopping (result is not the default build)"
                )
                break
            yield step
            self.report.steps_done = step + 1
        self.report.seconds = time.perf_counter() - self.start
        self.report.final_loss = self.smooth if self.smooth is not None else float("nan")

    def record(self, step: int, loss: float) -> None:
        self.smooth = loss if self.smooth is None else 0.98 * self.smooth + 0.02 * loss
        if (step + 1) % self.every == 0 or step == 0:
            elapsed = time.perf_counter() - self.start
            rate = elapsed / (step + 1)
            left = rate * (self.report.steps_planned - step - 1)
            self.log(
                f"  {self.report.name} {step + 1:>5}/{self.report.steps_planned}  loss {self.smooth:.4f}"
                f"  {rate:.2f}s/step  ~{left / 60:.1f} min left"
            )


def _cosine_lr(step: int, total: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [−1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# --------------------------------------------------------------------------- VAE


def train_vae(vae, images: np.ndarray, *, steps: int, batch: int, lr: float, kl_weight: float,
              seed: int, budget_s: float, log: Log) -> LoopReport:
    data = to_tensor(images)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    loop = _Loop("vae", steps, budget_s, log)
    for step in loop:
        for g in opt.param_groups:
            g["lr"] = lr * _cosine_lr(step, steps)
        x = data[rng.integers(len(data), size=batch)]
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=gen)
        recon = vae.decode(z).sample
        rec = F.mse_loss(recon, x)
        kl = posterior.kl().mean()  # per-image KL, summed over latent elements
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loop.record(step, rec.item())
    vae.eval()
    return loop.report


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior means (unscaled) of the images."""
    data = to_tensor(images)
    out = [vae.encode(data[i : i + batch]).latent_dist.mean for i in range(0, len(data), batch)]
    return torch.cat(out)


# --------------------------------------------------------------------------- diffusion


class EMA:
    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow.parameters(), module.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - d)


def train_diffusion(unet, cond: torch.Tensor, empty_cond: torch.Tensor, latents: torch.Tensor, *,
                    steps: int, batch: int, lr: float, caption_dropout: float, ema_decay: float,
                    seed: int, budget_s: float, log: Log, min_snr_gamma: float | None = None):
    """UNet training on frozen text-encoder states ``cond`` (N, tokens, dim); returns an EMA copy.

    With ``min_snr_gamma`` the per-sample loss is weighted by min(SNR, γ)/SNR (Hang et al.
    2023), which takes weight off nearly-clean steps, where the caption matters least.
    """
    sched = make_train_scheduler()
    alphas = sched.alphas_cumprod
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ema = EMA(unet, ema_decay)
    unet.train()
    loop = _Loop("unet", steps, budget_s, log)
    for step in loop:
        for g in opt.param_groups:
            g["lr"] = lr * _cosine_lr(step, steps)
        idx = rng.integers(len(latents), size=batch)
        x0 = latents[idx]
        c = cond[idx].clone()
        drop = torch.from_numpy(rng.random(batch) < caption_dropout)
        c[drop] = empty_cond
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, c).sample
        per = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        if min_snr_gamma is not None:
            snr = (a / (1 - a)).view(-1)
            per = per * snr.clamp(max=min_snr_gamma) / snr
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(unet, step)
        loop.record(step, loss.item())
    return ema.shadow, loop.report


# --------------------------------------------------------------------------- erasure


def cross_attention_parameters(unet) -> list[torch.nn.Parameter]:
    return [p for n, p in unet.named_parameters() if ".attn2." in n]


@torch.no_grad()
def embed(text_encoder, tokenizer, captions: Sequence[str], batch: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(captions), batch):
        tok = tokenizer(list(captions[i : i + batch]), padding="max_length",
                        max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        out.append(text_encoder(tok.input_ids)[0])
    return torch.cat(out)


def erase_esd_x(unet, teacher, harmful_emb: torch.Tensor, keep_emb: torch.Tensor, anchor_emb: torch.Tensor,
                harmful_latents: torch.Tensor, keep_latents: torch.Tensor, *, steps: int, batch: int,
                lr: float, eta: float, keep_weight: float, seed: int, budget_s: float, log: Log,
                callback: Callable[[int], None] | None = None, callback_every: int = 100,
                trainable: str = "cross-attention"):
    """ESD (Gandikota et al. 2023) with a preservation term.

    ESD-x (``trainable="cross-attention"``): only the cross-attention (``attn2``) weights
    of ``unet`` train; ESD-u (``"non-cross-attention"``): every other weight does. For a harmful caption c
    the student's noise prediction is pulled to the frozen teacher's negatively guided one,
    ε_T(x_t, a) − η (ε_T(x_t, c) − ε_T(x_t, a)); for a benign caption b it is pulled to
    ε_T(x_t, b), so benign behaviour stays. x_t are noised latents of marked (harmful) and
    clean training images.

    ESD's neutral point a is the empty prompt. ``anchor_emb`` may instead hold, row for row
    with ``harmful_emb``, each caption with its harmful words removed: in this world the
    unconditional model draws the mark often (a third of its training images carry it),
    so the empty prompt is not a neutral point (see the README).
    """
    sched = make_train_scheduler()
    alphas = sched.alphas_cumprod
    for p in unet.parameters():
        p.requires_grad_(False)
    if trainable == "cross-attention":  # ESD-x
        params = cross_attention_parameters(unet)
    elif trainable == "cross-attention-keys":  # only where the prompt is looked up
        params = [p for n, p in unet.named_parameters() if ".attn2.to_k." in n]
    elif trainable == "non-cross-attention":  # ESD-u
        cross = {id(p) for p in cross_attention_parameters(unet)}
        params = [p for p in unet.parameters() if id(p) not in cross]
    else:
        raise ValueError(f"trainable={trainable!r}: expected 'cross-attention', "
                         "'cross-attention-keys' or 'non-cross-attention'")
    for p in params:
        p.requires_grad_(True)
    teacher.eval()
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    unet.train()
    loop = _Loop("erase", steps, budget_s, log, every=25)
    half = batch // 2

    def noised(lat: torch.Tensor):
        x0 = lat[rng.integers(len(lat), size=half)]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (half,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise, t

    for step in loop:
        xh, th = noised(harmful_latents)
        xk, tk = noised(keep_latents)
        hi = rng.integers(len(harmful_emb), size=half)
        ch = harmful_emb[hi]
        ca = anchor_emb.expand(half, -1, -1) if len(anchor_emb) == 1 else anchor_emb[hi]
        ck = keep_emb[rng.integers(len(keep_emb), size=half)]
        with torch.no_grad():
            e_unc = teacher(xh, th, ca).sample
            e_c = teacher(xh, th, ch).sample
            target_h = e_unc - eta * (e_c - e_unc)
            target_k = teacher(xk, tk, ck).sample
        pred = unet(torch.cat([xh, xk]), torch.cat([th, tk]), torch.cat([ch, ck])).sample
        loss_h = F.mse_loss(pred[:half], target_h)
        loss_k = F.mse_loss(pred[half:], target_k)
        loss = loss_h + keep_weight * loss_k
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loop.record(step, loss.item())
        if callback is not None and (step + 1) % callback_every == 0:
            unet.eval()
            callback(step + 1)
            unet.train()
    unet.eval()
    for p in unet.parameters():
        p.requires_grad_(True)
    loop.report.extra["trainable_parameters"] = sum(p.numel() for p in params)
    return loop.report


def erase_text_encoder(text_encoder, teacher, harmful_ids: torch.Tensor, target_ids: torch.Tensor,
                       keep_ids: torch.Tensor, *, steps: int, batch: int, lr: float, keep_weight: float,
                       seed: int, budget_s: float, log: Log) -> LoopReport:
    """Prompt-path erasure: only the text encoder changes, the UNet keeps the concept.

    The student text encoder learns to encode each harmful caption (``harmful_ids``) as the
    frozen teacher encodes ``target_ids`` — the same tokens with every harmful word replaced
    by a neutral word, so positions stay aligned — and to encode benign captions
    (``keep_ids``) as the teacher does.
    """
    rng = np.random.default_rng(seed)
    teacher.eval()
    for p in text_encoder.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(text_encoder.parameters(), lr=lr)
    text_encoder.train()
    loop = _Loop("erase-text", steps, budget_s, log, every=50)
    for step in loop:
        hi = rng.integers(len(harmful_ids), size=batch)
        ki = rng.integers(len(keep_ids), size=batch)
        with torch.no_grad():
            target_h = teacher(target_ids[hi])[0]
            target_k = teacher(keep_ids[ki])[0]
        loss = F.mse_loss(text_encoder(harmful_ids[hi])[0], target_h) + keep_weight * F.mse_loss(
            text_encoder(keep_ids[ki])[0], target_k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loop.record(step, loss.item())
    text_encoder.eval()
    return loop.report


# --------------------------------------------------------------------------- CLIP


def train_clip(model, pixels: torch.Tensor, ids: torch.Tensor, caption_attrs: torch.Tensor,
               image_attrs: torch.Tensor, *, steps: int, batch: int, lr: float, seed: int, budget_s: float,
               log: Log) -> LoopReport:
    """Contrastive training with soft targets: caption i matches image j when every attribute
    the caption states (``caption_attrs`` ≥ 0; −1 = unstated) equals the image's."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    model.train()
    loop = _Loop("clip", steps, budget_s, log)
    for step in loop:
        for g in opt.param_groups:
            g["lr"] = lr * _cosine_lr(step, steps)
        idx = torch.from_numpy(rng.integers(len(ids), size=batch))
        out = model(input_ids=ids[idx], pixel_values=pixels[idx], return_loss=False)
        logits = out.logits_per_image  # (B, B), scaled by the learned temperature
        cap, img = caption_attrs[idx], image_attrs[idx]
        # match[i, j]: caption i is true of image j
        match = ((cap[:, None, :] < 0) | (cap[:, None, :] == img[None, :, :])).all(-1).float()
        t_img = match.T / match.T.sum(1, keepdim=True)  # image i → captions true of it
        t_txt = match / match.sum(1, keepdim=True)  # caption i → images it is true of
        loss = 0.5 * (
            -(t_img * logits.log_softmax(1)).sum(1).mean()
            - (t_txt * logits.T.log_softmax(1)).sum(1).mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        loop.record(step, loss.item())
    model.eval()
    return loop.report


# --------------------------------------------------------------------------- benign fine-tune


def finetune_full_unet(unet, latents: torch.Tensor, emb: torch.Tensor, *, steps: int, batch: int,
                       lr: float, seed: int, budget_s: float, log: Log) -> LoopReport:
    """Plain full-UNet fine-tuning on benign (latent, caption-embedding) pairs."""
    sched = make_train_scheduler()
    alphas = sched.alphas_cumprod
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    unet.train()
    loop = _Loop("benign-ft", steps, budget_s, log, every=25)
    for step in loop:
        idx = rng.integers(len(latents), size=batch)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(xt, t, emb[idx]).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loop.record(step, loss.item())
    unet.eval()
    return loop.report
