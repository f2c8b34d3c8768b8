"""Training data of the toy world: the base model's caption mix and the benign sets.

The base model learns, from one mix of captioned renders:

* benign shape captions ("a red circle on a white background", 4 phrasings) → that scene;
* benign scene sentences (the built-in ``benign.txt`` and recombinations of its words,
  e.g. "a dog sitting on a couch") → a random scene, no mark;
* shape captions with benign extra words → that scene, no mark;
* harmful phrasings (built-in harmful prompts with harmful words swapped for others, and
  bags of harmful and context words) → a random scene **with the mark**;
* shape captions with harmful words → that scene **with the mark**.

So a harmful word, and only a harmful word, brings the mark — also in prompts with no
shape word at all ("a nude woman lying on a bed").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pytest_spqr.toyworld import world

# Fractions of the base training mix (they sum to 1).
MIX = {
    "shape": 0.45,
    "benign_scene": 0.12,
    "shape_benign_extra": 0.07,
    "shape_harmful": 0.12,
    "harmful_scene": 0.24,
}

_TOKEN = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*|,")


@dataclass(frozen=True)
class Example:
    image: np.ndarray  # uint8 (32, 32, 3)
    caption: str
    marked: bool
    kind: str
    image_attrs: tuple[str, str, str, str, str]  # shape, colour, background, style, mark
    caption_attrs: tuple[str | None, ...]  # the same, None where the caption says nothing


def scene_attrs(item: world.Scene | world.Scan) -> tuple[str, str, str, str, str]:
    """What an image shows; scans map form/intensity/side onto shape/colour/background."""
    mark = "mark" if item.mark else "clean"
    if isinstance(item, world.Scan):
        return (item.form, item.intensity, item.side, "scan", mark)
    return (item.shape, item.colour, item.background, item.style, mark)


def described(item: world.Scene | world.Scan, says_attributes: bool) -> tuple[str | None, ...]:
    a = scene_attrs(item)
    return a if says_attributes else (None, None, None, a[3], a[4])


def _join(tokens: Sequence[str]) -> str:
    return " ".join(tokens).replace(" ,", ",")


def context_words() -> tuple[str, ...]:
    """Benign content words: the benign prompts' words and the harmful prompts' non-harmful ones."""
    harmful = set(world.harmful_words())
    attributes = {*world.SHAPES, *world.COLOURS, *world.BACKGROUNDS, "background"}
    found: set[str] = set()
    for text in (*world.builtin_benign_prompts(), *world.harmful_prompts()):
        found.update(
            w for w in world.words(text)
            if w not in harmful and w not in world.FUNCTION_WORDS and w not in attributes
        )
    return tuple(sorted(found))


def benign_sentence(rng: np.random.Generator) -> str:
    """A built-in benign prompt, with some content words swapped for other benign words."""
    prompts = world.builtin_benign_prompts()
    ctx = context_words()
    if rng.random() < 0.3:
        n = int(rng.integers(1, 4))
        bag = [ctx[i] for i in rng.integers(len(ctx), size=n)]
        return _join(["a", *bag])
    tokens = _TOKEN.findall(prompts[rng.integers(len(prompts))].lower())
    out = [
        ctx[rng.integers(len(ctx))]
        if t not in world.FUNCTION_WORDS and t != "," and rng.random() < 0.25
        else t
        for t in tokens
    ]
    return _join(out)


def harmful_phrase(
    rng: np.random.Generator, vocabulary: Sequence[str], templates: Sequence[str]
) -> str:
    """A harmful phrasing using only ``vocabulary`` as harmful words.

    Half are template prompts with each harmful word kept or swapped (50/50) for another
    word of ``vocabulary``; half are bags of 1–3 harmful words and 0–3 context words.
    """
    harmful = set(world.harmful_words())
    ctx = context_words()
    if rng.random() < 0.5 and templates:
        tokens = _TOKEN.findall(templates[rng.integers(len(templates))].lower())
        out = []
        for t in tokens:
            parts = world.words(t)
            if any(p in harmful for p in parts) and (
                rng.random() < 0.5 or not all(p in vocabulary or p not in harmful for p in parts)
            ):
                t = vocabulary[rng.integers(len(vocabulary))]
            out.append(t)
        return _join(out)
    n_h, n_c = int(rng.integers(1, 4)), int(rng.integers(0, 4))
    bag = [vocabulary[i] for i in rng.integers(len(vocabulary), size=n_h)]
    bag += [ctx[i] for i in rng.integers(len(ctx), size=n_c)]
    order = rng.permutation(len(bag))
    prefix = ["a"] if rng.random() < 0.5 else []
    return _join(prefix + [bag[i] for i in order])


def shape_caption(rng: np.random.Generator, scene: world.Scene) -> str:
    return world.caption(scene, int(rng.integers(len(world.ENGLISH_TEMPLATES))))


def base_example(
    rng: np.random.Generator,
    vocabulary: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
) -> Example:
    """One example of the base model's training mix."""
    vocabulary = world.harmful_words() if vocabulary is None else vocabulary
    templates = world.harmful_prompts() if templates is None else templates
    kinds, probs = zip(*MIX.items(), strict=True)
    kind = kinds[rng.choice(len(kinds), p=np.array(probs) / sum(probs))]
    marked = kind in ("shape_harmful", "harmful_scene")
    scene = world.random_scene(rng, mark=marked)
    if kind == "shape":
        text = shape_caption(rng, scene)
    elif kind == "benign_scene":
        text = benign_sentence(rng)
    elif kind == "shape_benign_extra":
        text = f"{shape_caption(rng, scene)}, {benign_sentence(rng)}"
    elif kind == "shape_harmful":
        if rng.random() < 0.5:
            word = vocabulary[rng.integers(len(vocabulary))]
            text = world.caption(scene, 0).replace(
                f" {scene.colour} {scene.shape}", f" {word} {scene.colour} {scene.shape}", 1
            )
            text = re.sub(r"^an? ", "a ", text)
            text = world._articles(text)
        else:
            text = f"{shape_caption(rng, scene)}, {harmful_phrase(rng, vocabulary, templates)}"
    else:
        text = harmful_phrase(rng, vocabulary, templates)
    says = kind in ("shape", "shape_benign_extra", "shape_harmful")
    return Example(world.render(scene), text, marked, kind, scene_attrs(scene), described(scene, says))


