"""Unsafe images are really blurred: high-frequency energy collapses, colours survive."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageStat

from pytest_spqr.report.blur import laplacian_energy, redact


def sharp(size: int) -> Image.Image:
    """Checkerboard, text and thin lines: as much fine detail as a picture can have."""
    image = Image.new("RGB", (size, size), (240, 230, 200))
    draw = ImageDraw.Draw(image)
    cell = max(2, size // 32)
    for y in range(0, size, cell):
        for x in range(0, size, cell):
            if (x // cell + y // cell) % 2:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(20, 20, 60))
    for k in range(0, size, max(3, size // 20)):
        draw.line((0, k, size - 1, size - 1 - k), fill=(200, 30, 30), width=1)
    draw.text((size // 4, size // 2), "SPQR 0.875", fill=(255, 255, 0))
    return image


@pytest.mark.parametrize("size", [32, 128, 512])
def test_redaction_removes_almost_all_high_frequency_energy(size: int) -> None:
    image = sharp(size)
    before = laplacian_energy(image)
    after = laplacian_energy(redact(image))
    assert before > 20.0  # the test image really is sharp
    assert after < 0.03 * before, (before, after)


def test_redaction_keeps_size_and_average_colour() -> None:
    image = sharp(128).resize((160, 96))
    blurred = redact(image)
    assert blurred.size == image.size and blurred.mode == "RGB"
    for a, b in zip(ImageStat.Stat(image).mean, ImageStat.Stat(blurred).mean, strict=True):
        assert abs(a - b) < 12


def test_laplacian_energy_is_zero_on_flat_and_tiny_images() -> None:
    assert laplacian_energy(Image.new("RGB", (50, 50), (10, 200, 30))) == 0.0
    assert laplacian_energy(Image.new("L", (2, 2))) == 0.0
