"""Is ``aligned_pipe.pipe`` still the model that was loaded?

Generated images are cached under the fingerprint of the files the pipeline was loaded
from. A test that changes the pipeline afterwards — loads a LoRA, swaps the scheduler,
replaces a component, casts it to another dtype — would otherwise be served the loaded
model's images (or store its own under the loaded model's key). So the generator takes a
cheap snapshot of the pipeline's state when it gets it and compares before every use:

* per component: its class; for torch modules the number and identity of the parameter
  objects (an adapter adds parameters, a swapped module brings new ones), their dtypes,
  and the names of attached peft adapters (not their device: CPU offload moves them); for a scheduler or any other
  configured component its config; for anything else the object's identity.

In-place edits of parameter values (``param.data.copy_``) are not seen: hashing every
weight before each batch would cost as much as loading. A changed pipeline is refused in
one line (see :func:`check_unchanged`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PipeState = dict[str, Any]


def _module_state(module: Any) -> dict[str, Any]:
    params = list(module.parameters())
    adapters = getattr(module, "peft_config", None)
    return {
        "class": type(module).__name__,
        "parameters": len(params),
        "ids": hash(tuple(id(p) for p in params)),
        "dtypes": sorted({str(p.dtype) for p in params}),
        "adapters": sorted(adapters) if isinstance(adapters, Mapping) else [],
    }


def _component_state(component: Any) -> Any:
    if component is None:
        return None
    if callable(getattr(component, "parameters", None)):
        return _module_state(component)
    config = getattr(component, "config", None)
    if isinstance(config, Mapping):
        return {"class": type(component).__name__,
                "config": json.dumps(dict(config), sort_keys=True, default=str)}
    return {"class": type(component).__name__, "id": id(component)}


def pipe_state(pipe: Any) -> PipeState:
    """The snapshot that :func:`check_unchanged` compares with."""
    components = getattr(pipe, "components", None)
    if not isinstance(components, Mapping):  # not a diffusers pipeline: only its identity
        return {"pipeline": {"class": type(pipe).__name__, "id": id(pipe)}}
    return {name: _component_state(value) for name, value in sorted(components.items())}


def changed_parts(before: PipeState, now: PipeState) -> list[str]:
    """What differs, in words (``scheduler: DDIMScheduler → EulerDiscreteScheduler``)."""
    parts = []
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name), now.get(name)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            if old.get("class") != new.get("class"):
                parts.append(f"{name}: {old['class']} → {new['class']}")
            elif old.get("adapters") != new.get("adapters"):
                parts.append(f"{name}: adapters {new.get('adapters')} attached")
            elif "parameters" in old and old["parameters"] != new["parameters"]:
                parts.append(f"{name}: {old['parameters']} → {new['parameters']} parameter tensors")
            else:
                what = next(k for k in new if old.get(k) != new.get(k))
                parts.append(f"{name}: {what} changed")
        else:
            parts.append(f"{name}: {'added' if old is None else 'removed' if new is None else 'replaced'}")
    return parts


def check_unchanged(before: PipeState, pipe: Any, label: str) -> None:
    """Raise a one-line SpqrConfigError when ``pipe`` is no longer in state ``before``."""
    from pytest_spqr.core.errors import SpqrConfigError

    parts = changed_parts(before, pipe_state(pipe))
    if parts:
        raise SpqrConfigError(
            f"{label}: the pipeline was changed after loading ({'; '.join(parts)}) — its images "
            "would be cached as the loaded model's: build a separate model folder and pass it "
            "with --spqr-model, or pass a fine-tune with --spqr-finetuned"
        )
