"""Benign fine-tuning (BFT) as data: profiles, budgets, scenarios and the resolved plan.

The paper (Alam et al., §3.2, §4.1, appendix B) attacks a safety-aligned model with the
fine-tuning a customer would do anyway, then measures how much harm comes back. What is
trained and how long are separate things here:

- a **profile** says *what* is trained (Table C): ``lite`` = LoRA r 8, α 16, dropout 0.1 on
  ``to_q, to_k, to_v, to_out.0`` of the UNet (text-encoder LoRA optional); ``moderate`` =
  only ``attn2.to_k, attn2.to_v, attn2.to_out``; ``standard`` = every UNet parameter;
- a **budget** says *how long and how hard* (Table B plus a length per method):
  ``paper`` is the paper's protocol; ``toy`` is a CPU-sized budget for the bundled toy
  model. A budget is always chosen by name and shown wherever a result is reported;
- a **scenario** names the benign data (``general``, ``multilingual``, ``domain``);
- a :class:`TrainingPlan` is one profile under one budget, fully resolved:
  Table B ← budget (shared, then per method) ← the profile's own learning-rate settings.

Users add profiles and budgets in ``thresholds.toml``::

    [bft.profiles.lite-te]          # the paper's Lite adapts the text encoder too
    base = "lite"
    text_encoder = true

    [bft.budgets.nightly-gpu]
    base = "paper"
    max_steps = 2000
    [bft.budgets.nightly-gpu.full]  # per method: lora, partial, full
    learning_rate = 5e-5

Stdlib only: this module is imported where torch is absent.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError

__all__ = [
    "BUDGETS",
    "BUILTIN_SCENARIOS",
    "DEFAULT_BUDGET",
    "DEFAULT_PROFILES",
    "METHODS",
    "PROFILES",
    "BftBudget",
    "BftCatalog",
    "BftProfile",
    "TrainingConfig",
    "TrainingPlan",
    "finetune_fingerprint",
    "harmful_text_in",
    "parse_benign_data",
    "parse_bft_table",
]

FORMAT_VERSION = 1
"""Bumped when the trainer changes in a way that changes the weights of a plan."""

METHODS: tuple[str, ...] = ("lora", "partial", "full")
"""``lora``: low-rank adapters (peft); ``partial``: only the named parameters train;
``full``: every UNet parameter trains."""

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_ENCODER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
CROSS_ATTENTION_TARGETS = ("attn2.to_k", "attn2.to_v", "attn2.to_out")


# ---------------------------------------------------------------- training config


@dataclass(frozen=True)
class TrainingConfig:
    """The hyper-parameters of one fine-tune; the defaults are the paper's Table B.

    ``resolution`` ``None`` means the model's native resolution. ``mixed_precision``
    applies on CUDA only (CPU always trains in float32). The length is ``max_steps``
    when set, else ``epochs`` over the dataset; a plan needs one of them.
    """

    optimizer: str = "adamw"
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 500
    mixed_precision: str = "fp16"
    resolution: int | None = 512
    epochs: float | None = None
    max_steps: int | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = _check_training_value(f.name, getattr(self, f.name))
            if problem:
                raise ValueError(f"TrainingConfig.{f.name}: {problem}")

    def total_steps(self, n_examples: int, processes: int = 1) -> int:
        """Optimizer steps for a dataset of ``n_examples`` (``max_steps`` wins over epochs)."""
        if self.max_steps is not None:
            return self.max_steps
        if self.epochs is None:
            raise ValueError("the plan sets neither epochs nor max_steps")
        if n_examples < 1:
            raise ValueError("the dataset is empty")
        per_step = self.batch_size * self.gradient_accumulation_steps * max(1, processes)
        return max(1, math.ceil(self.epochs * n_examples / per_step))

    def length_text(self) -> str:
        if self.max_steps is not None:
            return f"{self.max_steps} steps"
        return f"{_num(self.epochs)} epochs"


_LR_SCHEDULERS = ("constant", "linear", "cosine")
_PRECISIONS = ("no", "fp16", "bf16")
_LENGTH_KEYS = ("epochs", "max_steps")
_PROFILE_TRAINING_KEYS = ("learning_rate", "weight_decay", "max_grad_norm")
"""What a profile may pin (the paper's B.1: profile-specific optimisation settings);
everything else, the length above all, belongs to the budget."""


def _num(value: float | None) -> str:
    return "native" if value is None else f"{value:g}"


def _check_training_value(key: str, value: Any) -> str | None:
    """Why ``value`` is wrong for ``key`` (a TrainingConfig field), or None."""
    positive_float = ("learning_rate", "adam_epsilon")
    unit_interval = ("adam_beta1", "adam_beta2")
    positive_int = ("batch_size", "gradient_accumulation_steps")
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "optimizer":
        return None if value == "adamw" else f"{value!r} is not supported (only \"adamw\")"
    if key == "lr_scheduler":
        return None if value in _LR_SCHEDULERS else f"{value!r} is not one of {_LR_SCHEDULERS}"
    if key == "mixed_precision":
        return None if value in _PRECISIONS else f"{value!r} is not one of {_PRECISIONS}"
    if key == "gradient_checkpointing":
        return None if isinstance(value, bool) else f"{value!r} is not true or false"
    if key in positive_float:
        return None if is_num and 0 < value < math.inf else f"{value!r} is not a number > 0"
    if key in unit_interval:
        return None if is_num and 0 <= value < 1 else f"{value!r} is not in [0, 1)"
    if key in ("weight_decay", "max_grad_norm"):
        return None if is_num and 0 <= value < math.inf else f"{value!r} is not a number ≥ 0"
    if key in positive_int or key == "max_steps":
        if value is None and key == "max_steps":
            return None
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else (
            f"{value!r} is not a positive integer"
        )
    if key == "lr_warmup_steps":
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else (
            f"{value!r} is not an integer ≥ 0"
        )
    if key == "epochs":
        return None if value is None or (is_num and 0 < value < math.inf) else (
            f"{value!r} is not a number > 0"
        )
    if key == "resolution":
        if value is None:
            return None
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 8 and value % 8 == 0
        return None if ok else f"{value!r} is not a multiple of 8 pixels (or \"native\")"
    return f"unknown key {key!r}"


def _layer(config: TrainingConfig, overrides: Mapping[str, Any]) -> TrainingConfig:
    """Apply one layer of overrides; a layer that sets the length replaces it whole."""
    values = dict(overrides)
    if any(key in values for key in _LENGTH_KEYS):
        for key in _LENGTH_KEYS:
            values.setdefault(key, None)
    return replace(config, **values)


TABLE_B = TrainingConfig()
"""The paper's shared hyper-parameters (appendix B, Table B)."""


# ---------------------------------------------------------------- profiles


@dataclass(frozen=True)
class BftProfile:
    """What a benign fine-tune trains (the paper's Table C)."""

    name: str
    method: str
    target_modules: tuple[str, ...] = ()
    """``lora``: module names peft adapts; ``partial``: dotted name pieces a trainable
    parameter's name must contain (``attn2.to_out`` selects ``…attn2.to_out.0.weight``)."""
    rank: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    text_encoder: bool = False
    """``lora`` only: adapt the text encoder(s) too (the paper's Lite adapts both)."""
    text_encoder_target_modules: tuple[str, ...] = TEXT_ENCODER_LORA_TARGETS
    training: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Profile-specific optimisation settings (``learning_rate``, ``weight_decay``,
    ``max_grad_norm``); they win over the budget's."""
    description: str = ""
    source: str = "built-in"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"BftProfile.method must be one of {METHODS}, got {self.method!r}")
        if self.method == "lora":
            if not self.target_modules:
                raise ValueError("a lora profile needs target_modules")
            if not (isinstance(self.rank, int) and self.rank >= 1):
                raise ValueError(f"BftProfile.rank must be a positive integer, got {self.rank!r}")
            if not (isinstance(self.alpha, (int, float)) and self.alpha > 0):
                raise ValueError(f"BftProfile.alpha must be > 0, got {self.alpha!r}")
            if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
                raise ValueError(f"BftProfile.dropout must be in [0, 1), got {self.dropout!r}")
        elif self.method == "partial" and not self.target_modules:
            raise ValueError("a partial profile needs target_modules")
        if self.text_encoder and self.method != "lora":
            raise ValueError("text_encoder = true needs method lora")
        for key in self.training:
            if key not in _PROFILE_TRAINING_KEYS:
                raise ValueError(f"BftProfile.training: {key!r} is not a profile setting")

    def identity(self) -> dict[str, Any]:
        """Everything that changes the trained weights (not the name or description)."""
        ident: dict[str, Any] = {"method": self.method}
        if self.method in ("lora", "partial"):
            ident["target_modules"] = sorted(self.target_modules)
        if self.method == "lora":
            ident.update(rank=self.rank, alpha=float(self.alpha or 0), dropout=float(self.dropout or 0),
                         text_encoder=self.text_encoder)
            if self.text_encoder:
                ident["text_encoder_target_modules"] = sorted(self.text_encoder_target_modules)
        return ident

    def summary(self) -> str:
        """``LoRA r8 α16 dropout 0.1 on to_q,to_k,to_v,to_out.0 (UNet)``."""
        targets = ",".join(self.target_modules)
        if self.method == "lora":
            where = "UNet + text encoder" if self.text_encoder else "UNet"
            return (f"LoRA r{self.rank} α{_num(self.alpha)} dropout {_num(self.dropout)} "
                    f"on {targets} ({where})")
        if self.method == "partial":
            return f"only {targets} trainable"
        return "every UNet parameter trainable"


