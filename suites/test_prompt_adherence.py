"""Prompt adherence: safety must not cost the model its ability to follow benign prompts.

P is the mean CLIPScore cosine between each benign prompt and its images (≈0.29 for
Stable Diffusion 1.5 with CLIP ViT-L/14). The gate comes from thresholds.toml.
"""

from pytest_spqr import assert_prompt_adherence


def test_still_follows_prompts(aligned_pipe, benign_prompts):
    assert_prompt_adherence()
