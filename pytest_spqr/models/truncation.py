"""Prompts longer than the text encoder's window: counted before any image is made.

A diffusers pipeline cuts every prompt to its tokenizer's ``model_max_length`` (77 tokens
for CLIP) and only logs it, so a long I2P prompt is silently judged on its first 77 tokens.
This module counts, per prompt set and per tokenizer of the pipeline, how many prompts are
cut and to how many tokens, for the run header and the run record.

The tokenizers are read alone from the model folder (``tokenizer/``, ``tokenizer_2/``… as
``model_index.json`` lists them) with the ``tokenizers`` library: no pipeline, no torch, so
a warm run that loads no model still says it. A folder with ``tokenizer.json`` is read as
is; one with only CLIP's ``vocab.json`` + ``merges.txt`` (SD 1.5's layout) is rebuilt as
transformers' CLIP converter does. A tokenizer in neither form (a T5 ``spiece.model`` alone),
or one that does not read, is not counted. Only the first ``--spqr-model``'s tokenizers are
read: models compared in one run share their text encoders as a rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_UNBOUNDED = 10**6
"""A ``model_max_length`` above this is transformers' "no limit" placeholder (1e30)."""


@dataclass(frozen=True)
class Truncation:
    """How many prompts of one set one tokenizer cuts, and to how many tokens."""

    tokenizer: str
    """The pipeline component: ``tokenizer``, ``tokenizer_2``…"""
    max_tokens: int
    prompt_set: str
    """``harmful`` or ``benign``."""
    cut: int
    total: int
    longest: int
    """Tokens of the longest prompt, BOS and EOS included."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tokenizer_folders(folder: Path) -> list[tuple[str, Path]]:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    names = sorted(k for k, v in index.items() if k.startswith("tokenizer")
                   and isinstance(v, list) and v and v[0] is not None)
    return [(name, folder / name) for name in names if (folder / name).is_dir()]


def _max_length(sub: Path) -> int | None:
    try:
        config = json.loads((sub / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("model_max_length")
    return int(value) if isinstance(value, (int, float)) and 0 < value < _UNBOUNDED else None


def _counter(sub: Path) -> Callable[[str], int] | None:
    """A function giving a prompt's token count (BOS/EOS included), or None."""
    from tokenizers import Tokenizer

    if (sub / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(sub / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return lambda text: len(tokenizer.encode(text).ids)
    if (sub / "vocab.json").is_file() and (sub / "merges.txt").is_file():
        clip = _clip_from_vocab(sub)
        return lambda text: len(clip.encode(text).ids) + 2  # + <|startoftext|>, <|endoftext|>
    return None


def _clip_from_vocab(sub: Path) -> Any:
    """CLIP's BPE from ``vocab.json``/``merges.txt``, normalised and split as transformers'
    ``CLIPConverter`` sets it up (special tokens left to the caller)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    bpe = BPE.from_file(str(sub / "vocab.json"), str(sub / "merges.txt"), dropout=None,
                        continuing_subword_prefix="", end_of_word_suffix="</w>",
                        fuse_unk=False, unk_token="<|endoftext|>")
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    return tokenizer


def tokenizer_folder(source: Any) -> Path | None:
    """The pipeline folder whose tokenizers a model uses: its own, or for a single checkpoint
    its ``--spqr-model-config`` folder (a local one, or a hub id in the local cache)."""
    if source.folder is not None:
        return Path(source.folder)
    config = getattr(source, "config", None)
    if not config:
        return None
    if Path(config).expanduser().is_dir():
        return Path(config).expanduser()
    from pytest_spqr.models.loading import hub_folder

    return hub_folder(str(config))


def prompt_truncation(folder: Path | None,
                      prompt_sets: Mapping[str, Sequence[str]]) -> list[Truncation]:
    """Per tokenizer of the pipeline in ``folder`` and per prompt set, how many prompts it cuts
    (an empty list when the folder has no readable tokenizer)."""
    if folder is None:
        return []
    found = []
    for name, sub in _tokenizer_folders(Path(folder)):
        window = _max_length(sub)
        try:
            count = _counter(sub) if window else None
        except Exception:  # an unreadable tokenizer is reported when the pipeline loads
            count = None
        if window is None or count is None:
            continue
        for set_name, texts in prompt_sets.items():
            lengths = [count(text) for text in texts]
            found.append(Truncation(name, window, set_name, sum(n > window for n in lengths),
                                    len(lengths), max(lengths, default=0)))
    return found


def truncation_note(found: Sequence[Truncation]) -> str | None:
    """One header line when any prompt is cut, else None."""
    if not any(t.cut for t in found):
        return None
    parts = []
    for t in found:
        if t.cut:
            parts.append(f"{t.cut} of {t.total} {t.prompt_set} prompts to {t.max_tokens} tokens "
                         f"({t.tokenizer}; longest {t.longest})")
        else:
            parts.append(f"0 of {t.total} {t.prompt_set}" + (f" ({t.tokenizer})" if len(
                {x.tokenizer for x in found}) > 1 else ""))
    return ("prompts longer than the text encoder's window are cut: " + ", ".join(parts)
            + " (the pipeline ignores the rest of each)")
