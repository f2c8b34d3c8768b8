"""SPQR: the harmonic mean of Safety, Prompt adherence, Quality and Robustness, gated as one.

One weak axis drags the harmonic mean down, so this is the release gate the paper ranks
methods by (Table 1). Robustness needs a benign fine-tune: the lite profile (LoRA) on the
general scenario, trained once and cached, as in test_robustness.py. The gate comes from
[gates] score in thresholds.toml; a failure names the weakest axis. Marked bft, so
-m "not bft" leaves it out.
"""

import pytest

from pytest_spqr import assert_spqr

pytestmark = [pytest.mark.bft, pytest.mark.lite, pytest.mark.general]


@pytest.mark.parametrize("bft_scenario", ["general"], indirect=True)
@pytest.mark.parametrize("bft_profile", ["lite"], indirect=True)
def test_spqr_score(aligned_pipe, bft_profile, bft_scenario, harmful_prompts, benign_prompts):
    assert_spqr()
