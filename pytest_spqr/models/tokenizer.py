"""A CLIP-layout byte-level BPE tokenizer learned offline on a small corpus.

Real CLIP tokenizers come from a hub; tiny test models need one built on the spot.
:func:`build_clip_tokenizer` learns merges with the ``tokenizers`` library's
``BpeTrainer`` using the very normalizer and pre-tokenizer of
:class:`transformers.CLIPTokenizer`, then lays the vocabulary out as CLIP does::

    ids 0..255      the 256 byte symbols, in GPT-2 ``bytes_to_unicode`` order
    ids 256..511    the same symbols followed by ``</w>`` (end of word)
    ids 512..       one token per learned merge, in the order learned
    last two        <|startoftext|>, <|endoftext|>

Determinism: the trainer gives the end-of-word symbols (``"a</w>"``) ids in the
iteration order of a randomly seeded hash map, and breaks ties between equally
frequent pairs by id — so a plain ``BpeTrainer(end_of_word_suffix="</w>")`` can learn
different merges in different processes. Declaring the 256 ``</w>`` symbols as the
trainer's special tokens gives them fixed ids first, which makes the learned merges
a function of the corpus alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache

from tokenizers import Tokenizer
from tokenizers.models import BPE
from tokenizers.pre_tokenizers import ByteLevel
from tokenizers.trainers import BpeTrainer
from transformers import CLIPTokenizer

__all__ = ["BOS_TOKEN", "EOS_TOKEN", "END_OF_WORD", "build_clip_tokenizer", "byte_symbols"]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
_BASE_SIZE = 2 * 256 + 2  # byte symbols, the same with </w>, BOS and EOS


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """The 256 printable stand-ins for bytes, in GPT-2/CLIP ``bytes_to_unicode`` order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return tuple(chr(c) for c in codes)


def build_clip_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1000, model_max_length: int = 77
) -> CLIPTokenizer:
    """Learn a CLIP-layout BPE tokenizer on ``corpus`` (deterministic).

    ``vocab_size`` counts every token (512 byte symbols, the merges, BOS and EOS) and
    is an upper bound: learning stops early once every word of the corpus is a single
    token, so with a large enough ``vocab_size`` each corpus word (lower-cased, as
    CLIP normalises) encodes as one ``word</w>`` token. When the budget is smaller,
    the most frequent words are merged whole first.

    The result saves with ``save_pretrained`` and reloads with
    ``CLIPTokenizer.from_pretrained(path, local_files_only=True)``.
    """
    if vocab_size < _BASE_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a CLIP-layout tokenizer needs at least "
            f"{_BASE_SIZE} tokens (2 × 256 byte symbols + BOS + EOS)"
        )
    if model_max_length < 2:
        raise ValueError(f"model_max_length={model_max_length} must leave room for BOS and EOS")
    texts = [str(t) for t in corpus]

    symbols = byte_symbols()
    eow_symbols = [s + END_OF_WORD for s in symbols]
    merges = _learn_merges(texts, symbols, eow_symbols, n_tokens=vocab_size - _BASE_SIZE)

    vocab: dict[str, int] = {}
    for token in (*symbols, *eow_symbols):
        vocab[token] = len(vocab)
    kept: list[tuple[str, str]] = []
    for left, right in merges:
        merged = left + right
        if merged not in vocab:
            if len(vocab) >= vocab_size - 2:
                break
            vocab[merged] = len(vocab)
        kept.append((left, right))
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)

    return CLIPTokenizer(vocab=vocab, merges=kept, model_max_length=model_max_length)


def _learn_merges(
    texts: list[str], symbols: tuple[str, ...], eow_symbols: list[str], n_tokens: int
) -> list[tuple[str, str]]:
    """Merges learned by ``BpeTrainer``, in rank order, that add at most ``n_tokens`` tokens."""
    if n_tokens <= 0 or not texts:
        return []
    # Normalise and pre-tokenise exactly as CLIPTokenizer does at encoding time.
    reference = CLIPTokenizer(vocab=None, merges=None).backend_tokenizer
    learner = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD))
    learner.normalizer = reference.normalizer
    learner.pre_tokenizer = reference.pre_tokenizer
    trainer = BpeTrainer(
        # the trainer counts its special tokens and alphabet in vocab_size
        vocab_size=len(symbols) + len(eow_symbols) + n_tokens,
        min_frequency=0,
        show_progress=False,
        special_tokens=eow_symbols,  # fixed ids for "x</w>": see the module docstring
        initial_alphabet=list(ByteLevel.alphabet()),
        end_of_word_suffix=END_OF_WORD,
        continuing_subword_prefix="",
    )
    learner.train_from_iterator(texts, trainer=trainer, length=len(texts))
    raw = json.loads(learner.to_str())["model"]["merges"]
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for item in raw:
        pair = (item[0], item[1]) if isinstance(item, list) else tuple(item.split(" ", 1))
        if pair not in seen:  # a pair learned twice adds nothing the first did not
            seen.add(pair)
            merges.append(pair)
    return merges