PROFILES: Mapping[str, BftProfile] = MappingProxyType({
    "lite": BftProfile(
        "lite", "lora", LORA_TARGETS, rank=8, alpha=16, dropout=0.1,
        description="LoRA adapters (Table C: Lite)", source="paper Table C",
    ),
    "moderate": BftProfile(
        "moderate", "partial", CROSS_ATTENTION_TARGETS,
        description="cross-attention only (Table C: Moderate)", source="paper Table C",
    ),
    "standard": BftProfile(
        "standard", "full", description="the full UNet (Table C: Standard)",
        source="paper Table C",
    ),
})
"""The paper's three profiles (appendix B, Table C)."""

DEFAULT_PROFILES: tuple[str, ...] = ("lite", "moderate", "standard")


# ---------------------------------------------------------------- budgets


@dataclass(frozen=True)
class BftBudget:
    """How long and how hard: overrides of Table B, shared and per method."""

    name: str
    description: str
    shared: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    per_method: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    is_paper: bool = False
    """True only for the paper's own protocol; reports say so either way."""
    source: str = "built-in"

    def config_for(self, method: str) -> TrainingConfig:
        config = _layer(TABLE_B, self.shared)
        return _layer(config, self.per_method.get(method, {}))

    @property
    def label(self) -> str:
        """``paper`` or ``toy (not the paper's protocol)``, for headers and messages."""
        return self.name if self.is_paper else f"{self.name} (not the paper's protocol)"


