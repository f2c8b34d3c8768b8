"""Judge settings (``[judges.X]`` tables): checked at start-up against the judge factory's
signature, and merged so that the gate owner decides.

A ``[judges.X]`` table is keyword arguments for the judge's factory (its class). Before any
test runs, each key is checked against ``inspect.signature(factory)``: an unknown key is a
one-line error with a did-you-mean, a value of the wrong type (a string for a ``float``
threshold) names the file and key. Nothing is instantiated, so no weights are loaded.
A value the factory itself refuses later (a threshold outside its range) is reported the
same way by :func:`bad_setting_error`.

The gate file's table wins key by key over the model's spqr.toml; a model's key that would
change a setting is refused unless the gate owner opted in (``[judges] from_model = true``).
A model's key equal to the factory's default changes nothing and is dropped.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError, first_line
from pytest_spqr.core.evaluation import show

OPT_IN_HINT = ("or let the model fill it in with [judges] from_model = true in thresholds.toml "
               "(or --spqr-judges-from-model)")


@dataclass(frozen=True)
class JudgeSettings:
    """Each judge's keyword settings, where each key came from, and what the model's
    spqr.toml filled in or had overridden (for the header)."""

    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[str, dict[str, str]] = field(default_factory=dict)
    """Judge → key → the file that set it."""
    from_model: tuple[str, ...] = ()
    """``judges.X.key`` filled in by the model's spqr.toml (only with the opt-in)."""
    overridden: tuple[str, ...] = ()
    """``judges.X.key (thresholds.toml)``: set by the model, overridden by the gate owner."""


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The factory's keyword parameters with evaluated annotations; ``None`` when it takes
    ``**kwargs`` or has no readable signature (then anything goes until it is called)."""
    try:
        signature = inspect.signature(factory, eval_str=True)
    except Exception:  # an annotation that does not evaluate here
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):
            return None
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {name: p for name, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether a TOML value fits an annotation (unknown annotations accept anything)."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return False
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool or annotation is str:
        return isinstance(value, annotation)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return isinstance(value, str)
    container = origin or annotation
    if container in (list, tuple, Sequence, typing.Sequence) or container is Sequence:
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return len(args) != 1 or all(_accepts(args[0], item) for item in value)
    return True


def _type_name(annotation: Any) -> str:
    """``float``, ``str or Path``, ``an array of str``: the annotation in TOML terms."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args if arg is not type(None))
    if origin in (list, tuple, Sequence):
        items = [arg for arg in args if arg is not Ellipsis]
        return f"an array of {_type_name(items[0])}" if len(items) == 1 else "an array"
    return str(getattr(annotation, "__name__", annotation))


def check_settings(name: str, factory: Callable[..., Any], table: Mapping[str, Any],
                   source: str) -> None:
    """Every key of ``[judges.NAME]`` in ``source`` is a keyword the factory takes, with a
    value of the annotated type; else a one-line :class:`SpqrConfigError`."""
    params = _parameters(factory)
    if params is None:
        return
    where = f"{source}: [judges.{name}]"
    for key, value in table.items():
        if key not in params:
            accepted = ", ".join(k for k in params if k != "device") or "no settings"
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f"did you mean {close[0]!r}? ({name} accepts: {accepted})" if close else (
                f"{name} accepts: {accepted}")
            raise SpqrConfigError(f"{where} unknown key {key!r} — {hint}")
        annotation = params[key].annotation
        if not _accepts(annotation, value):
            raise SpqrConfigError(
                f"{where} {key} = {show(value)} is {_kind(value)}, but {name} expects "
                f"{_type_name(annotation)} — fix the value"
            )


def _same(value: Any, default: Any) -> bool:
    """A TOML value equal to a factory default (arrays compared as tuples, booleans only
    with booleans)."""
    if isinstance(value, bool) != isinstance(default, bool):
        return False
    value = tuple(value) if isinstance(value, list) else value
    default = tuple(default) if isinstance(default, list) else default
    try:
        return bool(value == default)
    except Exception:  # values that do not compare are not the same
        return False


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    kinds = {str: "a string", list: "an array", tuple: "an array", int: "an integer",
             float: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def resolve_judge_settings(
    judges: Sequence[str],
    factories: Mapping[str, Callable[..., Any]],
    gate: Mapping[str, Mapping[str, Any]], gate_source: str | None,
    model: Mapping[str, Mapping[str, Any]], model_source: str | None,
    *, from_model_allowed: bool,
) -> JudgeSettings:
    """Merge ``[judges.X]`` of the gate file (``gate``) over the model's (``model``) for the
    judges in use, checking both against each factory; see the module docstring."""
    settings: dict[str, dict[str, Any]] = {}
    all_origins: dict[str, dict[str, str]] = {}
    filled: list[str] = []
    overridden: list[str] = []
    for name in judges:
        factory = factories[name]
        gate_table = dict(gate.get(name, {}))
        model_table = dict(model.get(name, {}))
        if gate_table:
            check_settings(name, factory, gate_table, gate_source or "thresholds.toml")
        if model_table:
            check_settings(name, factory, model_table, model_source or "spqr.toml")
        params = _parameters(factory) or {}
        merged: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for key, value in model_table.items():
            if key in gate_table:
                overridden.append(f"judges.{name}.{key} (thresholds.toml)")
                continue
            default = params[key].default if key in params else inspect.Parameter.empty
            if default is not inspect.Parameter.empty and _same(value, default):
                continue  # repeats the judge's own default: changes nothing
            if not from_model_allowed:
                raise SpqrConfigError(
                    f"{model_source}: [judges.{name}] {key} = {show(value)}: a model may not set "
                    f"the settings of the judges that gate it — set {key} in thresholds.toml's "
                    f"[judges.{name}], {OPT_IN_HINT}"
                )
            merged[key], origins[key] = value, str(model_source)
            filled.append(f"judges.{name}.{key}")
        for key, value in gate_table.items():
            merged[key], origins[key] = value, str(gate_source)
        settings[name], all_origins[name] = merged, origins
    return JudgeSettings(settings, all_origins, tuple(filled), tuple(overridden))


def bad_setting_error(name: str, settings: Mapping[str, Any], origins: Mapping[str, str],
                      exc: BaseException) -> SpqrConfigError:
    """The judge's factory refused its settings: one line naming the file and the key (the
    keys its message mentions, else every key it was given)."""
    message = first_line(exc)
    keys = [key for key in settings if key in message] or list(settings)
    source = next((origins[key] for key in keys if key in origins), None)
    given = ", ".join(f"{key} = {show(settings[key])}" for key in keys)
    where = f"{source}: [judges.{name}]" if source else f"[judges.{name}]"
    return SpqrConfigError(f"{where} {given}: {message} — fix the value")
