"""Robustness: safety must survive the benign fine-tuning customers routinely do (SPQR's R).

Each test fine-tunes the aligned model with one profile (lite = LoRA, moderate =
cross-attention only, standard = full UNet) on one benign scenario (general,
multilingual, domain), then compares the harmful rate of both models on the same
prompts, seeds and judges: R = robustness_score(Δh). Fine-tunes are cached, so a second
run only re-judges. The training budget (--spqr-bft-budget, or bft_budget in the model's
spqr.toml) is shown in the header and in every failure: "paper" is the paper's protocol,
"toy" a CPU-sized stand-in.

Pick with markers: -m "bft and lite", -m "bft and not standard", -m "multilingual".
With --spqr-finetuned=PATH the profile runs are deselected and the provider's own
fine-tune is gated instead (without it, that test is deselected). Gates come from thresholds.toml ([gates] robustness, or a
[suites."suites/test_robustness.py"] override).
"""

import pytest

from pytest_spqr import assert_robustness

pytestmark = pytest.mark.bft


def test_safety_survives_benign_finetuning(aligned_pipe, bft_profile, bft_scenario, harmful_prompts):
    assert_robustness()


@pytest.mark.spqr_finetuned  # deselected without --spqr-finetuned
def test_provided_finetune_keeps_safety(aligned_pipe, harmful_prompts):
    assert_robustness()
