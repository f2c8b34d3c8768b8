"""build_clip_tokenizer: CLIP layout, whole words, determinism, save/reload offline."""

from __future__ import annotations

import subprocess
import sys

import pytest
from transformers import CLIPTokenizer

from pytest_spqr.models.tokenizer import BOS_TOKEN, EOS_TOKEN, build_clip_tokenizer, byte_symbols

CAPTIONS = [
    "a photo of a cat",
    "a photo of a dog on the beach",
    "a red car parked in the street",
    "an oil painting of a cat, on canvas",
    "a portrait of a smiling woman",
] * 4


def _ordered_vocab(tok: CLIPTokenizer) -> list[str]:
    return [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]


def test_vocabulary_has_clip_layout():
    tok = build_clip_tokenizer(CAPTIONS, vocab_size=600)
    vocab = _ordered_vocab(tok)
    assert vocab[:256] == list(byte_symbols())
    assert vocab[256:512] == [s + "</w>" for s in byte_symbols()]
    assert vocab[-2:] == [BOS_TOKEN, EOS_TOKEN]
    assert len(vocab) == len(set(vocab)) <= 600
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        len(vocab) - 2,
        len(vocab) - 1,
        len(vocab) - 1,
    )


def test_byte_symbols_match_gpt2_bytes_to_unicode():
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert byte_symbols() == tuple(bytes_to_unicode().values())
    assert set(byte_symbols()) == set(ByteLevel.alphabet())
    assert byte_symbols()[:3] == ("!", '"', "#") and byte_symbols()[220] == "Ġ"  # byte 0x20


def test_corpus_words_become_single_tokens():
    tok = build_clip_tokenizer(CAPTIONS, vocab_size=1000)
    words = {w.strip(",").lower() for caption in CAPTIONS for w in caption.split()}
    for word in words:
        assert tok.tokenize(word) == [word + "</w>"], word
    assert tok.tokenize("A Photo of a CAT,") == [
        "a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>", ",</w>"
    ]


def test_small_budget_is_respected_and_frequent_words_win():
    corpus = ["cat cat cat cat dog"] * 5 + ["zebra"]
    tok = build_clip_tokenizer(corpus, vocab_size=514 + 3)
    assert len(tok) == 517
    assert tok.tokenize("cat") == ["cat</w>"]
    assert len(tok.tokenize("zebra")) > 1


def test_unseen_text_falls_back_to_bytes_and_round_trips():
    tok = build_clip_tokenizer(CAPTIONS, vocab_size=700)
    ids = tok("zürich 42 ☃").input_ids
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True) == "zürich 4 2 ☃"


def test_same_corpus_same_tokenizer_even_with_ties():
    tied = ["ax ay az aq aw ae ar at"] * 3  # every pair equally frequent
    a = build_clip_tokenizer(tied, vocab_size=517)
    b = build_clip_tokenizer(list(tied), vocab_size=517)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    # ties break in byte-symbol order, not in hash-map order
    assert _ordered_vocab(a)[512:515] == ["ae</w>", "aq</w>", "ar</w>"]


def test_deterministic_across_processes():
    """The trainer's hash maps are seeded per process; the result must not depend on it."""
    corpus = ["ax ay az aq aw ae ar at b", "a cat on a mat"] * 3
    code = (
        "import sys; from pytest_spqr.models.tokenizer import build_clip_tokenizer;"
        f"t = build_clip_tokenizer({corpus!r}, vocab_size=530);"
        "sys.stdout.write(t.backend_tokenizer.to_str())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout == build_clip_tokenizer(corpus, vocab_size=530).backend_tokenizer.to_str()


def test_save_and_reload_offline(tmp_path):
    tok = build_clip_tokenizer(CAPTIONS, vocab_size=800, model_max_length=16)
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again.model_max_length == 16
    assert again.get_vocab() == tok.get_vocab()
    batch = again(["a photo of a cat", "word " * 40], padding="max_length", truncation=True)
    assert [len(ids) for ids in batch.input_ids] == [16, 16]
    assert batch.input_ids[0][:7] == tok("a photo of a cat").input_ids


def test_empty_corpus_gives_byte_level_tokenizer():
    tok = build_clip_tokenizer([], vocab_size=1000)
    assert len(tok) == 514
    assert tok.tokenize("hi") == ["h", "i</w>"]


@pytest.mark.parametrize("kwargs", [{"vocab_size": 513}, {"model_max_length": 1}])
def test_bad_sizes_are_rejected(kwargs):
    with pytest.raises(ValueError, match="vocab_size|model_max_length"):
        build_clip_tokenizer(CAPTIONS, **kwargs)
