"""Benign fine-tuning as data: the paper's profiles and budgets, user tables, the plan."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_spqr.core.bft import (
    BUDGETS,
    BUILTIN_SCENARIOS,
    PROFILES,
    TABLE_B,
    BftCatalog,
    TrainingConfig,
    TrainingPlan,
    finetune_fingerprint,
    harmful_text_in,
    parse_benign_data,
    parse_bft_table,
)
from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.thresholds import load_thresholds, parse_thresholds

# ---------------------------------------------------------------- the paper's numbers


def test_table_b_is_the_default_training_config() -> None:
    assert asdict(TABLE_B) == {
        "optimizer": "adamw",
        "learning_rate": 1e-4,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-8,
        "weight_decay": 1e-2,
        "max_grad_norm": 1.0,
        "batch_size": 16,
        "gradient_accumulation_steps": 1,
        "lr_scheduler": "constant",
        "lr_warmup_steps": 500,
        "mixed_precision": "fp16",
        "resolution": 512,
        "epochs": None,
        "max_steps": None,
        "gradient_checkpointing": False,
    }


def test_profiles_are_table_c() -> None:
    lite, moderate, standard = PROFILES["lite"], PROFILES["moderate"], PROFILES["standard"]
    assert (lite.method, lite.rank, lite.alpha, lite.dropout) == ("lora", 8, 16, 0.1)
    assert lite.target_modules == ("to_q", "to_k", "to_v", "to_out.0")
    assert not lite.text_encoder  # text-encoder LoRA is an option (see lite-te below)
    assert moderate.method == "partial"
    assert moderate.target_modules == ("attn2.to_k", "attn2.to_v", "attn2.to_out")
    assert standard.method == "full" and standard.target_modules == ()


def test_paper_budget_lengths_are_within_the_papers_ranges() -> None:
    paper = BUDGETS["paper"]
    assert paper.is_paper and paper.label == "paper"
    ranges = {"lite": (1, 3), "moderate": (3, 8), "standard": (10, 20)}
    for name, (low, high) in ranges.items():
        plan = TrainingPlan.resolve(PROFILES[name], paper)
        assert low <= plan.config.epochs <= high and plan.config.max_steps is None
        assert plan.config.learning_rate == 1e-4 and plan.config.resolution == 512
        assert plan.config.lr_warmup_steps == 500 and plan.config.mixed_precision == "fp16"


def test_toy_budget_is_named_and_never_passes_for_the_paper() -> None:
    toy = BUDGETS["toy"]
    assert not toy.is_paper and toy.label == "toy (not the paper's protocol)"
    plan = TrainingPlan.resolve(PROFILES["lite"], toy)
    assert plan.config.max_steps == 200 and plan.config.resolution is None
    assert plan.config.learning_rate == 1e-3
    assert "not the paper's protocol" in plan.describe()
    assert TrainingPlan.resolve(PROFILES["standard"], toy).config.learning_rate == 3e-4


def test_describe_names_profile_budget_and_length() -> None:
    plan = TrainingPlan.resolve(PROFILES["moderate"], BUDGETS["paper"])
    assert plan.describe(1000) == (
        "moderate: only attn2.to_k,attn2.to_v,attn2.to_out trainable; budget paper: "
        "8 epochs = 500 steps, batch 16, lr 0.0001, resolution 512"
    )


# ---------------------------------------------------------------- lengths and layering


def test_max_steps_wins_and_epochs_round_up() -> None:
    assert TrainingConfig(epochs=3).total_steps(1000) == 188  # ceil(3000 / 16)
    assert TrainingConfig(epochs=3, max_steps=7).total_steps(1000) == 7
    assert TrainingConfig(epochs=1, batch_size=4, gradient_accumulation_steps=2).total_steps(9) == 2
    assert TrainingConfig(epochs=1).total_steps(1000, processes=2) == 32
    with pytest.raises(ValueError, match="neither epochs nor max_steps"):
        TrainingConfig().total_steps(10)


@settings(max_examples=100, deadline=None)
@given(
    epochs=st.floats(0.1, 30), n=st.integers(1, 10_000), batch=st.integers(1, 64),
    accumulation=st.integers(1, 4),
)
def test_epochs_cover_the_data_at_least_that_many_times(epochs, n, batch, accumulation) -> None:
    config = TrainingConfig(epochs=epochs, batch_size=batch, gradient_accumulation_steps=accumulation)
    steps = config.total_steps(n)
    seen = steps * batch * accumulation
    assert seen >= epochs * n - 1e-6 and steps >= 1
    assert steps == 1 or (steps - 1) * batch * accumulation < epochs * n + 1e-6


def test_layers_profile_beats_method_beats_shared_and_a_length_replaces_the_length() -> None:
    catalog = parse_bft_table(
        {
            "profiles": {"slow-lora": {"base": "lite", "learning_rate": 5e-5}},
            "budgets": {
                "ci": {"base": "toy", "learning_rate": 2e-4, "epochs": 2,
                       "lora": {"learning_rate": 7e-4}, "full": {"max_steps": 9}},
            },
        },
        "t.toml",
    )
    ci = catalog.budget("ci")
    lite = TrainingPlan.resolve(catalog.profile("lite"), ci).config
    assert lite.learning_rate == 7e-4 and (lite.epochs, lite.max_steps) == (2, None)
    slow = TrainingPlan.resolve(catalog.profile("slow-lora"), ci).config
    assert slow.learning_rate == 5e-5
    standard = TrainingPlan.resolve(catalog.profile("standard"), ci).config
    assert (standard.epochs, standard.max_steps) == (None, 9) and standard.learning_rate == 2e-4
    assert standard.resolution is None  # from toy, the base


def test_fingerprint_changes_with_every_input_and_not_with_names() -> None:
    plan = TrainingPlan.resolve(PROFILES["lite"], BUDGETS["toy"])
    base = finetune_fingerprint("aligned", plan, "data", 42)
    assert base == finetune_fingerprint("aligned", plan, "data", 42)
    assert len(base) == 32
    others = {
        finetune_fingerprint("other", plan, "data", 42),
        finetune_fingerprint("aligned", plan, "other", 42),
        finetune_fingerprint("aligned", plan, "data", 43),
        finetune_fingerprint("aligned", TrainingPlan.resolve(PROFILES["lite"], BUDGETS["paper"]),
                             "data", 42),
        finetune_fingerprint("aligned", TrainingPlan.resolve(PROFILES["moderate"], BUDGETS["toy"]),
                             "data", 42),
    }
    assert base not in others and len(others) == 5
    renamed = parse_bft_table({"profiles": {"mine": {"base": "lite"}}}, "t").profile("mine")
    assert finetune_fingerprint("aligned", TrainingPlan.resolve(renamed, BUDGETS["toy"]),
                                "data", 42) == base


# ---------------------------------------------------------------- user tables


def test_user_profiles_from_thresholds_toml(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text(
        "[bft.profiles.lite-te]\nbase = \"lite\"\ntext_encoder = true\n"
        "[bft.profiles.self-attn]\nmethod = \"partial\"\ntarget_modules = [\"attn1.to_q\"]\n"
        "[bft.profiles.wide]\nmethod = \"lora\"\ntarget_modules = [\"to_k\"]\nrank = 32\n"
        "[bft.budgets.nightly]\nbase = \"paper\"\nmax_steps = 2000\nresolution = \"native\"\n",
        encoding="utf-8",
    )
    catalog = load_thresholds(path).bft
    assert catalog.profile("lite-te").text_encoder and catalog.profile("lite-te").rank == 8
    assert catalog.profile("self-attn").summary() == "only attn1.to_q trainable"
    assert (catalog.profile("wide").rank, catalog.profile("wide").alpha) == (32, 16.0)
    nightly = catalog.budget("nightly")
    assert not nightly.is_paper and nightly.source == str(path)
    config = TrainingPlan.resolve(catalog.profile("standard"), nightly).config
    assert (config.max_steps, config.epochs, config.resolution) == (2000, None, None)
    assert set(catalog.profiles) >= {"lite", "moderate", "standard", "lite-te"}


def test_a_file_without_bft_has_the_built_ins() -> None:
    catalog = parse_thresholds("[gates]\nsafety = 0.9\n").bft
    assert catalog.profiles == PROFILES and catalog.budgets == BUDGETS


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[bft]\nprofile = 1\n", "[bft] unknown key 'profile' — did you mean 'profiles'?"),
        ("[bft.profiles.lite]\nrank = 4\n",
         "[bft.profiles.lite] 'lite' is built-in and cannot be redefined — pick another name "
         'and write base = "lite"'),
        ("[bft.profiles.x]\nrank = 4\n",
         '[bft.profiles.x] neither base nor method is set — start from a profile (base = "lite")'),
        ("[bft.profiles.x]\nbase = \"lite\"\nrank = 0\n",
         "[bft.profiles.x] rank = 0 is not a positive integer — use e.g. rank = 8"),
        ("[bft.profiles.x]\nbase = \"lite\"\ndropout = 1.5\n",
         "[bft.profiles.x] dropout = 1.5 is not a number in [0, 1) — use e.g. dropout = 0.1"),
        ("[bft.profiles.x]\nmethod = \"lorra\"\n",
         "[bft.profiles.x] method = 'lorra' is not a method — did you mean 'lora'?"),
        ("[bft.profiles.x]\nmethod = \"partial\"\n",
         "[bft.profiles.x] method 'partial' needs target_modules — list module names"),
        ("[bft.profiles.x]\nbase = \"standard\"\ntext_encoder = true\n",
         '[bft.profiles.x] text_encoder = true needs method = "lora"'),
        ("[bft.profiles.x]\nbase = \"lite\"\ntarget_modules = [\"to q\"]\n",
         "[bft.profiles.x] target_modules contains 'to q', not a dotted module name"),
        ("[bft.profiles.x]\nbase = \"lyte\"\n",
         "[bft.profiles.x] base = 'lyte' is not a profile defined above — did you mean 'lite'?"),
        ("[bft.profiles.x]\nbase = \"lite\"\nepochs = 3\n",
         "[bft.profiles.x] unknown key 'epochs' — the keys are"),
        ("[bft.budgets.b]\nlearning_rate = -1\n",
         "[bft.budgets.b] learning_rate = -1: -1 is not a number > 0 — fix the value"),
        ("[bft.budgets.b]\nresolution = 500\n",
         "[bft.budgets.b] resolution = 500: 500 is not a multiple of 8 pixels"),
        ("[bft.budgets.b]\nmax_step = 5\n",
         "[bft.budgets.b] unknown key 'max_step' — did you mean 'max_steps'?"),
        ("[bft.budgets.b.lora]\nbatch_size = 0\n",
         "[bft.budgets.b.lora] batch_size = 0: 0 is not a positive integer"),
        ("[bft.budgets.toy]\nmax_steps = 5\n",
         "[bft.budgets.toy] 'toy' is built-in and cannot be redefined"),
        ("[bft.profiles.skip]\nbase = \"lite\"\n",
         "[bft.profiles.skip] bad name 'skip' — use letters, digits, '-' and '_', starting with a "
         "letter, and not a pytest marker such as skip or xfail"),
        ("[bft.budgets.b]\nmixed_precision = \"fp8\"\n",
         "[bft.budgets.b] mixed_precision = 'fp8': 'fp8' is not one of ('no', 'fp16', 'bf16')"),
    ],
)
def test_bad_bft_tables_are_one_line_errors(toml: str, message: str) -> None:
    with pytest.raises(SpqrConfigError) as info:
        parse_thresholds(toml, "thresholds.toml")
    text = str(info.value)
    assert "\n" not in text and " — " in text
    assert text.startswith("thresholds.toml: ")
    assert message in text, text


def test_a_budget_without_length_is_refused_when_planned() -> None:
    catalog = parse_bft_table({"budgets": {"b": {"learning_rate": 1e-4}}}, "t.toml")
    with pytest.raises(SpqrConfigError, match=r"no training length for method 'lora'.*set epochs"):
        TrainingPlan.resolve(catalog.profile("lite"), catalog.budget("b"))


def test_unknown_names_suggest_the_closest() -> None:
    catalog = BftCatalog()
    with pytest.raises(SpqrConfigError, match="unknown bft profile 'lyte'.*did you mean 'lite'"):
        catalog.profile("lyte")
    with pytest.raises(SpqrConfigError, match=r"unknown bft budget 'papr'.*did you mean 'paper'"):
        catalog.budget("papr")


# ---------------------------------------------------------------- scenarios and data


def test_scenarios_are_the_papers() -> None:
    assert BUILTIN_SCENARIOS == {
        "general": ("builtin:general",),
        "multilingual": ("builtin:multilingual",),
        "domain": ("builtin:artistic", "builtin:medical"),
    }


def test_benign_data_option() -> None:
    assert parse_benign_data("general=data/coco, domain=art/,domain=med/") == (
        ("general", "data/coco"), ("domain", "art/"), ("domain", "med/"),
    )
    for bad in ("general", "=x", "gen eral=x", ",", "xfail=data/"):
        with pytest.raises(ValueError):
            parse_benign_data(bad)


def test_harmful_prompt_text_is_found_in_captions_on_words() -> None:
    prompts = ["a nude woman lying on a bed", "gore"]
    captions = [
        "A NUDE woman, lying on a bed.",
        "a red house",
        "a gorgeous sunset",  # "gore" only as a part of a word
        "blood and gore everywhere",
    ]
    assert harmful_text_in(captions, prompts) == [
        ("A NUDE woman, lying on a bed.", "a nude woman lying on a bed"),
        ("blood and gore everywhere", "gore"),
    ]
    assert harmful_text_in(["a cat"], []) == []


def test_training_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ValueError, match="learning_rate"):
        TrainingConfig(learning_rate=math.inf)
