"""A tiny LLaVA-OneVision folder (the LlavaGuard v1.2 architecture), built offline.

:func:`build_tiny_llava` saves, with ``save_pretrained``, what the LlavaGuard judge loads
from a real ``AIML-TUDA/LlavaGuard-v1.2-*-OV-hf`` folder: a
``LlavaOnevisionForConditionalGeneration`` (SigLIP vision tower, 2 layers; Qwen2 language
model, 2 layers; hidden size 32), a Qwen2-layout byte-level BPE tokenizer with the chat
and image tokens, an any-resolution image processor at 32² and the chat template. It
loads with ``local_files_only=True`` and needs neither a network nor torchvision.

Two kinds of model:

* ``answer=None`` (default): random weights, as diffusers' tiny test models. Greedy
  decoding produces garbage, which is what a judge must report as unparseable.
* ``answer="..."``: a *scripted* model that answers every image with exactly that text.
  The answer becomes one added token, every transformer block is made a no-op (zero
  output projections), and the embeddings and LM head are set so that any token is
  followed by the answer and the answer by ``<|im_end|>``. The real ``generate()``,
  processor, chat template and decoding still run end to end; only the weights are
  rigged. Use it to exercise the parse-and-verdict path, not as a judge.

The tokenizer's merges are learned by the ``tokenizers`` BPE trainer on the LlavaGuard
policy (so the ~5,500-character prompt is about 1,000 tokens). As in
:mod:`pytest_spqr.models.tokenizer`, the 256 byte symbols are declared as the trainer's
special tokens, which gives them fixed ids and makes the learned merges a function of
the corpus alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pytest_spqr.models.tokenizer import byte_symbols

__all__ = ["TINY_LLAVA_IMAGE_SIZE", "TINY_LLAVA_SPECIAL_TOKENS", "build_tiny_llava"]

TINY_LLAVA_IMAGE_SIZE = 32
"""Pixels per side of one image tile (patch 8 → 4 × 4 = 16 image tokens per tile)."""

TINY_LLAVA_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<video>",
)
"""Qwen2 / LLaVA-OneVision special tokens, in id order after the learned vocabulary."""

_VOCAB_SIZE = 1000
_PATCH = 8
_HIDDEN = 32


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block from ``torch.manual_seed(seed)`` and restore the global RNG after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _default_corpus() -> list[str]:
    from pytest_spqr.models.judges.llavaguard import LLAVAGUARD_CATEGORIES, LLAVAGUARD_POLICY

    answers = [
        json.dumps({"rating": rating, "category": f"{code}: {name}", "rationale": "The image"})
        for code, name in LLAVAGUARD_CATEGORIES.items()
        for rating in ("Safe", "Unsafe")
    ]
    return [LLAVAGUARD_POLICY, *answers, "user assistant system"]


def _learn_merges(texts: list[str], pre_tokenizer: Any, normalizer: Any, n_merges: int) -> list:
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    symbols = list(byte_symbols())
    learner = Tokenizer(BPE())
    learner.normalizer = normalizer
    learner.pre_tokenizer = pre_tokenizer
    trainer = BpeTrainer(
        vocab_size=len(symbols) + n_merges,
        min_frequency=0,
        show_progress=False,
        special_tokens=symbols,  # fixed ids for the byte symbols: deterministic merges
        initial_alphabet=symbols,
    )
    learner.train_from_iterator(texts, trainer=trainer, length=len(texts))
    merges = []
    seen = set()
    for item in json.loads(learner.to_str())["model"]["merges"]:
        pair = tuple(item) if isinstance(item, list) else tuple(item.split(" ", 1))
        if pair not in seen:
            seen.add(pair)
            merges.append(pair)
    return merges


def _tokenizer(corpus: Iterable[str] | None, answer: str | None) -> Any:
    """A Qwen2-layout byte-level BPE tokenizer (``Qwen2Tokenizer``) learned on ``corpus``."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    texts = [str(t) for t in (_default_corpus() if corpus is None else corpus)]
    reference = Qwen2Tokenizer().backend_tokenizer  # Qwen2's own normalizer and pre-tokenizer
    n_merges = _VOCAB_SIZE - 256 - len(TINY_LLAVA_SPECIAL_TOKENS)
    merges = _learn_merges(texts, reference.pre_tokenizer, reference.normalizer, n_merges)
    vocab: dict[str, int] = {s: i for i, s in enumerate(byte_symbols())}
    kept = []
    for left, right in merges:
        merged = left + right
        if merged not in vocab:
            vocab[merged] = len(vocab)
        kept.append((left, right))
    for token in TINY_LLAVA_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=kept,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in TINY_LLAVA_SPECIAL_TOKENS],
        special_tokens=True,
    )
    if answer is not None:
        tokenizer.add_tokens([AddedToken(answer, special=False, normalized=False)])
    return tokenizer


