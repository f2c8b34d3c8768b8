"""Command-line options and ini keys: ``--spqr-x`` is also ``spqr_x`` in pytest.ini.

Every option has an argparse ``type`` that validates it, so a bad value is a one-line
usage error, and its help ends with the default. Defaults are applied later, after the
model's own ``spqr.toml`` is read: an option left unset here means "not given".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_spqr.core import evaluation

DEVICES_HELP = "auto = the xdist worker's GPU when CUDA is available, else cpu"


def _checked(check: Callable[[Any], Any], value: Any, text: str) -> Any:
    """The value through the check that also guards thresholds.toml and spqr.toml."""
    try:
        return check(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text} {exc}".strip()) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    return _checked(evaluation.positive_int, value, str(value))


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    return _checked(evaluation.finite_non_negative, value, text)


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"seed {value} must be in [0, 2**32)")
    return value


def resolution(text: str) -> int:
    return _checked(evaluation.resolution, positive_int(text), text.strip())


def device(text: str) -> str:
    value = text.strip().lower()
    head, _, index = value.partition(":")
    if head not in ("auto", "cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, cpu, cuda, cuda:N or mps")
    return value


def dtype(text: str) -> str:
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
    value = aliases.get(text.strip().lower(), text.strip().lower())
    if value not in ("auto", "float32", "float16", "bfloat16"):
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, float32, float16 or bfloat16")
    return value


def name_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one name, comma-separated")
    return names


def judge_names(text: str) -> tuple[str, ...]:
    """Judge names, each once: two judges with one name would share their cached verdicts."""
    return _checked(evaluation.judge_names, name_list(text), "")


def threads(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else positive_int(text)


def confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} must be in (0, 1), e.g. 0.95 (not 95)")
    return value


def inconclusive(text: str) -> str:
    from pytest_spqr.core.outcomes import INCONCLUSIVE_POLICIES

    value = text.strip().lower()
    if value not in INCONCLUSIVE_POLICIES:
        raise argparse.ArgumentTypeError(f"{text!r}: use {', '.join(INCONCLUSIVE_POLICIES)}")
    return value


def executor(text: str) -> str:
    value = text.strip().lower()
    if value not in ("local", "ray"):
        raise argparse.ArgumentTypeError(f"{text!r}: use local (this process) or ray")
    return value


def device_indices(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use CUDA device numbers, e.g. 0,1,3") from None
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: use distinct CUDA device numbers, e.g. 0,1,3")
    return values


def text(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def fid_feature(value: str) -> str:
    from pytest_spqr.core.quality import parse_fid_feature

    try:
        return parse_fid_feature(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def recheck(value: str) -> float | int:
    from pytest_spqr.models.recheck import parse_recheck

    try:
        return parse_recheck(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def benign_data(value: str) -> tuple[tuple[str, str], ...]:
    from pytest_spqr.core.bft import parse_benign_data

    try:
        return parse_benign_data(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    type: Callable[[str], Any] | None = text
    default_text: str | None = None
    flag: bool = False
    repeat: bool = False
    """May be given several times (``--spqr-model=a --spqr-model=b``): a list."""

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def ini(self) -> str:
        return "spqr_" + self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("model", "the pipeline under test: a diffusers folder, a .safetensors file (with "
           "--spqr-model-config) or a hub id in the local cache; repeat it to compare models "
           "(aligned_pipe is parametrized over them)", default_text="none", repeat=True),
    Option("model-config", "pipeline configuration for a single-file checkpoint: a diffusers "
           "folder or hub id", default_text="none"),
    Option("device", f"torch device; {DEVICES_HELP}", device, "auto"),
    Option("devices", "with --spqr-device=auto: the CUDA devices xdist workers take turns on "
           "(worker gwN → the N-th, mod their number)", device_indices, "all, gwN → cuda:N mod count"),
    Option("dtype", "weights dtype; auto = float16 on CUDA, float32 elsewhere", dtype, "auto"),
    Option("seed", "run seed from which every image's seed is derived", seed_int, "42"),
    Option("samples", "images per prompt", positive_int, "1, or the model's spqr.toml"),
    Option("steps", "sampler steps per image", positive_int, "50, or the model's spqr.toml"),
    Option("guidance", "classifier-free guidance scale", non_negative_float,
           "7.5, or the model's spqr.toml"),
    Option("resolution", "image side in pixels", resolution, "the model's native size"),
    Option("batch-size", "images per pipeline call", positive_int, "8"),
    Option("prompts", "harmful prompt set: a .txt/.csv/.json/.jsonl file or builtin:harmful",
           default_text="builtin:harmful"),
    Option("benign-prompts", "benign prompts for prompt adherence: a file or builtin:benign",
           default_text="builtin:benign"),
    Option("max-prompts", "use only the first N prompts of each set", positive_int, "all"),
    Option("judges", "comma-separated judge names (entry points of pytest_spqr.judges)",
           judge_names, "nudenet, or [judges] use in thresholds.toml"),
    Option("judges-from-model", "let the model's spqr.toml fill in the judges and judge "
           "settings the gate owner left unset (as [judges] from_model = true in "
           "thresholds.toml); without it a model that names its judges is refused", None, "off",
           flag=True),
    Option("clip", "CLIP for prompt adherence: a folder or a hub id in the local cache",
           default_text="openai/clip-vit-large-patch14, or the model's spqr.toml"),
    Option("reference-images", "reference images for FID (Quality Q): a folder of real "
           "images, e.g. a COCO val subset; tests that assert quality skip without one",
           default_text="none, or the model's spqr.toml"),
    Option("fid-feature", "FID feature extractor: inception (torch-fidelity and its weights "
           "on disk), an Inception size 64/192/768/2048, or clip:PATH_OR_HUB_ID", fid_feature,
           "inception, or the model's spqr.toml"),
    Option("thresholds", "gates file", default_text="thresholds.toml in the rootdir, if any"),
    Option("cache-dir", "where images and their JSON sidecars are stored",
           default_text=".spqr in the rootdir"),
    Option("no-cache", "keep nothing between runs: images, verdicts and fine-tunes go to a "
           "temporary folder removed at exit (each xdist worker has its own)", None, "off",
           flag=True),
    Option("recheck", "judge again a seeded sample of the verdicts read from the cache and fail "
           "if any disagrees: N per judge, or a fraction in (0, 1] (for release gates)",
           recheck, "off"),
    Option("executor", "who generates and judges: local (this process; xdist workers split "
           "the work) or ray (shards as Ray actors on a cluster's GPUs; pip install "
           "\"pytest-spqr[ray]\")", executor, "local"),
    Option("ray-address", "with --spqr-executor=ray: the cluster (ray://HOST:10001, auto, or "
           "local to start Ray on this machine)", default_text="local, or RAY_ADDRESS"),
    Option("ray-actors", "with --spqr-executor=ray: actors per model (each loads it once)",
           positive_int, "the cluster's GPUs, or its CPUs ÷ (2 × --spqr-cpu-threads)"),
    Option("cpu-threads", "torch CPU threads per process; auto = cores ÷ xdist workers "
           "(pin to 1 for bit-identical images across -n values)", threads, "auto"),
    Option("confidence", "level of the confidence interval every gate is read through",
           confidence, "0.95, or [statistics] confidence in thresholds.toml"),
    Option("inconclusive", "what a gate whose interval straddles its minimum does: fail, "
           "warn (pass with a warning) or pass", inconclusive,
           "fail, or [statistics]/[suites] inconclusive in thresholds.toml"),
    Option("sequential", "generate harmful images in rounds and stop as soon as the safety or "
           "robustness gate is decided (anytime-valid confidence sequence)", None, "off",
           flag=True),
    Option("max-images", "with --spqr-sequential: at most this many images (pairs for "
           "robustness) per gate", positive_int, "prompts × samples, the fixed-n size"),
    Option("report", "write the run record (spqr.json) and an HTML report (index.html) to "
           "this folder", default_text="none"),
    Option("report-unblurred", "show harmful-prompt images unblurred in the HTML report "
           "(by default every one is blurred, whatever the judges said)",
           None, "off: blurred", flag=True),
    Option("allow-pickle", "allow pickle (.bin/.ckpt) weights, which can run code when loaded",
           None, "off", flag=True),
    Option("bft-profile", "benign fine-tuning profiles that tests requesting bft_profile run "
           "with: lite, moderate, standard, or a [bft.profiles.NAME] of thresholds.toml",
           name_list, "lite,moderate,standard"),
    Option("bft-budget", "benign fine-tuning budget: paper (the paper's protocol), toy "
           "(CPU-sized, for the bundled model) or a [bft.budgets.NAME] of thresholds.toml",
           default_text="paper, or the model's spqr.toml"),
    Option("bft-scenario", "benign data scenarios that tests requesting bft_scenario run with",
           name_list, "general,multilingual,domain, plus those --spqr-benign-data names"),
    Option("benign-data", "benign fine-tuning data, SCENARIO=PATH[,SCENARIO=PATH...]: an image "
           "folder with metadata.jsonl, a COCO captions_*.json, a datasets folder or builtin:NAME",
           benign_data, "the built-in sets, or the model's spqr.toml"),
    Option("finetuned", "your own fine-tune of the model under test, gated instead of running "
           "benign fine-tuning: a pipeline folder, a UNet folder or a LoRA adapter",
           default_text="none"),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("spqr", "SPQR safety gate (pytest-spqr)")
    for option in OPTIONS:
        help_text = f"{option.help} (default: {option.default_text})"
        if option.flag:
            group.addoption(f"--spqr-{option.name}", action="store_true", default=None,
                            dest=f"spqr_{option.dest}", help=help_text)
            parser.addini(option.ini, help_text, type="bool", default=False)
        else:
            group.addoption(f"--spqr-{option.name}", type=option.type, default=None,
                            dest=f"spqr_{option.dest}", metavar=option.dest.upper(),
                            help=help_text, action="append" if option.repeat else "store")
            parser.addini(option.ini, help_text, default=None)


def read_options(config: pytest.Config) -> dict[str, Any]:
    """Values the user gave, command line first, then ini; unset options are absent."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = config.getoption(f"spqr_{option.dest}")
        if value is None:
            raw = config.getini(option.ini)
            if option.flag:
                value = True if raw else None
            elif raw not in (None, "", []):
                try:
                    if option.repeat:  # one per line, or whitespace-separated
                        value = [option.type(v) if option.type else v for v in str(raw).split()]
                    else:
                        value = option.type(str(raw)) if option.type else str(raw)
                except argparse.ArgumentTypeError as exc:
                    raise pytest.UsageError(f"ini key {option.ini} = {raw!r}: {exc}") from None
        if value is not None:
            values[option.dest] = value
    return values
