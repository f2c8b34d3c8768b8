"""Find judges by name and run a panel of them over generated images.

Judges come from the entry-point group ``pytest_spqr.judges``. An image is unsafe when
any judge of the panel flags it (the paper's combined harmfulness h). A judge that
raises or answers with anything but one Verdict per image stops the evaluation with a
:class:`JudgeError` that counts the images: never a silent "safe". So does an image no
judge can honestly see (NaN/inf pixels, one flat colour, smaller than the judge's
``min_side``): see :mod:`pytest_spqr.models.degenerate`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from pytest_spqr.core.errors import SpqrConfigError
from pytest_spqr.core.verdicts import (
    JudgeError,
    UnreadableVerdictsError,
    Verdict,
    validate_verdicts,
)
from pytest_spqr.models.degenerate import ImageFacts, refuse_degenerate
from pytest_spqr.models.generation import ProgressFactory, _no_progress
from pytest_spqr.models.judge_identity import judge_identity, record_build
from pytest_spqr.models.judge_settings import bad_setting_error
from pytest_spqr.models.judges.base import Judge
from pytest_spqr.models.recheck import Recheck, describe_disagreement, recheck_failure
from pytest_spqr.models.store import Store, digest

GROUP = "pytest_spqr.judges"
__all__ = ["JudgePanel", "build_judge", "judge_identity", "load_judges"]


def available_judges() -> dict[str, Any]:
    """Entry points of every installed judge, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def check_judge_names(names: Sequence[str], where: str = "--spqr-judges") -> dict[str, Any]:
    """The entry points of the named judges, or a one-line error with a did-you-mean."""
    installed = available_judges()
    for name in names:
        if name not in installed:
            close = difflib.get_close_matches(name, list(installed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "install the package that provides it"
            raise SpqrConfigError(
                f"{where}: unknown judge {name!r} (installed: "
                f"{', '.join(sorted(installed)) or 'none'}) — {hint}"
            )
    return {name: installed[name] for name in names}


def _factory_kwargs(factory: Callable[..., Any], settings: Mapping[str, Any], device: str) -> dict:
    kwargs = dict(settings)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return kwargs
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "device" in params or accepts_any:
        kwargs.setdefault("device", device)
    return kwargs


def load_judges(
    names: Sequence[str],
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    device: str = "cpu",
    origins: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Judge]:
    """Instantiate the named judges with their settings, or raise a one-line error
    (naming the file of a refused setting: ``origins`` maps judge → key → file)."""
    installed = check_judge_names(names)
    return [build_judge(name, installed[name].load(), (settings or {}).get(name, {}), device=device,
                        origins=(origins or {}).get(name, {}))
            for name in names]


def build_judge(name: str, factory: Callable[..., Any], settings: Mapping[str, Any], *,
                device: str = "cpu", origins: Mapping[str, str] | None = None) -> Judge:
    """``factory(**settings)`` (plus ``device=`` when it accepts one), carrying the keywords
    it was built with, so that its verdicts are cached per setting even when the judge
    itself exposes none (see :mod:`pytest_spqr.models.judge_identity`)."""
    kwargs = _factory_kwargs(factory, settings, device)
    try:
        judge = factory(**kwargs)
    except SpqrConfigError:
        raise
    except (TypeError, ValueError) as exc:
        if not settings:
            raise
        # a value the judge refuses (a threshold out of range): one line naming file and key
        raise bad_setting_error(name, settings, origins or {}, exc) from None
    if not isinstance(judge, Judge):
        raise SpqrConfigError(
            f"judge {name!r}: {type(judge).__name__} does not implement the Judge protocol "
            "(name, version, judge(images)) — see pytest_spqr.models.judges.base"
        )
    return record_build(judge, kwargs)


def _judge_here(judge: Judge, batches: list[list[tuple[str, Callable[[], Any]]]]) -> Iterator[tuple[list[Any], Any]]:
    """Each batch with the judge's answer, or the exception it raised (the panel decides)."""
    for batch in batches:
        images = [load() for _, load in batch]
        try:
            yield batch, judge.judge(images)
        except Exception as exc:  # reported by the panel with counts
            yield batch, exc


def _verdict_payload(verdict: Verdict) -> dict[str, Any]:
    return {"unsafe": verdict.unsafe, "category": verdict.category, "score": verdict.score,
            "labels": list(verdict.labels)}


def _verdict_from(payload: Any) -> Verdict | None:
    try:
        return Verdict(bool(payload["unsafe"]), payload["category"], float(payload["score"]),
                       tuple(payload["labels"]))
    except (KeyError, TypeError, ValueError):
        return None


class JudgePanel:
    """Runs every judge over images once, remembering verdicts by image key.

    With a ``store``, verdicts persist across runs, keyed by the image's key (its content
    hash: see :meth:`Evaluator.safety_of`) and the judge's identity: name, version, build
    keywords, settings and weights' digest (see :func:`judge_identity`).
    """

    def __init__(self, judges: Sequence[Judge], batch_size: int = 16,
                 store: Store | None = None, recheck: Recheck | None = None) -> None:
        if not judges:
            raise SpqrConfigError("--spqr-judges: no judge selected — name at least one judge")
        names = [getattr(judge, "name", None) for judge in judges]
        twice = next((n for k, n in enumerate(names) if n in names[:k]), None)
        if twice is not None:  # their verdicts would be kept as one judge's: one could be lost
            raise SpqrConfigError(
                f"spqr_judges: two judges are named {twice!r} — give each judge its own name "
                "(verdicts are counted and cached per judge name)"
            )
        self.judges = list(judges)
        self.batch_size = batch_size
        self.store = store
        self.judged = 0
        """Images this panel's judges actually looked at (not reused)."""
        self.judged_remote = 0
        """Of those, images judged by Ray actors (see :attr:`remote`)."""
        self._memo: dict[tuple[str, str], Verdict] = {}
        self.identities = {id(j): judge_identity(j) for j in self.judges}
        """Each judge's identity, taken once (it hashes weights): the key its verdicts are
        stored and looked up under for the panel's life."""
        self.recheck = recheck
        """Re-judge a seeded sample of the verdicts read from disk (``--spqr-recheck``)."""
        self._from_disk: set[tuple[str, str]] = set()
        self.rechecked = 0
        """Cached verdicts this panel judged again and compared."""
        self._facts: dict[str, ImageFacts] = {}
        """Size, NaN/inf flag and flatness of each image checked, by image key."""
        self.progress: ProgressFactory = _no_progress
        """Shows judging as it goes: a bar on a terminal, a line when done (set by the session)."""
        self.remote: Callable[[Judge], Callable[[list[Any]], Iterator[tuple[list[Any], Any]]] | None] | None = None
        """For a judge, a function that judges batches elsewhere (Ray actors, see
        :mod:`pytest_spqr.models.ray_backend`), yielding ``(batch, verdicts or exception)``
        as they finish; None for judges that stay in this process."""

    def _recall(self, ident: str, key: str) -> bool:
        if (ident, key) in self._memo:
            return True
        if self.store is not None:
            verdict = _verdict_from(self.store.get_json(f"verdicts/{digest(ident)[:16]}", key))
            if verdict is not None:
                self._memo[(ident, key)] = verdict
                self._from_disk.add((ident, key))
                return True
        return False

    def _remember(self, ident: str, key: str, verdict: Verdict) -> None:
        self._memo[(ident, key)] = verdict
        if self.store is not None:
            self.store.put_json(f"verdicts/{digest(ident)[:16]}", key, _verdict_payload(verdict))

    def _pick_rechecks(self, ident: str, keyed_images: Sequence[tuple[str, Any]]) -> dict[str, Verdict]:
        """The cached verdicts (read from disk, not made in this run) to judge again."""
        if self.recheck is None:
            return {}
        cached = sorted({k for k, _ in keyed_images if (ident, k) in self._from_disk})
        picked = self.recheck.pick(ident, cached)
        for key in picked:
            self._from_disk.discard((ident, key))  # each is re-judged once
        self.rechecked += len(picked)
        return {key: self._memo[(ident, key)] for key in picked}

    def _with_progress(self, name: str, total: int,
                       answers: Iterator[tuple[list[Any], Any]]) -> Iterator[tuple[list[Any], Any]]:
        """``answers``, advancing :attr:`progress` as each batch comes back."""
        if not total:
            yield from answers
            return
        with self.progress(total, f"spqr: judging {total} images ({name})") as advance:
            for batch, raw in answers:
                yield batch, raw
                advance(len(batch))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.judges)

    def judge(self, keyed_images: Sequence[tuple[str, Callable[[], Any]]]) -> list[dict[str, Verdict]]:
        """Verdicts by judge name for each ``(image_key, load_image)`` pair, in order."""
        for judge in self.judges:
            ident = self.identities[id(judge)]
            todo = [(k, load) for k, load in keyed_images if not self._recall(ident, k)]
            seen: set[str] = set()
            unique: list[tuple[str, Callable[[], Any]]] = []
            for key, load in todo:  # the same image twice is judged once
                if key not in seen:
                    seen.add(key)
                    unique.append((key, load))
            todo = unique
            rechecks = self._pick_rechecks(ident, keyed_images)  # cached verdicts to judge again
            for key, load in keyed_images:
                if key in rechecks and key not in seen:
                    seen.add(key)
                    todo.append((key, load))
            disagree: list[str] = []
            refuse_degenerate(judge, todo, self._facts)  # NaN, flat, too small: never "safe"
            unreadable: list[UnreadableVerdictsError] = []  # batches the judge could not read
            batches = [todo[start : start + self.batch_size]
                       for start in range(0, len(todo), self.batch_size)]
            remote = self.remote(judge) if self.remote is not None else None
            answers = remote(batches) if remote is not None else _judge_here(judge, batches)
            answers = self._with_progress(judge.name, len(todo), answers)
            for done, (batch, raw) in enumerate(answers):
                if isinstance(raw, UnreadableVerdictsError):
                    unreadable.append(raw)  # keep going: the message counts every image
                    continue
                if isinstance(raw, JudgeError):
                    raise raw
                if isinstance(raw, Exception):
                    unjudged = len(todo) - done * self.batch_size
                    raise JudgeError(
                        f"judge {judge.name!r} raised {type(raw).__name__}: {raw} on a batch of "
                        f"{len(batch)} images ({unjudged} of {len(todo)} images unjudged)"
                    ) from raw
                verdicts = validate_verdicts(judge.name, raw, len(batch))
                self.judged += len(batch)
                if remote is not None:
                    self.judged_remote += len(batch)
                for (key, _), verdict in zip(batch, verdicts, strict=True):
                    if key in rechecks:
                        disagree += describe_disagreement(key, rechecks[key], verdict)
                    self._remember(ident, key, verdict)
            if unreadable:
                count = sum(exc.unreadable for exc in unreadable)
                raise JudgeError(
                    f"judge {judge.name!r}: {count} of {len(todo)} images got an answer that "
                    f"could not be read as a verdict (never counted as safe); first batch: "
                    f"{unreadable[0]}"
                ) from unreadable[0]
            if disagree:
                raise JudgeError(recheck_failure(judge.name, disagree, len(rechecks), self.store))
        idents = [(j.name, self.identities[id(j)]) for j in self.judges]
        return [{name: self._memo[(ident, key)] for name, ident in idents} for key, _ in keyed_images]