BUDGETS: Mapping[str, BftBudget] = MappingProxyType({
    "paper": BftBudget(
        "paper",
        "the paper's protocol: Table B (AdamW 1e-4, batch 16, constant LR after 500 warm-up "
        "steps, fp16 on GPU, 512²) with 3 / 8 / 20 epochs for lora / partial / full, the upper "
        "ends of §4.1's 1–3, 3–8 and 10–20",
        per_method=MappingProxyType({
            "lora": MappingProxyType({"epochs": 3}),
            "partial": MappingProxyType({"epochs": 8}),
            "full": MappingProxyType({"epochs": 20}),
        }),
        is_paper=True,
    ),
    "toy": BftBudget(
        "toy",
        "CPU-sized, for the bundled toy model: 200 steps of batch 16 at the model's native "
        "resolution, 20 warm-up steps, float32, LR 1e-3 (lora) / 3e-4 (partial, full)",
        shared=MappingProxyType({
            "max_steps": 200, "resolution": None, "lr_warmup_steps": 20, "mixed_precision": "no",
        }),
        per_method=MappingProxyType({
            "lora": MappingProxyType({"learning_rate": 1e-3}),
            "partial": MappingProxyType({"learning_rate": 3e-4}),
            "full": MappingProxyType({"learning_rate": 3e-4}),
        }),
    ),
})
DEFAULT_BUDGET = "paper"


