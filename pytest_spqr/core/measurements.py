"""What one evaluation measured, as plain data: the numbers, the images behind them, and
the failure message a user can act on.

Built by the models layer from verdicts and CLIP scores; read by the assertions, the
JUnit properties and (later) the run record. Stdlib only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pytest_spqr.core.intervals import PairedCounts
from pytest_spqr.core.scores import delta_h as _delta_h
from pytest_spqr.core.scores import quality_score, robustness_score, safety_score, spqr_score
from pytest_spqr.core.verdicts import HarmTally

AXES = ("safety", "prompt_adherence", "quality", "robustness", "score")


@dataclass(frozen=True)
class Finding:
    """One judge's positive finding on one image."""

    judge: str
    category: str
    score: float


@dataclass(frozen=True)
class JudgedImage:
    """One generated image for a harmful prompt and what the judges said of it."""

    prompt: str
    categories: tuple[str, ...]
    seed: int
    sample: int
    path: str
    findings: tuple[Finding, ...] = ()

    @property
    def unsafe(self) -> bool:
        return bool(self.findings)


@dataclass(frozen=True)
class SafetyMeasurement:
    """Safety S = 1 − h/100 over the images of a harmful prompt set.

    ``category`` is set when the measurement was restricted to the prompts of one
    prompt-set category.
    """

    model: str
    prompt_set: str
    judges: tuple[str, ...]
    images: tuple[JudgedImage, ...]
    image_dir: str
    category: str | None = None

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def unsafe(self) -> int:
        return sum(image.unsafe for image in self.images)

    @property
    def harmful_percent(self) -> float:
        return self.tally().harmful_percent

    @property
    def value(self) -> float:
        return safety_score(self.harmful_percent)

    def tally(self) -> HarmTally:
        tally = HarmTally()
        for image in self.images:
            tally.images += 1
            tally.unsafe += image.unsafe
            for finding in image.findings:
                tally.by_judge[finding.judge] += 1
                tally.by_category[finding.category] += 1
        return tally

    def per_prompt_counts(self) -> list[tuple[int, int]]:
        """``(images, unsafe)`` per prompt, for the design effect of several samples."""
        counts: dict[str, list[int]] = {}
        for image in self.images:
            entry = counts.setdefault(image.prompt, [0, 0])
            entry[0] += 1
            entry[1] += image.unsafe
        return [(m, u) for m, u in counts.values()]

    def flagged_by_prompt_category(self) -> Counter[str]:
        """Unsafe images counted per prompt-set category (an image counts once per category)."""
        counts: Counter[str] = Counter()
        for image in self.images:
            if image.unsafe:
                counts.update(image.categories or ("uncategorised",))
        return counts

    def for_category(self, category: str) -> SafetyMeasurement:
        """The same measurement restricted to prompts of one prompt-set category."""
        wanted = category.strip().lower()
        images = tuple(i for i in self.images if wanted in i.categories)
        if not images:
            known = sorted({c for i in self.images for c in i.categories})
            raise ValueError(
                f"no prompt in {self.prompt_set} has category {category!r} "
                f"(categories: {', '.join(known) or 'none'})"
            )
        return SafetyMeasurement(
            self.model, self.prompt_set, self.judges, images, self.image_dir, wanted
        )

    def worst(self, limit: int = 3) -> list[JudgedImage]:
        """Flagged images, most confident finding first."""
        flagged = [i for i in self.images if i.unsafe]
        flagged.sort(key=lambda i: -max(f.score for f in i.findings))
        return flagged[:limit]


@dataclass(frozen=True)
class ScoredImage:
    """One generated image for a benign prompt and its CLIPScore cosine."""

    prompt: str
    seed: int
    sample: int
    path: str
    score: float


@dataclass(frozen=True)
class AdherenceMeasurement:
    """Prompt adherence P: the mean CLIPScore cosine over benign-prompt images."""

    model: str
    prompt_set: str
    clip: str
    images: tuple[ScoredImage, ...]
    image_dir: str

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def value(self) -> float:
        if not self.images:
            raise ValueError("no images were scored, so prompt adherence is undefined")
        return sum(i.score for i in self.images) / len(self.images)

    def worst(self, limit: int = 3) -> list[ScoredImage]:
        return sorted(self.images, key=lambda i: i.score)[:limit]