def _pinpoints() -> list[list[int]]:
    """Any-resolution grids: one tile, two side by side or stacked, or 2 × 2."""
    size = TINY_LLAVA_IMAGE_SIZE
    return [[size, size], [size, 2 * size], [2 * size, size], [2 * size, 2 * size]]


def _image_processor() -> Any:
    import transformers

    size = TINY_LLAVA_IMAGE_SIZE
    cls = (
        getattr(transformers, "LlavaOnevisionImageProcessorPil", None)
        or transformers.LlavaOnevisionImageProcessor
    )
    return cls(
        size={"height": size, "width": size},
        image_grid_pinpoints=_pinpoints(),
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _config(tokenizer: Any) -> Any:
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in TINY_LLAVA_SPECIAL_TOKENS}
    size = TINY_LLAVA_IMAGE_SIZE
    vision = SiglipVisionConfig(
        hidden_size=_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=size,
        patch_size=_PATCH,
        vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        image_grid_pinpoints=_pinpoints(),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )


def _script(model: Any, answer_id: int, end_id: int) -> None:
    """Rig the weights so that greedy decoding emits ``answer_id`` then ``end_id``."""
    language = model.model.language_model
    with torch.no_grad():
        for layer in language.layers:
            layer.self_attn.o_proj.weight.zero_()  # blocks add nothing: the residual stream
            layer.mlp.down_proj.weight.zero_()  # at the last position is its token's embedding
        embed = language.embed_tokens.weight
        embed[:, :2] = 0.0
        embed[:, 1] = 1.0  # every token points to "answer next" ...
        embed[answer_id] = 0.0
        embed[answer_id, 0] = 1.0  # ... except the answer, which points to "end next"
        head = model.lm_head.weight
        head[:, :2] = 0.0
        head[answer_id, 1] = 100.0
        head[end_id, 0] = 100.0


def build_tiny_llava(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    answer: str | None = None,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Save a tiny LLaVA-OneVision model, processor and chat template at ``path``.

    ``answer`` makes a scripted model that answers every image with that text (see the
    module docstring); without it the weights are random. Weights depend only on
    ``seed`` and the tokenizer; the tokenizer on ``corpus`` (default: the LlavaGuard
    policy and example assessments) and ``answer``. About 0.5 MB.
    """
    from transformers import GenerationConfig, LlavaOnevisionForConditionalGeneration
    from transformers.utils import logging as transformers_logging

    from pytest_spqr.models.judges.llavaguard import (
        ONEVISION_CHAT_TEMPLATE,
        image_only_processor_class,
    )

    out = Path(path)
    tokenizer = _tokenizer(corpus, answer)
    config = _config(tokenizer)
    with _seeded(seed):
        model = LlavaOnevisionForConditionalGeneration(config).eval()
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if answer is not None:
        _script(model, tokenizer.convert_tokens_to_ids(answer), end_id)
    model.generation_config = GenerationConfig(eos_token_id=end_id, pad_token_id=pad_id)
    transformers_logging.disable_progress_bar()  # "Writing model shards" would land in reports
    try:
        model.save_pretrained(out, safe_serialization=True)
    finally:
        transformers_logging.enable_progress_bar()
    processor = image_only_processor_class()(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        num_image_tokens=(TINY_LLAVA_IMAGE_SIZE // _PATCH) ** 2,
        vision_feature_select_strategy="full",
        chat_template=ONEVISION_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    _name_processor_as_upstream(out)
    return out


def _name_processor_as_upstream(folder: Path) -> None:
    """Record the processor as ``LlavaOnevisionProcessor``, as a real -hf folder does."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if "processor_class" in data:
            data["processor_class"] = "LlavaOnevisionProcessor"
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
