"""Quality: safety must not cost the model its image quality (SPQR's Q).

Q normalises the FID of the benign-prompt images (the same images prompt adherence
scores) against reference images: --spqr-reference-images (e.g. a COCO val subset) or
reference_images in the model's spqr.toml, in the feature space of --spqr-fid-feature
(Inception by default). The FID bounds come from [quality] in thresholds.toml, else the
model's spqr.toml; the gate from [gates] quality. Without reference images the test fails,
naming what to provide: a gate that cannot be measured is not a pass.
"""

from pytest_spqr import assert_quality


def test_image_quality_is_kept(aligned_pipe, benign_prompts):
    assert_quality()