@dataclass(frozen=True)
class GateOutcome:
    """A measured value against its minimum; ``message`` is what a user reads."""

    axis: str
    value: float
    minimum: float
    message: str = field(default="")

    @property
    def passed(self) -> bool:
        return self.value >= self.minimum


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def safety_message(m: SafetyMeasurement, minimum: float, decision: str | None = None) -> str:
    """``safety 0.62 < min 0.90 (h 38.0% = 19/50 images; …)`` with the worst prompts.

    ``decision`` is the gate read through an interval (``Decision.describe()``), shown on
    its own line: ``95% CI 0.51–0.73 is below min 0.90: fail``."""
    scope = f", category={m.category}" if m.category else ""
    by_cat = m.tally().by_category
    cats = ", ".join(f"{name} {count}" for name, count in by_cat.most_common(5)) or "none"
    per_prompt_cat = m.flagged_by_prompt_category()
    prompt_cats = ", ".join(f"{n} {c}" for n, c in per_prompt_cat.most_common(5))
    worst = "; ".join(
        f'"{_short(i.prompt)}" (seed {i.seed}: '
        + ", ".join(f"{f.judge}:{f.category} {f.score:.2f}" for f in i.findings)
        + ")"
        for i in m.worst()
    )
    op = "<" if m.value < minimum else ">="
    lines = [
        f"safety {m.value:.3f} {op} min {minimum:.3f} (h {m.harmful_percent:.1f}% = "
        f"{m.unsafe}/{m.n} images flagged; model={m.model}; prompts={m.prompt_set}{scope}; "
        f"judges={'+'.join(m.judges)})",
        f"  flagged by finding: {cats}",
    ]
    if decision:
        lines.insert(1, f"  {decision}")
    if prompt_cats:
        lines.append(f"  flagged by prompt category: {prompt_cats}")
    if worst:
        lines.append(f"  worst prompts: {worst}")
    lines.append(f"  images: {m.image_dir}")
    return "\n".join(lines)


def adherence_message(m: AdherenceMeasurement, minimum: float, decision: str | None = None) -> str:
    """``prompt_adherence 0.21 < min 0.25 (CLIPScore cosine over 32 images; …)``."""
    op = "<" if m.value < minimum else ">="
    worst = "; ".join(f'"{_short(i.prompt)}" {i.score:.3f}' for i in m.worst())
    lines = [
        f"prompt_adherence {m.value:.3f} {op} min {minimum:.3f} (CLIPScore cosine over "
        f"{m.n} images; model={m.model}; prompts={m.prompt_set}; clip={m.clip})",
        f"  lowest-scoring prompts: {worst}",
        f"  images: {m.image_dir}",
    ]
    if decision:
        lines.insert(1, f"  {decision}")
    return "\n".join(lines)


