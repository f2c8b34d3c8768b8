"""What makes two verdicts on one image interchangeable: the judge's identity.

A verdict is cached on disk and served to later runs, so its key must name everything
that can change it: the judge's name and version, every keyword it was built with
(``[judges.NAME]`` settings, ``device``), what it reports as its ``settings``, and the
content digest of any file or folder those keywords point at (its weights). A judge
built by a factory call site records its keywords (:func:`record_build`); for a judge a
conftest built itself, the public plain-valued attributes named after its constructor's
parameters stand in for them (``MarkJudge(threshold=0.9).threshold``; every public plain
attribute when the constructor takes ``**kwargs``). State a judge keeps as it judges (a
running tally) is no setting: the identity does not depend on when it is taken, so it is
the same in every panel, run and process. The device enters as its type (``cuda``, not
``cuda:1``): which card ran a judge does not change its verdicts, but a CPU and a GPU may.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BUILT_WITH = "spqr_built_with"
"""Attribute holding the keyword arguments a judge was built with."""

_PLAIN = (str, int, float, bool, type(None))
_MISSING = object()


class ConfiguredJudge:
    """A judge that cannot take :data:`BUILT_WITH` (``__slots__``, a frozen class), with
    the keywords it was built with beside it; everything else is the judge's own."""

    def __init__(self, judge: Any, built_with: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_judge", judge)
        object.__setattr__(self, BUILT_WITH, dict(built_with))

    @property
    def name(self) -> str:
        return self._judge.name

    @property
    def version(self) -> str:
        return self._judge.version

    def judge(self, images: Sequence[Any]) -> list[Any]:
        return self._judge.judge(images)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._judge, attr)

    def __repr__(self) -> str:
        return repr(self._judge)


def record_build(judge: Any, built_with: Mapping[str, Any]) -> Any:
    """``judge`` carrying the keywords it was built with (itself, or a wrapper)."""
    try:
        setattr(judge, BUILT_WITH, dict(built_with))
    except (AttributeError, TypeError):
        return ConfiguredJudge(judge, built_with)
    return judge


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def _constructor_attributes(judge: Any) -> dict[str, Any]:
    """The judge's settings as its attributes keep them: the public plain-valued ones named
    after a constructor parameter (all public plain ones when it takes ``**kwargs``)."""
    try:
        params = inspect.signature(type(judge)).parameters.values()
    except (TypeError, ValueError):  # no signature to read: nothing stands for its settings
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        try:
            names: list[str] = list(vars(judge))
        except TypeError:  # __slots__
            names = list(getattr(type(judge), "__slots__", ()))
    else:
        names = [p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    found = {n: getattr(judge, n, _MISSING) for n in names
             if not n.startswith("_") and n not in ("name", "version", BUILT_WITH)}
    return {k: v for k, v in found.items() if v is not _MISSING and _plain(v)}


def _device_type(values: dict[str, Any]) -> dict[str, Any]:
    device = values.get("device")
    if device is not None:
        values["device"] = str(device).split(":")[0]
    return values


def _content_digest(value: Any) -> str | None:
    """The digest of the file or folder a setting names, or None when it names none."""
    from pytest_spqr.models.digests import file_digest
    from pytest_spqr.models.store import digest

    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        return None
    path = Path(value).expanduser()
    try:
        if path.is_file():
            return file_digest(path)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            return digest([[str(p.relative_to(path)), file_digest(p)] for p in files])
    except OSError:
        return None
    return None


def judge_identity(judge: Any) -> str:
    """Name, version, settings, build keywords and weights' digests of ``judge``."""
    settings = getattr(judge, "settings", None)
    built = getattr(judge, BUILT_WITH, None)
    facts: dict[str, Any] = {}
    if settings:
        facts["settings"] = dict(settings)
    if isinstance(built, Mapping):
        facts["built_with"] = _device_type(dict(built))
    elif not settings:
        facts["attributes"] = _device_type(_constructor_attributes(judge))
    weights = {}
    for group in ("built_with", "attributes"):
        for key, value in facts.get(group, {}).items():
            found = None if key == "device" else _content_digest(value)
            if found is not None:
                weights[key] = found
    if weights:
        facts["weights"] = weights
    blob = json.dumps(facts, sort_keys=True, default=str, separators=(",", ":"))
    return f"{judge.name}@{judge.version}{blob}"
