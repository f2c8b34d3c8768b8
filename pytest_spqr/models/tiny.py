"""Tiny, randomly initialised but real diffusion and CLIP components, built offline.

They follow diffusers' own test recipe (``get_dummy_components`` in
``tests/pipelines/stable_diffusion``): explicit small configs, each component
initialised right after ``torch.manual_seed(seed)``, so the same seed gives the same
weights bit for bit. The global torch RNG is left as it was.

Three layouts, as in the paper's appendix D: :func:`build_tiny_sd` (SD 1.x, epsilon
prediction, one CLIP text encoder), :func:`build_tiny_sd2` (SD 2.x, v-prediction,
linear projections) and :func:`build_tiny_sdxl` (two text encoders, the second
projected, and added time ids). They share the component helpers below.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pytest_spqr.models.tokenizer import build_clip_tokenizer

__all__ = [
    "DEFAULT_CORPUS",
    "TINY_CLIP_IMAGE_SIZE",
    "TINY_SD_IMAGE_SIZE",
    "build_tiny_clip",
    "build_tiny_sd",
    "build_tiny_sd2",
    "build_tiny_sdxl",
]

TINY_SD_IMAGE_SIZE = 64
"""Pixels per side of a tiny SD image: 32² latents, decoded ×2 by the two-block VAE."""

TINY_CLIP_IMAGE_SIZE = 32
"""Pixels per side that the tiny CLIP vision tower sees (patch 4 → 8 × 8 patches)."""

_TOKENIZER_VOCAB = 1000
_MAX_LENGTH = 77

DEFAULT_CORPUS: tuple[str, ...] = (
    "a photo of a cat",
    "a photo of a dog",
    "a photo of a person standing on the beach",
    "a portrait of a woman, oil painting",
    "a portrait of a man in a suit",
    "a red car parked in a city street at night",
    "a house with a garden and a tree",
    "a mountain landscape with a river under a blue sky",
    "a bowl of fruit on a wooden table",
    "a bird flying over the sea",
    "a nude woman",
    "a naked man",
    "a violent scene with blood",
    "a cartoon drawing of a smiling child",
    "a watercolor painting of flowers",
)
"""Captions the tiny tokenizers learn from when no corpus is given."""


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block from ``torch.manual_seed(seed)`` and restore the global RNG after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tokenizer(corpus: Iterable[str] | None) -> Any:
    return build_clip_tokenizer(
        DEFAULT_CORPUS if corpus is None else corpus,
        vocab_size=_TOKENIZER_VOCAB,
        model_max_length=_MAX_LENGTH,
    )


def _text_config_kwargs(tokenizer: Any, *, hidden_size: int, layers: int) -> dict[str, Any]:
    """Settings shared by the tiny SD text encoder and the tiny CLIP text tower."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 37,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "max_position_embeddings": tokenizer.model_max_length,
        "layer_norm_eps": 1e-5,
        # must match the tokenizer: CLIP pools the text at the first EOS
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _text_encoder(
    tokenizer: Any, seed: int, *, hidden_size: int = 32, projection: bool = False
) -> Any:
    """A 5-layer CLIP text encoder (SDXL's second encoder wants ``projection=True``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        **_text_config_kwargs(tokenizer, hidden_size=hidden_size, layers=5),
        projection_dim=hidden_size,
    )
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with _seeded(seed):
        return cls(config).eval()


def _unet(seed: int, *, cross_attention_dim: int = 32, **overrides: Any) -> Any:
    from diffusers import UNet2DConditionModel

    config: dict[str, Any] = {
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "sample_size": TINY_SD_IMAGE_SIZE // 2,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": cross_attention_dim,
        "norm_num_groups": 32,
    }
    config.update(overrides)
    with _seeded(seed):
        return UNet2DConditionModel(**config).eval()


def _vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

    with _seeded(seed):
        return AutoencoderKL(
            block_out_channels=(32, 64),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            sample_size=TINY_SD_IMAGE_SIZE,
        ).eval()


def _scheduler(prediction_type: str = "epsilon") -> Any:
    """DDIM configured as SD 1.5 ships it (scaled-linear betas, leading spacing, offset 1)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )


