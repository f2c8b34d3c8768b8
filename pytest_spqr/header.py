"""The run header: the ``spqr:`` lines pytest prints under its own, saying what this run
measures and with what (model, settings, judges, prompts, gates, BFT) — built from the
resolved settings (:mod:`pytest_spqr.settings`) alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_spqr.settings import SAFETY_CHECKER_NOTE, SpqrSettings


def header_lines(s: SpqrSettings, notes: Sequence[str] = ()) -> list[str]:
    """The header; ``notes`` are what was found about the prompts (their truncation)."""
    if s.model is None:
        return ["spqr: no --spqr-model given (tests that need aligned_pipe cannot run)"]
    run = s.run
    src = s.sources
    return [
        f"spqr: model={s.model.spec} seed={run.seed} device={run.device} dtype={run.dtype}"
        if len(s.models) < 2 else
        f"spqr: models={', '.join(m.spec for m in s.models)} (aligned_pipe runs with each) "
        f"seed={run.seed} device={run.device} dtype={run.dtype}",
        *(f"spqr: note: {note}" for note in (*s.model_notes, *notes)),
        f"spqr: steps={run.steps} guidance={run.guidance} samples={run.samples} "
        f"resolution={run.resolution or 'native'} batch={run.batch_size}",
        f"spqr: judges={'+'.join(s.judges)} ({src.get('judges')}) clip={s.clip} "
        f"prompts={s.harmful_prompts.name} ({_distinct(s.harmful_prompts)}) "
        f"benign={s.benign_prompts.name} ({_distinct(s.benign_prompts)})",
        *_ownership_lines(s),
        f"spqr: thresholds={s.thresholds.source or 'none (no gates)'} cache={run.cache_dir}"
        + ("" if s.executor == "local" else
           f" executor=ray (address={s.ray_address or 'local'}, actors/model="
           f"{s.ray_actors or 'auto'})"),
        f"spqr: gates read through {s.statistics.describe()}; inconclusive → "
        f"{s.statistics.inconclusive or s.thresholds.inconclusive}"
        + ("" if s.statistics.inconclusive else " (thresholds.toml; suites may override)"),
        f"spqr: {SAFETY_CHECKER_NOTE}",
        f"spqr: {s.quality.describe()}",
        *_bft_lines(s),
    ]


def _ownership_lines(s: SpqrSettings) -> list[str]:
    """Which settings the model under test's own spqr.toml decided, and which of its
    keys the gate owner overrode (see :mod:`pytest_spqr.gate_owner`)."""
    if s.model_defaults is None:
        return []
    lines = []
    if s.from_model:
        lines.append(f"spqr: from the model's spqr.toml ({s.model_defaults.source}): "
                     f"{', '.join(s.from_model)}")
    if s.overridden_in_model:
        lines.append("spqr: the model's spqr.toml is overridden by the gate owner on: "
                     f"{', '.join(s.overridden_in_model)}")
    return lines


def _bft_lines(s: SpqrSettings) -> list[str]:
    bft = s.bft
    budget = bft.budget
    data = ", ".join(
        f"{scenario}={'+'.join(bft.data_for(scenario))}" for scenario in bft.scenarios
    )
    lines = [
        f"spqr: bft budget={budget.name} ({bft.sources.get('budget', 'default')})"
        + ("" if budget.is_paper else ": NOT the paper's protocol")
        + f" — {budget.description}",
        f"spqr: bft profiles={','.join(bft.profiles)} scenarios: {data}",
    ]
    if bft.finetuned is not None:
        lines.append(
            f"spqr: finetuned={bft.finetuned.spec} ({bft.finetuned.description}): robustness "
            "compares the aligned model with it; bft_profile tests are deselected unless "
            "--spqr-bft-profile is given"
        )
    return lines


def _distinct(prompts: Any) -> str:
    """``56``, or ``1; 55 repeats counted once`` for a set that repeated prompts."""
    dropped = getattr(prompts, "duplicates_dropped", 0)
    return f"{len(prompts)}; {dropped} repeats counted once" if dropped else str(len(prompts))