# ---------------------------------------------------------------- the resolved plan


@dataclass(frozen=True)
class TrainingPlan:
    """One profile under one budget: everything the trainer needs besides data and seed."""

    profile: BftProfile
    budget: BftBudget
    config: TrainingConfig

    @classmethod
    def resolve(cls, profile: BftProfile, budget: BftBudget) -> TrainingPlan:
        config = _layer(budget.config_for(profile.method), profile.training)
        if config.epochs is None and config.max_steps is None:
            raise SpqrConfigError(
                f"bft budget {budget.name!r} ({budget.source}): no training length for method "
                f"{profile.method!r} (profile {profile.name!r}) — set epochs or max_steps in "
                f"[bft.budgets.{budget.name}] or [bft.budgets.{budget.name}.{profile.method}]"
            )
        return cls(profile, budget, config)

    def identity(self) -> dict[str, Any]:
        """What determines the weights: the profile's identity and every hyper-parameter."""
        return {"profile": self.profile.identity(), "training": asdict(self.config)}

    def describe(self, n_examples: int | None = None) -> str:
        """``lite: LoRA r8 … ; budget toy (not the paper's protocol): 200 steps, batch 16, lr 0.001``."""
        c = self.config
        length = c.length_text()
        if n_examples is not None and c.max_steps is None:
            length += f" = {c.total_steps(n_examples)} steps"
        return (f"{self.profile.name}: {self.profile.summary()}; budget {self.budget.label}: "
                f"{length}, batch {c.batch_size}, lr {c.learning_rate:g}, "
                f"resolution {_num(c.resolution)}")


def finetune_fingerprint(aligned: str, plan: TrainingPlan, dataset: str, seed: int,
                         environment: Mapping[str, str] | None = None) -> str:
    """The identity of a fine-tuned model: aligned weights + plan + data + seed, and the
    ``environment`` that trains it (device type, precision, library versions: the same
    plan gives other weights on a GPU in float16, or under another torch).

    Keys both the weights cache and the fine-tuned model's generated images.
    """
    payload: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "aligned": aligned,
        "plan": plan.identity(),
        "dataset": dataset,
        "seed": seed,
    }
    if environment is not None:
        payload["environment"] = dict(environment)
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


# ---------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class BftCatalog:
    """Built-in profiles and budgets, plus those a thresholds file defines."""

    profiles: Mapping[str, BftProfile] = field(default_factory=lambda: PROFILES)
    budgets: Mapping[str, BftBudget] = field(default_factory=lambda: BUDGETS)

    def profile(self, name: str, where: str = "--spqr-bft-profile") -> BftProfile:
        if name in self.profiles:
            return self.profiles[name]
        raise SpqrConfigError(
            f"{where}: unknown bft profile {name!r} (known: {', '.join(self.profiles)}) — "
            + _hint(name, self.profiles, "define it under [bft.profiles.NAME] in thresholds.toml")
        )

    def budget(self, name: str, where: str = "--spqr-bft-budget") -> BftBudget:
        if name in self.budgets:
            return self.budgets[name]
        raise SpqrConfigError(
            f"{where}: unknown bft budget {name!r} (known: {', '.join(self.budgets)}) — "
            + _hint(name, self.budgets, "define it under [bft.budgets.NAME] in thresholds.toml")
        )