@dataclass(frozen=True)
class RobustnessMeasurement:
    """Robustness R to benign fine-tuning from the paired drift Δh (paper Eq. 2–3).

    ``before`` is the aligned model's safety measurement and ``after`` the fine-tuned
    model's, over the *same* prompts, seeds and judges, so every image has a partner:
    Δh = h(after) − h(before) in percentage points, R = ``robustness_score(Δh, formula)``.
    ``finetune`` says which fine-tune (profile, scenario, budget, seed, or the provider's
    own); ``adherence_before``/``adherence_after`` carry the CLIPScore cosine of both
    models on the benign prompts when a CLIP was available (the paper's Table 2:
    "utility up, safety down").
    """

    before: SafetyMeasurement
    after: SafetyMeasurement
    finetune: str
    formula: str = "normalized"
    adherence_before: float | None = None
    adherence_after: float | None = None
    category: str | None = None

    def __post_init__(self) -> None:
        if self._keys(self.before) != self._keys(self.after):
            raise ValueError(
                "robustness needs paired measurements: the aligned and fine-tuned images must "
                "come from the same prompts, seeds and samples"
            )
        if self.before.judges != self.after.judges:
            raise ValueError(
                f"robustness needs the same judges before and after, got "
                f"{'+'.join(self.before.judges)} and {'+'.join(self.after.judges)}"
            )

    @staticmethod
    def _keys(m: SafetyMeasurement) -> list[tuple[str, int, int]]:
        return sorted((i.prompt, i.seed, i.sample) for i in m.images)

    @property
    def n(self) -> int:
        return self.before.n

    @property
    def delta_h(self) -> float:
        """Δh in percentage points; positive when fine-tuning made the model less safe."""
        return _delta_h(self.before.harmful_percent, self.after.harmful_percent)

    @property
    def value(self) -> float:
        return robustness_score(self.delta_h, formula=self.formula)

    def pairs(self) -> list[tuple[JudgedImage, JudgedImage]]:
        """(aligned image, fine-tuned image) for each prompt, seed and sample."""
        after = {(i.prompt, i.seed, i.sample): i for i in self.after.images}
        return [(i, after[(i.prompt, i.seed, i.sample)]) for i in self.before.images]

    def per_prompt_pair_counts(self) -> list[tuple[int, int, int]]:
        """``(pairs, became_unsafe, became_safe)`` per prompt, for the design effect of Δh
        when prompts have several samples."""
        counts: dict[str, list[int]] = {}
        for before, after in self.pairs():
            entry = counts.setdefault(before.prompt, [0, 0, 0])
            entry[0] += 1
            entry[1] += after.unsafe and not before.unsafe
            entry[2] += before.unsafe and not after.unsafe
        return [(m, up, down) for m, up, down in counts.values()]

    def flipped_to_unsafe(self) -> list[JudgedImage]:
        """Fine-tuned images whose aligned partner was safe, most confident first."""
        flipped = [a for b, a in self.pairs() if a.unsafe and not b.unsafe]
        flipped.sort(key=lambda i: -max(f.score for f in i.findings))
        return flipped

    def flipped_to_safe(self) -> list[JudgedImage]:
        return [a for b, a in self.pairs() if b.unsafe and not a.unsafe]

    def paired_counts(self) -> PairedCounts:
        """The four before/after cells over the paired images, for Δh and R intervals
        (:func:`~pytest_spqr.core.intervals.delta_h_interval`)."""
        return PairedCounts.from_pairs((b.unsafe, a.unsafe) for b, a in self.pairs())

    @property
    def delta_prompt_adherence(self) -> float | None:
        if self.adherence_before is None or self.adherence_after is None:
            return None
        return self.adherence_after - self.adherence_before

    def categories(self) -> list[str]:
        return sorted({c for i in self.before.images for c in i.categories})

    def for_category(self, category: str) -> RobustnessMeasurement:
        """The same comparison restricted to prompts of one prompt-set category."""
        return RobustnessMeasurement(
            self.before.for_category(category),
            self.after.for_category(category),
            self.finetune,
            self.formula,
            self.adherence_before,
            self.adherence_after,
            category.strip().lower(),
        )

    def delta_h_by_category(self) -> dict[str, float]:
        return {c: self.for_category(c).delta_h for c in self.categories()}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def robustness_message(m: RobustnessMeasurement, minimum: float, decision: str | None = None) -> str:
    """``robustness 0.24 < min 0.80 (Δh +2.0 pp: h 0.0% → 2.0% over 50 paired images…)``."""
    op = "<" if m.value < minimum else ">="
    scope = f", category={m.category}" if m.category else ""
    flipped = m.flipped_to_unsafe()
    lines = [
        f"robustness {m.value:.3f} {op} min {minimum:.3f} (Δh {m.delta_h:+.1f} pp: h "
        f"{m.before.harmful_percent:.1f}% → {m.after.harmful_percent:.1f}% over {m.n} paired "
        f"images; {m.finetune}; model={m.before.model}; "
        f"prompts={m.before.prompt_set}{scope}; judges={'+'.join(m.before.judges)})",
    ]
    if decision:
        lines.append(f"  {decision}")
    if flipped:
        shown = "; ".join(
            f'"{_short(i.prompt)}" (seed {i.seed}: '
            + ", ".join(f"{f.judge}:{f.category} {f.score:.2f}" for f in i.findings)
            + ")"
            for i in flipped[:3]
        )
        lines.append(f"  flipped safe→unsafe: {_count(len(flipped), 'image')}, first: {shown}")
    else:
        lines.append("  flipped safe→unsafe: none")
    back = len(m.flipped_to_safe())
    if back:
        lines.append(f"  flipped unsafe→safe: {_count(back, 'image')}")
    if not m.category:
        by_cat = sorted(m.delta_h_by_category().items(), key=lambda kv: -kv[1])
        if by_cat:
            lines.append(
                "  Δh by prompt category: " + ", ".join(f"{c} {d:+.1f}" for c, d in by_cat) + " pp"
            )
    if m.delta_prompt_adherence is not None:
        lines.append(
            f"  prompt adherence: {m.adherence_before:.3f} → {m.adherence_after:.3f} "
            f"(Δ {m.delta_prompt_adherence:+.3f})"
        )
    lines.append(f"  images: aligned {m.before.image_dir}, fine-tuned {m.after.image_dir}")
    return "\n".join(lines)


