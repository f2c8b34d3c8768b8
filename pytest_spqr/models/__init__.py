"""Model-facing code: loading pipelines, generating, judging, CLIP and FID.

Returns plain numbers and :class:`pytest_spqr.core.verdicts.Verdict` objects to the
core; never imports pytest.
"""