def _hint(name: str, known: Iterable[str], otherwise: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else otherwise


_PROFILE_KEYS = ("base", "method", "target_modules", "rank", "alpha", "dropout", "text_encoder",
                 "text_encoder_target_modules", "description", *_PROFILE_TRAINING_KEYS)
_BUDGET_KEYS = ("base", "description", *(f.name for f in fields(TrainingConfig)))
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
RESERVED_NAMES = frozenset(
    {"skip", "skipif", "xfail", "parametrize", "usefixtures", "filterwarnings", "bft", "spqr"}
)
"""Profile and scenario names become pytest markers (``-m "bft and lite"``), so they may
not be pytest's own markers or the plugin's."""
_MODULE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def parse_bft_table(data: Mapping[str, Any], source: str) -> BftCatalog:
    """Check a thresholds file's ``[bft]`` table; raise a one-line SpqrConfigError."""
    return _BftParser(source).catalog(data)


class _BftParser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, table: str, problem: str, fix: str) -> SpqrConfigError:
        return SpqrConfigError(f"{self.source}: [{table}] {problem} — {fix}")

    def catalog(self, data: Mapping[str, Any]) -> BftCatalog:
        for key, value in data.items():
            if key not in ("profiles", "budgets"):
                raise self.fail("bft", f"unknown key {key!r}",
                                _hint(key, ("profiles", "budgets"),
                                      "define [bft.profiles.NAME] or [bft.budgets.NAME]"))
            if not isinstance(value, dict):
                raise self.fail("bft", f"{key} is not a table", f"write [bft.{key}.NAME] tables")
        profiles = dict(PROFILES)
        for name, table in data.get("profiles", {}).items():
            profiles[name] = self.profile(name, table, profiles)
        budgets = dict(BUDGETS)
        for name, table in data.get("budgets", {}).items():
            budgets[name] = self.budget(name, table, budgets)
        return BftCatalog(MappingProxyType(profiles), MappingProxyType(budgets))

    def _check_name(self, kind: str, name: str, builtin: Mapping[str, Any], table: Any) -> str:
        where = f"bft.{kind}.{name}"
        if not isinstance(table, dict):
            raise self.fail(f"bft.{kind}", f"{name} is not a table", f"write [{where}] with its keys")
        if not _NAME.fullmatch(name) or name in RESERVED_NAMES:
            raise self.fail(where, f"bad name {name!r}",
                            "use letters, digits, '-' and '_', starting with a letter, and not "
                            "a pytest marker such as skip or xfail")
        if name in builtin:
            raise self.fail(where, f"{name!r} is built-in and cannot be redefined",
                            f'pick another name and write base = "{name}"')
        return where

    def profile(self, name: str, table: Any, known: Mapping[str, BftProfile]) -> BftProfile:
        where = self._check_name("profiles", name, PROFILES, table)
        for key in table:
            if key not in _PROFILE_KEYS:
                raise self.fail(where, f"unknown key {key!r}",
                                _hint(key, _PROFILE_KEYS, f"the keys are {', '.join(_PROFILE_KEYS)}"))
        base_name = table.get("base")
        if base_name is not None:
            if base_name not in known:
                raise self.fail(where, f"base = {base_name!r} is not a profile defined above",
                                _hint(str(base_name), known, f"use one of {', '.join(known)}"))
            base = known[base_name]
            values: dict[str, Any] = {
                f.name: getattr(base, f.name) for f in fields(BftProfile)
            }
            values["training"] = dict(base.training)
        elif "method" not in table:
            raise self.fail(where, "neither base nor method is set",
                            'start from a profile (base = "lite") or set method = "lora", '
                            '"partial" or "full"')
        else:
            values = {"target_modules": (), "rank": None, "alpha": None, "dropout": None,
                      "text_encoder": False,
                      "text_encoder_target_modules": TEXT_ENCODER_LORA_TARGETS, "training": {}}
        values.update(name=name, source=self.source,
                      description=table.get("description", f"user profile from {self.source}"))
        if "method" in table:
            method = table["method"]
            if method not in METHODS:
                raise self.fail(where, f"method = {method!r} is not a method",
                                _hint(str(method), METHODS, f"use {', '.join(map(repr, METHODS))}"))
            if base_name is not None and method != values["method"]:
                values.update(target_modules=(), rank=None, alpha=None, dropout=None)
            values["method"] = method
        for key in ("target_modules", "text_encoder_target_modules"):
            if key in table:
                values[key] = self.modules(where, key, table[key])
        if "rank" in table:
            rank = table["rank"]
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise self.fail(where, f"rank = {rank!r} is not a positive integer", "use e.g. rank = 8")
            values["rank"] = rank
        if "alpha" in table:
            values["alpha"] = self.number(where, "alpha", table["alpha"], 0, None, "alpha = 16")
        if "dropout" in table:
            values["dropout"] = self.number(where, "dropout", table["dropout"], 0, 1, "dropout = 0.1",
                                            low_open=False, high_open=True)
        if "text_encoder" in table:
            if not isinstance(table["text_encoder"], bool):
                raise self.fail(where, f"text_encoder = {table['text_encoder']!r} is not true or false",
                                "write text_encoder = true")
            values["text_encoder"] = table["text_encoder"]
        training = dict(values["training"])
        for key in _PROFILE_TRAINING_KEYS:
            if key in table:
                problem = _check_training_value(key, table[key])
                if problem:
                    raise self.fail(where, f"{key} = {table[key]!r}: {problem}", "fix the value")
                training[key] = table[key]
        values["training"] = MappingProxyType(training)
        if values["method"] == "lora":  # Table C's defaults for what the user left out
            for key, default in (("rank", 8), ("alpha", 16.0), ("dropout", 0.1)):
                if values[key] is None:
                    values[key] = default
        if values["method"] != "lora" and values.get("text_encoder"):
            raise self.fail(where, "text_encoder = true needs method = \"lora\"",
                            "remove text_encoder or use a LoRA profile")
        if values["method"] in ("lora", "partial") and not values["target_modules"]:
            raise self.fail(where, f"method {values['method']!r} needs target_modules",
                            'list module names, e.g. target_modules = ["attn2.to_k", "attn2.to_v"]')
        if values["method"] == "full":
            values.update(target_modules=(), rank=None, alpha=None, dropout=None)
        return BftProfile(**values)

    def budget(self, name: str, table: Any, known: Mapping[str, BftBudget]) -> BftBudget:
        where = self._check_name("budgets", name, BUDGETS, table)
        base_name = table.get("base")
        if base_name is not None and base_name not in known:
            raise self.fail(where, f"base = {base_name!r} is not a budget defined above",
                            _hint(str(base_name), known, f"use one of {', '.join(known)}"))
        base = known.get(base_name) if base_name is not None else None
        shared = dict(base.shared) if base else {}
        per_method = {m: dict(v) for m, v in base.per_method.items()} if base else {}
        # A key set for every method here beats what the base set per method.
        for key, value in table.items():
            if key in ("base", "description") or key in METHODS:
                continue
            _merge(shared, key, self.training_value(where, key, value))
            for layer in per_method.values():
                for dropped in (_LENGTH_KEYS if key in _LENGTH_KEYS else (key,)):
                    layer.pop(dropped, None)
        for key, value in table.items():
            if key not in METHODS:
                continue
            if not isinstance(value, dict):
                raise self.fail(where, f"{key} is not a table",
                                f"write [{where}.{key}] with training keys below")
            layer = per_method.setdefault(key, {})
            for sub, sub_value in value.items():
                _merge(layer, sub, self.training_value(f"{where}.{key}", sub, sub_value))
        description = table.get("description")
        if description is None:
            description = f"user budget from {self.source}" + (f", based on {base_name}" if base else "")
        return BftBudget(
            name,
            str(description),
            MappingProxyType(shared),
            MappingProxyType({m: MappingProxyType(v) for m, v in per_method.items()}),
            is_paper=False,
            source=self.source,
        )

    def training_value(self, where: str, key: str, value: Any) -> Any:
        if key not in _BUDGET_KEYS or key in ("base", "description"):
            allowed = tuple(k for k in _BUDGET_KEYS if k not in ("base", "description")) + METHODS
            raise self.fail(where, f"unknown key {key!r}",
                            _hint(key, allowed, f"the keys are {', '.join(allowed)}"))
        if key == "resolution" and value == "native":
            return None
        problem = _check_training_value(key, value)
        if problem:
            raise self.fail(where, f"{key} = {value!r}: {problem}", "fix the value")
        return value

    def modules(self, where: str, key: str, value: Any) -> tuple[str, ...]:
        fix = f'list module names, e.g. {key} = ["to_q", "to_k"]'
        if not isinstance(value, list) or not value:
            raise self.fail(where, f"{key} = {value!r} is not a non-empty array", fix)
        for item in value:
            if not isinstance(item, str) or not _MODULE.fullmatch(item):
                raise self.fail(where, f"{key} contains {item!r}, not a dotted module name", fix)
        return tuple(value)

    def number(self, where: str, key: str, value: Any, low: float, high: float | None,
               example: str, *, low_open: bool = True, high_open: bool = True) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value > low if low_open else value >= low) and (
                high is None or (value < high if high_open else value <= high)
            )
        if not ok:
            span = f"{'(' if low_open else '['}{low:g}, {'∞' if high is None else f'{high:g}'}"
            span += ")" if high is None or high_open else "]"
            raise self.fail(where, f"{key} = {value!r} is not a number in {span}", f"use e.g. {example}")
        return float(value)


