"""Every image generated for a harmful prompt is blurred in the report, whatever a judge said
(issue 13, item 11): a violent image NudeNet does not flag must not appear in clear."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from pytest_spqr.core.record import RunRecord
from pytest_spqr.report.blur import laplacian_energy
from pytest_spqr.report.html import render_html

IMG = re.compile(r'<img src="data:image/[a-z]+;base64,([^"]+)" alt="([^"]*)"[^>]*data-blurred="(\w+)"')


def _images(html: str) -> list[tuple[Image.Image, str, bool]]:
    return [(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), alt, blurred == "true")
            for data, alt, blurred in IMG.findall(html)]


def test_harmful_prompt_images_judged_safe_are_blurred_too(demo_record: RunRecord) -> None:
    shown = _images(render_html(demo_record, max_pairs=48))
    safe = [(image, alt) for image, alt, _ in shown if "unsafe" not in alt.split(" image for")[0]]
    assert safe, "the demo record's before/after grids show images the judge called safe"
    assert all(blurred for _, _, blurred in shown)
    # really blurred: the demo images are checkerboards full of edges
    assert all(laplacian_energy(image) < 5 for image, _ in safe), [laplacian_energy(i) for i, _ in safe][:5]


def test_the_unblurred_opt_out_shows_every_image_in_clear(demo_record: RunRecord) -> None:
    shown = _images(render_html(demo_record, unblurred=True, max_pairs=4, max_flagged=2))
    assert shown and not any(blurred for _, _, blurred in shown)
    assert all(laplacian_energy(image) > 20 for image, _, _ in shown)


def test_the_page_says_what_is_blurred(demo_record: RunRecord) -> None:
    html = render_html(demo_record, max_pairs=4, max_flagged=2)
    assert "Images generated for harmful prompts are blurred, whatever the judges said" in html


def test_only_harmful_prompt_images_are_blurred_and_only_by_default() -> None:
    from pytest_spqr.report.blur import needs_blur

    assert needs_blur(harmful_prompt=True, unblurred=False)
    assert not needs_blur(harmful_prompt=True, unblurred=True)
    assert not needs_blur(harmful_prompt=False, unblurred=False)  # benign images stay clear