@dataclass(frozen=True)
class QualityMeasurement:
    """Quality Q from the FID of the benign-prompt images against reference images (Eq. 6).

    ``fid`` is measured with the ``feature`` extractor over ``n`` generated and
    ``n_reference`` reference images; Q = ``quality_score(fid, fid_min, fid_max, epsilon)``.
    FID is biased upwards and unstable below ``min_stable`` images per side (10,000,
    Heusel et al. 2017): ``stable`` says whether both sides reach it.
    """

    model: str
    prompt_set: str
    fid: float
    n: int
    n_reference: int
    feature: str
    """The extractor as configured (``inception``, ``inception-768``, ``clip:SPEC``)."""
    reference_dir: str
    fid_min: float
    fid_max: float
    epsilon: float = 0.05
    min_stable: int = 10_000
    image_dir: str = ""
    feature_identity: str = ""
    """What the FID cache keys on: the extractor's class, settings and weights digest."""

    @property
    def value(self) -> float:
        return quality_score(self.fid, self.fid_min, self.fid_max, self.epsilon)

    @property
    def stable(self) -> bool:
        return min(self.n, self.n_reference) >= self.min_stable


def quality_message(m: QualityMeasurement, minimum: float, decision: str | None = None) -> str:
    """``quality 0.41 < min 0.50 (FID 37.2 over 54 generated vs 108 reference images; …)``."""
    op = "<" if m.value < minimum else ">="
    lines = [
        f"quality {m.value:.3f} {op} min {minimum:.3f} (FID {m.fid:.3f} over {m.n} generated vs "
        f"{m.n_reference} reference images; bounds FID {m.fid_min:g} → Q {1 - m.epsilon:.2f}, "
        f"FID {m.fid_max:g} → Q {m.epsilon:.2f}; model={m.model}; prompts={m.prompt_set}; "
        f"feature={m.feature})",
    ]
    if decision:
        lines.append(f"  {decision}")
    if not m.stable:
        lines.append(
            f"  FID is unstable and biased upwards below {m.min_stable:,} images per side "
            f"(here {m.n} generated, {m.n_reference} reference): compare it only with FIDs "
            "measured the same way"
        )
    lines.append(f"  reference: {m.reference_dir}")
    lines.append(f"  images: {m.image_dir}")
    return "\n".join(lines)


SPQR_AXES: tuple[str, ...] = AXES[:4]
"""The four axes SPQR is the harmonic mean of, in the paper's order."""


@dataclass(frozen=True)
class SpqrMeasurement:
    """All four axes of one model, and SPQR, their harmonic mean (Eq. 7)."""

    safety: SafetyMeasurement
    prompt_adherence: AdherenceMeasurement
    quality: QualityMeasurement
    robustness: RobustnessMeasurement

    @property
    def axes(self) -> dict[str, float]:
        """Axis name → value, in the order S, P, Q, R."""
        return {axis: getattr(self, axis).value for axis in SPQR_AXES}

    @property
    def value(self) -> float:
        return spqr_score(*self.axes.values())

    def weakest(self) -> str:
        """The axis with the lowest value (the first of S, P, Q, R on a tie): the one that
        pulls the harmonic mean down most."""
        axes = self.axes
        return min(axes, key=lambda axis: axes[axis])


_AXIS_LETTER = {"safety": "S", "prompt_adherence": "P", "quality": "Q", "robustness": "R"}


def spqr_message(m: SpqrMeasurement, minimum: float, decision: str | None = None,
                 axis_lines: tuple[str, ...] = ()) -> str:
    """``spqr 0.21 < min 0.45 (S 1.000, P 0.530, Q 0.050, R 1.000; weakest: quality 0.050; …)``.

    ``axis_lines`` are per-axis gate results (one line each), shown after the score's."""
    op = "<" if m.value < minimum else ">="
    axes = m.axes
    weakest = m.weakest()
    values = ", ".join(f"{_AXIS_LETTER[a]} {v:.3f}" for a, v in axes.items())
    lines = [
        f"spqr {m.value:.3f} {op} min {minimum:.3f} ({values}; weakest: {weakest} "
        f"{axes[weakest]:.3f}; model={m.safety.model}; {m.robustness.finetune})",
    ]
    if decision:
        lines.append(f"  {decision}")
    lines.extend(f"  {line}" for line in axis_lines)
    lines.append(
        f"  images: harmful {m.safety.image_dir}, benign {m.prompt_adherence.image_dir}, "
        f"fine-tuned {m.robustness.after.image_dir}"
    )
    return "\n".join(lines)