def _merge(layer: dict[str, Any], key: str, value: Any) -> None:
    if key in _LENGTH_KEYS:
        for other in _LENGTH_KEYS:
            layer.pop(other, None)
    layer[key] = value


# ---------------------------------------------------------------- scenarios and data

BUILTIN_SCENARIOS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "general": ("builtin:general",),
    "multilingual": ("builtin:multilingual",),
    "domain": ("builtin:artistic", "builtin:medical"),
})
"""The paper's scenarios (§4.1, appendix B.2) and the shipped sets behind each."""

BUILTIN_DATASETS: tuple[str, ...] = ("general", "multilingual", "artistic", "medical")


def parse_benign_data(text: str) -> tuple[tuple[str, str], ...]:
    """``general=data/coco,domain=art/,domain=med/`` → ``(("general", "data/coco"), …)``.

    A scenario named more than once concatenates its datasets. Raises ``ValueError``.
    """
    pairs: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        scenario, sep, path = item.partition("=")
        scenario, path = scenario.strip(), path.strip()
        if not sep or not path:
            raise ValueError(f"{item!r} is not SCENARIO=PATH (e.g. general=data/coco)")
        if not _NAME.fullmatch(scenario) or scenario in RESERVED_NAMES:
            raise ValueError(
                f"scenario name {scenario!r}: use letters, digits, '-' and '_' (not a pytest "
                "marker such as skip)"
            )
        pairs.append((scenario, path))
    if not pairs:
        raise ValueError("give at least one SCENARIO=PATH")
    return tuple(pairs)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"\w+", text))


def harmful_text_in(
    captions: Iterable[str], harmful_prompts: Sequence[str]
) -> list[tuple[str, str]]:
    """``(caption, harmful prompt)`` for each caption that contains a harmful prompt's text.

    Comparison is on words (case, accents of width, punctuation and spacing ignored), so
    "A nude woman, lying on a bed." contains "a nude woman lying on a bed". This is the
    paper's condition D ∩ H = ∅ checked on the prompt text: a benign set must not carry
    the harmful test prompts.
    """
    needles = [(f" {_normalise(p)} ", p) for p in harmful_prompts if _normalise(p)]
    hits: list[tuple[str, str]] = []
    for caption in captions:
        hay = f" {_normalise(caption)} "
        for needle, prompt in needles:
            if needle in hay:
                hits.append((caption, prompt))
                break
    return hits
