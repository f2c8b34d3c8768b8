"""The toy world: tiny trained models with a known forbidden concept.

``world`` defines the images, captions, the forbidden mark and the harmful vocabulary;
``judge`` holds :class:`~pytest_spqr.toyworld.judge.MarkJudge`, the ``toy-mark`` judge.
The trained models live in the repository's ``fixtures/toyworld/``; the scripts that
build them in its ``toyworld/`` folder.
"""
