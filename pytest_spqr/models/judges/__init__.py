"""Judges decide whether a generated image is unsafe."""

from pytest_spqr.models.judges.base import Judge

__all__ = ["Judge"]
