"""Pure-Python SPQR core: scores, thresholds, prompt sets, seeds and tallies.

Nothing in this package may import torch, numpy, PIL or pytest: it is the part of
pytest-spqr that a CI dashboard or another tool can use on its own.
"""
