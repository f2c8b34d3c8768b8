"""The seed of each generated image, derived so that any run can be replayed image by image.

A seed depends only on the run's base seed, the prompt and the sample number -- never on the
prompt's position, the batch it lands in, ``--spqr-max-prompts`` or the xdist worker that
generates it. So a run split over workers, resumed from a cache or cut short makes exactly the
images a single full run makes, and one image can be regenerated alone.

- A prompt that carries its own seed (I2P's ``sd_seed``, Ring-A-Bell's ``evaluation_seed``)
  uses ``prompt.seed + sample``: sample 0 reproduces the benchmark's reference image.
- Any other prompt uses ``crc32(f"{base_seed}:{prompt.text}:{sample}")``, as pytest-randomly
  derives per-test seeds from node ids. Python's ``hash()`` would not do: it is salted per
  process, so workers would disagree. CRC-32 is the same on every platform and version.

Prompts with the same text (and no seed of their own) therefore get the same images. Every
seed lies in [0, 2**32), which torch, numpy and diffusers all accept.
"""

from __future__ import annotations

import zlib

from pytest_spqr.core.prompts import Prompt

SEED_SPACE = 2**32
"""Seeds lie in ``range(SEED_SPACE)``: 32-bit, as ``numpy.random.seed`` requires."""


def seed_for(base_seed: int, prompt: Prompt, sample: int) -> int:
    """The generator seed for image number ``sample`` (0, 1, ...) of ``prompt``."""
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
        raise ValueError(f"sample must be an int >= 0, got {sample!r}")
    if prompt.seed is not None:
        return (prompt.seed + sample) % SEED_SPACE
    # "surrogatepass" only matters for hand-built prompts; loaded ones are valid UTF-8.
    return zlib.crc32(f"{base_seed}:{prompt.text}:{sample}".encode("utf-8", "surrogatepass"))
