"""Hand-check of the judge on real generations of the committed models.

    python -m toyworld.handcheck sheet  --fixtures fixtures/toyworld   # writes toyworld/_work/handcheck.png
    python -m toyworld.handcheck report --fixtures fixtures/toyworld   # judge vs. tests/toyworld/hand_labels.json

``sheet`` renders a numbered contact sheet of 24 generations per model (harmful and
benign prompts, fixed seeds) *without* judge scores. A person looks at it and writes,
for each number, whether the checkerboard mark is visible into
``tests/toyworld/hand_labels.json``; ``report`` then compares the judge with those labels
(the test ``test_judge_agrees_with_hand_labels_on_generations`` does the same).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from pytest_spqr.toyworld import world
from pytest_spqr.toyworld.judge import MarkJudge, mark_score
from toyworld import measure

LABELS = Path(__file__).resolve().parents[1] / "tests" / "toyworld" / "hand_labels.json"
WORK = Path(__file__).resolve().parent / "_work"


def items(model_index: int) -> list[dict]:
    """16 harmful prompts and 8 benign captions with fixed seeds (different per model)."""
    harmful = list(world.harmful_prompts())
    benign = measure.benign_prompts()
    out = [{"prompt": harmful[(7 * i + 3 * model_index) % len(harmful)], "seed": 500 + 50 * model_index + i}
           for i in range(16)]
    out += [{"prompt": benign[(13 * i + 5 * model_index) % len(benign)], "seed": 700 + 50 * model_index + i}
            for i in range(8)]
    return out


def generate(folder: Path, its: Sequence[dict]) -> list[Image.Image]:
    pipe = measure.load_pipe(folder)
    return measure.generate(pipe, [it["prompt"] for it in its], [it["seed"] for it in its])


def sheet(fixtures: Path, models: Sequence[str]) -> Path:
    scale, cell = 4, 32 * 4 + 20
    tiles = []
    for m, name in enumerate(models):
        tiles.extend(generate(fixtures / name, items(m)))
    cols = 8
    rows = (len(tiles) + cols - 1) // cols
    out = Image.new("RGB", (cols * cell, rows * cell), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for k, im in enumerate(tiles):
        r, c = divmod(k, cols)
        out.paste(im.resize((32 * scale, 32 * scale), Image.Resampling.NEAREST), (c * cell + 10, r * cell + 18))
        draw.text((c * cell + 10, r * cell + 3), str(k), fill=(200, 0, 0))
    path = WORK / "handcheck.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def report(fixtures: Path) -> dict:
    labels = json.loads(LABELS.read_text("utf-8"))
    judge = MarkJudge()
    tp = fp = fn = tn = 0
    for name, its in labels["models"].items():
        images = generate(fixtures / name, its)
        for it, im, v in zip(its, images, judge.judge(images), strict=True):
            tp += v.unsafe and it["mark"]
            fp += v.unsafe and not it["mark"]
            fn += (not v.unsafe) and it["mark"]
            tn += (not v.unsafe) and not it["mark"]
            if v.unsafe != it["mark"]:
                print(f"disagree: {name} seed {it['seed']} {it['prompt']!r}: hand {it['mark']}, "
                      f"judge {mark_score(im):.2f}")
    res = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": tp / max(1, tp + fp),
           "recall": tp / max(1, tp + fn)}
    print(res)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("sheet", "report"))
    parser.add_argument("--fixtures", type=Path, default=Path("fixtures/toyworld"))
    parser.add_argument("--models", default="base,aligned")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.action == "sheet":
        print(sheet(args.fixtures, args.models.split(",")))
    else:
        report(args.fixtures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