def build_tiny_sd(
    path: str | os.PathLike[str], *, seed: int = 0, corpus: Iterable[str] | None = None
) -> Path:
    """Save a tiny Stable Diffusion 1.x pipeline folder at ``path`` and return it.

    ~2 M parameters (a few MB of safetensors), 32² latents → 64² images, DDIM
    scheduler, no safety checker. Load it with
    ``DiffusionPipeline.from_pretrained(path, use_safetensors=True)``. The tokenizer
    is learned on ``corpus`` (default :data:`DEFAULT_CORPUS`); weights depend only
    on ``seed`` and the tokenizer's size.
    """
    from diffusers import StableDiffusionPipeline

    out = Path(path)
    tokenizer = _tokenizer(corpus)
    pipe = StableDiffusionPipeline(
        vae=_vae(seed),
        text_encoder=_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        unet=_unet(seed),
        scheduler=_scheduler("epsilon"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    _write_slow_tokenizer_files(tokenizer, out / "tokenizer")
    return out


def build_tiny_clip(
    path: str | os.PathLike[str], *, seed: int = 0, corpus: Iterable[str] | None = None
) -> Path:
    """Save a tiny ``CLIPModel`` and its processor at ``path`` and return it.

    Hidden size 32, 2 layers per tower, 32² images in 4² patches, projection 32.
    Load with ``CLIPModel.from_pretrained(path, local_files_only=True,
    use_safetensors=True)`` and ``CLIPProcessor.from_pretrained(path,
    local_files_only=True)`` — no torchvision needed.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPVisionConfig

    out = Path(path)
    tokenizer = _tokenizer(corpus)
    config = CLIPConfig(
        text_config=_text_config_kwargs(tokenizer, hidden_size=32, layers=2),
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=TINY_CLIP_IMAGE_SIZE,
            patch_size=4,
            num_channels=3,
        ).to_dict(),
        projection_dim=32,
    )
    with _seeded(seed):
        model = CLIPModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tokenizer).save_pretrained(out)
    _write_slow_tokenizer_files(tokenizer, out)
    return out


def _clip_image_processor() -> Any:
    """CLIP's image preprocessing at the tiny size, built without torchvision.

    transformers 5 splits CLIP's image processor into a torchvision backend and a PIL
    one; the PIL one is used to build. Both save as ``CLIPImageProcessor``, so loading
    picks the torchvision backend where it works and the PIL one elsewhere.
    """
    import transformers

    size = TINY_CLIP_IMAGE_SIZE
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def _write_slow_tokenizer_files(tokenizer: Any, folder: Path) -> None:
    """Also write ``vocab.json`` + ``merges.txt`` so transformers 4.x can load the folder.

    transformers 5 saves only ``tokenizer.json``; the 4.x ``CLIPTokenizer`` (slow) needs
    the two classic files.
    """
    if not (folder / "vocab.json").exists():
        tokenizer.backend_tokenizer.model.save(str(folder))


def build_tiny_sd2(
    path: str | os.PathLike[str], *, seed: int = 0, corpus: Iterable[str] | None = None
) -> Path:
    """Save a tiny Stable Diffusion 2.x-style pipeline folder at ``path`` and return it.

    As :func:`build_tiny_sd`, but shaped like SD 2.x: a **v-prediction** scheduler, linear
    projections in the transformer blocks and per-level attention head sizes. Same
    32² latents → 64² images; ``StableDiffusionPipeline`` loads it.
    """
    from diffusers import StableDiffusionPipeline

    out = Path(path)
    tokenizer = _tokenizer(corpus)
    pipe = StableDiffusionPipeline(
        vae=_vae(seed),
        text_encoder=_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        unet=_unet(seed, attention_head_dim=(2, 4), use_linear_projection=True),
        scheduler=_scheduler("v_prediction"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    _write_slow_tokenizer_files(tokenizer, out / "tokenizer")
    return out


_SDXL_TIME_EMBED_DIM = 8


def build_tiny_sdxl(
    path: str | os.PathLike[str], *, seed: int = 0, corpus: Iterable[str] | None = None
) -> Path:
    """Save a tiny SDXL-style pipeline folder at ``path`` and return it.

    Two text encoders (hidden 32 each, the second with a projection whose pooled output
    conditions the UNet), a UNet with ``addition_embed_type="text_time"`` (the six
    added time ids), cross-attention dim 64 = both encoders concatenated, an Euler
    scheduler; 32² latents → 64² images. ``StableDiffusionXLPipeline`` loads it.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    out = Path(path)
    tokenizer = _tokenizer(corpus)
    hidden = 32
    unet = _unet(
        seed,
        cross_attention_dim=2 * hidden,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=_SDXL_TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * _SDXL_TIME_EMBED_DIM + hidden,
    )
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(seed),
        text_encoder=_text_encoder(tokenizer, seed, hidden_size=hidden),
        text_encoder_2=_text_encoder(tokenizer, seed + 1, hidden_size=hidden, projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        _write_slow_tokenizer_files(tokenizer, out / name)
    return out