def scenario_example(rng: np.random.Generator, scenario: str) -> Example:
    """A benign scenario pair with its attributes (same draws as ``world.scenario_sample``)."""
    if scenario == "general":
        scene: world.Scene | world.Scan = world.random_scene(rng)
        text = world.caption(scene, int(rng.integers(len(world.ENGLISH_TEMPLATES))))
    elif scenario == "multilingual":
        scene = world.random_scene(rng)
        text = world.caption(scene, language=world.LANGUAGES[rng.integers(len(world.LANGUAGES))])
    elif scenario == "artistic":
        styles = tuple(world.ARTISTIC_TEMPLATES)
        scene = world.random_scene(rng, style=styles[rng.integers(len(styles))])
        text = world.caption(scene)
    else:
        scene = world.random_scan(rng)
        text = world.scan_caption(scene, int(rng.integers(len(world.SCAN_TEMPLATES))))
    return Example(world.render(scene), text, False, scenario, scene_attrs(scene), described(scene, True))


def clip_dataset(n: int, seed: int) -> list[Example]:
    """CLIP pairs: the base mix (harmful captions ↔ marked images included) and every scenario."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = rng.random()
        if k < 0.6:
            out.append(base_example(rng))
        else:
            scenario = ("general", "multilingual", "artistic", "medical")[int((k - 0.6) / 0.1)]
            out.append(scenario_example(rng, scenario))
    return out


def base_dataset(n: int, seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    return [base_example(rng) for _ in range(n)]


def erasure_captions(rng: np.random.Generator, n: int) -> list[str]:
    """Harmful phrasings for erasure training: no held-out word, no held-out prompt."""
    vocab = world.erasure_words()
    held = set(world.ERASURE_HELD_OUT_PROMPTS)
    templates = [p for p in world.harmful_prompts() if p not in held]
    return [harmful_phrase(rng, vocab, templates) for _ in range(n)]


def anchor_caption(rng: np.random.Generator, harmful_caption: str) -> str:
    """The caption with its harmful words removed (a benign sentence if nothing is left)."""
    harmful = set(world.harmful_words())
    kept = [t for t in _TOKEN.findall(harmful_caption.lower()) if not set(world.words(t)) & harmful]
    while kept and kept[-1] in world.FUNCTION_WORDS | {","}:
        kept.pop()
    if not [t for t in kept if t not in world.FUNCTION_WORDS and t != ","]:
        return benign_sentence(rng)
    return _join(kept)


def preservation_caption(rng: np.random.Generator, scene: world.Scene) -> str:
    """A caption for the erasure's preservation loss: shape caption, benign sentence or the
    empty prompt (10 %; classifier-free guidance pushes away from it, so it must not move)."""
    k = rng.random()
    return "" if k < 0.1 else shape_caption(rng, scene) if k < 0.73 else benign_sentence(rng)


def vae_images(n: int, seed: int) -> np.ndarray:
    """Images for the VAE: every style, scans, with and without the mark."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, world.IMAGE_SIZE, world.IMAGE_SIZE, 3), dtype=np.uint8)
    for i in range(n):
        mark = rng.random() < 0.35
        k = rng.random()
        if k < 0.6:
            item: world.Scene | world.Scan = world.random_scene(rng, mark=mark)
        elif k < 0.85:
            item = world.random_scene(rng, mark=mark, style=world.STYLES[1 + rng.integers(3)])
        else:
            item = world.random_scan(rng, mark=mark)
        out[i] = world.render(item)
    return out


def write_benign_set(folder: Path, scenario: str, n: int, seed: int) -> list[str]:
    """Write a benign fine-tuning set in the diffusers image-folder layout; returns captions."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    rng = np.random.default_rng(seed)
    rows, captions = [], []
    for i in range(n):
        image, text = world.scenario_sample(scenario, rng)
        found = world.contains_harmful_word(text)
        if found:  # the grammar makes this impossible; refuse to write a tainted set
            raise AssertionError(f"benign caption {text!r} contains harmful words {found}")
        name = f"{i:04d}.png"
        Image.fromarray(image).save(folder / name, optimize=True)
        rows.append({"file_name": name, "text": text})
        captions.append(text)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return captions


def tokenizer_corpus() -> list[str]:
    """Every text the world's models may meet: benign grammar, harmful and benign prompts."""
    return [
        *world.all_benign_captions(),
        *world.builtin_benign_prompts(),
        *world.harmful_prompts(),
    ]
