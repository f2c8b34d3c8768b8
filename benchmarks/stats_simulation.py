"""Simulation figures for the intervals and the sequential test (issue 8).

    python benchmarks/stats_simulation.py            # full run, ~4 min on one core
    python benchmarks/stats_simulation.py --quick    # smaller runs, ~1 min (not recorded)

Prints, as Markdown tables:

1. coverage of every interval method by simulation with synthetic judges of known rates
   (2,000 runs per cell unless stated, fixed seeds), beside the exact coverage where it
   can be summed, and the exact minimum over a fine grid of rates;
2. the sequential test's error at the gate under peeking (exact, by dynamic programming,
   and simulated), against a fixed-n interval re-checked after every round;
3. images used by the sequential test against the fixed-n run of equal power.

and writes the same tables as a dated section of ``benchmarks/RESULTS.md`` (a section for
the same date and machine is replaced, others are kept). Stdlib only, deterministic.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as _dt
import math
import os
import platform
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_spqr.core.intervals import (
    HarmfulPrompt,
    PairedCounts,
    binomial_bounds,
    bonferroni_level,
    bootstrap_interval,
    delta_h_interval,
    max_delta_h_pp,
    mean_interval,
    robustness_interval,
    safety_interval,
    spqr_interval,
    spqr_interval_from_axes,
)
from pytest_spqr.core.scores import robustness_score, spqr_score
from pytest_spqr.core.sequential import (
    PairedSequentialTest,
    SequentialTest,
    operating_characteristics,
)

LEVEL = 0.95
ALPHA = 1 - LEVEL
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


# ---------------------------------------------------------------- helpers


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def binomial_cdf(n: int, p: float) -> list[float]:
    """Cumulative probabilities of Binomial(n, p), for sampling by inversion."""
    out, total = [], 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        out.append(total)
    out[-1] = 1.0
    return out


def draw(cdf: list[float], rng: random.Random) -> int:
    return min(bisect.bisect_left(cdf, rng.random()), len(cdf) - 1)


def exact_coverage(n: int, p: float, method: str) -> float:
    total = 0.0
    for x in range(n + 1):
        low, high = binomial_bounds(x, n, LEVEL, method)
        if low <= p <= high:
            total += math.comb(n, x) * p**x * (1 - p) ** (n - x)
    return total


# ---------------------------------------------------------------- 1. coverage


def coverage_safety(runs: int) -> str:
    rows = []
    for method in ("wilson-cc", "wilson"):
        for n in (20, 56, 100, 200, 500):
            cache: dict[int, tuple[float, float]] = {}
            for rate in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
                rng = random.Random(f"S-{method}-{n}-{rate}")
                cdf = binomial_cdf(n, rate)
                covered = 0
                for _ in range(runs):
                    x = draw(cdf, rng)
                    if x not in cache:
                        cache[x] = binomial_bounds(x, n, LEVEL, method)
                    covered += cache[x][0] <= rate <= cache[x][1]
                rows.append((method, n, f"{100 * rate:g}%", covered / runs, exact_coverage(n, rate, method)))
    return table(("method", "n images", "true h", "simulated", "exact"), rows)


def minimum_exact_coverage() -> str:
    rows = []
    grid = [i / 1000 for i in range(1, 1000)]
    for n in (20, 56, 100, 200):
        row: list[object] = [n]
        for method in ("wilson-cc", "wilson"):
            worst = min((exact_coverage(n, p, method), p) for p in grid)
            row += [worst[0], f"{100 * worst[1]:.1f}%"]
        rows.append(row)
    return table(
        ("n images", "wilson-cc min", "at h", "wilson min", "at h"), rows
    )


def coverage_delta_h(runs: int) -> str:
    rows = []
    cells = [(0.0, 0.02), (0.005, 0.0), (0.01, 0.05), (0.02, 0.01), (0.05, 0.05), (0.1, 0.02)]
    for method in ("tango-cc", "tango", "newcombe"):
        for n in (56, 200, 500):
            cache: dict[tuple[int, int], tuple[float, float]] = {}
            for up, down in cells:
                rng = random.Random(f"D-{method}-{n}-{up}-{down}")
                cdf_b = binomial_cdf(n, up)
                cond = down / (1 - up) if up < 1 else 0.0
                cdfs_c: dict[int, list[float]] = {}
                true_dh = 100 * (up - down)
                covered = 0
                for _ in range(runs):
                    b = draw(cdf_b, rng)
                    if n - b not in cdfs_c:
                        cdfs_c[n - b] = binomial_cdf(n - b, cond)
                    c = draw(cdfs_c[n - b], rng)
                    if (b, c) not in cache:
                        iv = delta_h_interval(PairedCounts(0, b, c, n - b - c), method=method)
                        cache[(b, c)] = (iv.low, iv.high)
                    low, high = cache[(b, c)]
                    covered += low - 1e-9 <= true_dh <= high + 1e-9
                rows.append((method, n, f"{100 * up:g}%", f"{100 * down:g}%", f"{true_dh:+.1f}", covered / runs))
    return table(("method", "n pairs", "safe→unsafe", "unsafe→safe", "true Δh pp", "simulated"), rows)


def coverage_mean(runs: int, resamples: int) -> str:
    rows = []
    dists: dict[str, tuple[Callable[[random.Random], float], float]] = {
        "Beta(29,71)": (lambda r: r.betavariate(29, 71), 0.29),
        "0.2+Exp(mean 0.05)": (lambda r: 0.2 + r.expovariate(20.0), 0.25),
    }
    for name, (sample, mu) in dists.items():
        for n in (8, 16, 32):
            for method in ("studentized", "bca", "percentile"):
                rng = random.Random(f"P-{name}-{n}")
                covered = 0
                for run in range(runs):
                    values = [sample(rng) for _ in range(n)]
                    iv = mean_interval(values, resamples=resamples, seed=run, method=method)
                    covered += iv.low <= mu <= iv.high
                rows.append((name, n, method, covered / runs))
    return table(("per-prompt values", "n prompts", "method", "simulated"), rows)


def coverage_spqr(runs: int, resamples: int) -> str:
    rows = []
    quality = 0.7
    scenarios = [
        (0.05, 0.01, 0.005, 56, 32),
        (0.1, 0.03, 0.01, 200, 32),
        (0.02, 0.0, 0.0, 56, 32),
    ]
    for h, up, down, n_harm, n_ben in scenarios:
        true = spqr_score(1 - h, 0.29, quality, robustness_score(100 * (up - down)))
        rng = random.Random(f"SPQR-{h}-{up}-{down}")
        hits = {"spqr_interval (bootstrap S,P + Tango R)": 0, "spqr_interval_from_axes": 0, "plain bootstrap resampling R": 0}
        widths = dict.fromkeys(hits, 0.0)
        for run in range(runs):
            pairs = []
            for _ in range(n_harm):
                before = rng.random() < h
                u = rng.random()
                after = (u < up / (1 - h)) if not before else not (u < down / h)
                pairs.append((before, after))
            counts = PairedCounts.from_pairs(pairs)
            harmful = [HarmfulPrompt(1, int(b)) for b, _ in pairs]
            benign = [rng.betavariate(29, 71) for _ in range(n_ben)]
            results = {}
            results["spqr_interval (bootstrap S,P + Tango R)"] = spqr_interval(
                harmful, benign, quality, counts, resamples=resamples, seed=run
            )
            lv = bonferroni_level(LEVEL, 3)
            results["spqr_interval_from_axes"] = spqr_interval_from_axes(
                safety_interval(counts.unsafe_before, n_harm, level=lv),
                mean_interval(benign, level=lv, resamples=resamples, seed=run),
                quality,
                robustness_interval(counts, level=lv),
            )

            def plain(strata: Sequence[Sequence[object]]) -> float:
                # stratum 0: the pairs
                ps: Sequence[tuple[bool, bool]] = strata[0]  # type: ignore[assignment]
                s = 1 - sum(b for b, _ in ps) / len(ps)
                dh = 100 * (sum(a for _, a in ps) - sum(b for b, _ in ps)) / len(ps)
                # stratum 1: benign scores
                p = sum(strata[1]) / len(strata[1])  # type: ignore[arg-type]
                return spqr_score(s, p, quality, robustness_score(dh))

            results["plain bootstrap resampling R"] = bootstrap_interval(
                # the strata differ in type: pairs, then scores
                [pairs, benign], plain, resamples=resamples, seed=run  # type: ignore[list-item]
            )
            for key, iv in results.items():
                hits[key] += iv.low <= true <= iv.high
                widths[key] += iv.width
        for key in hits:
            rows.append(
                (f"h {100 * h:g}%, flips +{100 * up:g}/-{100 * down:g}%, {n_harm}+{n_ben} prompts",
                 f"{true:.3f}", key, hits[key] / runs, widths[key] / runs)
            )
    return table(("scenario", "true SPQR", "method", "simulated", "mean width"), rows)


# ---------------------------------------------------------------- 2. error under peeking


def naive_peeking(h_max: float, round_size: int, max_images: int) -> tuple[float, float]:
    """Exact P(pass), P(fail) at h = h_max of a 95% Wilson-cc gate re-checked every round."""
    alive = [1.0]
    wrong_pass = wrong_fail = 0.0
    pmf = [math.comb(round_size, j) * h_max**j * (1 - h_max) ** (round_size - j) for j in range(round_size + 1)]
    for look in range(round_size, max_images + 1, round_size):
        nxt = [0.0] * (look + 1)
        for k, prob in enumerate(alive):
            if prob:
                for j, q in enumerate(pmf):
                    nxt[k + j] += prob * q
        for k in range(look + 1):
            low, high = binomial_bounds(k, look, LEVEL, "wilson-cc")
            if high <= h_max:
                wrong_pass += nxt[k]
                nxt[k] = 0.0
            elif low > h_max:
                wrong_fail += nxt[k]
                nxt[k] = 0.0
        alive = nxt
    return wrong_pass, wrong_fail


def peeking_table() -> str:
    rows = []
    for minimum in (0.8, 0.9, 0.95):
        for round_size, cap in ((1, 500), (8, 1000), (56, 1120)):
            oc = operating_characteristics(minimum, 1 - minimum, alpha=ALPHA, round_size=round_size, max_images=cap)
            naive = naive_peeking(1 - minimum, round_size, cap)
            rows.append((f"S ≥ {minimum}", round_size, cap, oc.p_pass, oc.p_fail, oc.p_pass + oc.p_fail, naive[0], naive[1], naive[0] + naive[1]))
    return table(
        ("gate", "look every", "max images", "seq P(pass)", "seq P(fail)", "seq total",
         "naive P(pass)", "naive P(fail)", "naive total"),
        rows,
    )


def simulated_peeking(runs: int) -> str:
    rows = []
    for minimum, round_size, cap in ((0.9, 8, 1000), (0.95, 8, 1000), (0.9, 1, 300)):
        h = 1 - minimum
        test = SequentialTest(minimum, ALPHA, max_images=cap)
        looks = list(range(round_size, cap + 1, round_size))
        bounds = {n: test.thresholds(n) for n in looks}
        cdf = binomial_cdf(round_size, h)
        rng = random.Random(f"peek-{minimum}-{round_size}")
        passes = fails = 0
        for _ in range(runs):
            unsafe = 0
            for n in looks:
                unsafe += draw(cdf, rng)
                pass_max, fail_min = bounds[n]
                if unsafe <= pass_max:
                    passes += 1
                    break
                if unsafe >= fail_min:
                    fails += 1
                    break
        rows.append((f"S ≥ {minimum} (thresholds)", round_size, cap, runs, passes / runs, fails / runs))
    # The public API itself, 2,000 runs, looking every 8 images up to 400.
    rng = random.Random("peek-api")
    passes = fails = 0
    api_runs = 2000
    for _ in range(api_runs):
        test = SequentialTest(0.9, ALPHA, max_images=400)
        while not test.finished:
            n_new = test.next_round(8)
            test.update(n_new, sum(rng.random() < 0.1 for _ in range(n_new)))
        passes += test.outcome == "pass"
        fails += test.outcome == "fail"
    rows.append(("S ≥ 0.9 (SequentialTest.update)", 8, 400, api_runs, passes / api_runs, fails / api_runs))
    return table(("gate, at h = h_max", "look every", "max images", "runs", "P(pass)", "P(fail)"), rows)


def paired_peeking(runs: int) -> str:
    rows = []
    for minimum, base, cap, round_size in ((0.2, 0.05, 2000, 25), (0.5, 0.02, 2000, 25)):
        d_max = max_delta_h_pp(minimum) / 100
        up, down = base + d_max, base
        rng = random.Random(f"paired-{minimum}")
        decided = 0
        used = 0
        for _ in range(runs):
            test = PairedSequentialTest(minimum, ALPHA, max_images=cap)
            while not test.finished:
                n_new = test.next_round(round_size)
                b = c = 0
                for _ in range(n_new):
                    u = rng.random()
                    b += u < up
                    c += up <= u < up + down
                test.update(PairedCounts(0, b, c, n_new - b - c))
            decided += test.decided
            used += test.images_used
        rows.append((f"R ≥ {minimum} (Δh ≤ {100 * d_max:.3f} pp)", f"+{100 * up:.2f}/-{100 * down:g}%", round_size, cap, runs, decided / runs, used / runs))
    return table(("gate, at Δh = its maximum", "flips", "look every", "max pairs", "runs", "P(any decision)", "mean pairs"), rows)


# ---------------------------------------------------------------- 3. images used


def fixed_n_power(n: int, rate: float, h_max: float) -> tuple[float, float]:
    p_pass = p_fail = 0.0
    for x in range(n + 1):
        low, high = binomial_bounds(x, n, LEVEL, "wilson-cc")
        pmf = math.comb(n, x) * rate**x * (1 - rate) ** (n - x)
        if high <= h_max:
            p_pass += pmf
        elif low > h_max:
            p_fail += pmf
    return p_pass, p_fail


def efficiency(runs: int) -> tuple[str, str]:
    power, round_size = 0.8, 8
    design_rows = []
    rows = []
    for minimum, rates in (
        (0.9, (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)),
        (0.95, (0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25)),
    ):
        h_max = 1 - minimum
        good, bad = h_max / 2, h_max * 1.5
        n_fixed = next(
            n for n in range(20, 5000, 2)
            if fixed_n_power(n, good, h_max)[0] >= power and fixed_n_power(n, bad, h_max)[1] >= power
        )

        def seq_power(cap: int, minimum: float = minimum, good: float = good,
                      bad: float = bad) -> tuple[float, float]:
            return (
                operating_characteristics(minimum, good, round_size=round_size, max_images=cap).p_pass,
                operating_characteristics(minimum, bad, round_size=round_size, max_images=cap).p_fail,
            )

        low, high = n_fixed, 2 * n_fixed
        while min(seq_power(high)) < power:
            low, high = high, 2 * high
        while high - low > round_size:
            mid = (low + high) // 2 // round_size * round_size
            if mid <= low:
                break
            if min(seq_power(mid)) >= power:
                high = mid
            else:
                low = mid
        cap = high
        p_good, p_bad = seq_power(cap)
        f_good, f_bad = fixed_n_power(n_fixed, good, h_max)[0], fixed_n_power(n_fixed, bad, h_max)[1]
        design_rows.append((f"S ≥ {minimum}", f"{100 * good:g}% / {100 * bad:g}%", n_fixed, f_good, f_bad, cap, p_good, p_bad))
        test = SequentialTest(minimum, ALPHA, max_images=cap)
        looks = list(range(round_size, cap, round_size)) + [cap]
        bounds = {n: test.thresholds(n) for n in looks}
        for rate in rates:
            oc = operating_characteristics(minimum, rate, round_size=round_size, max_images=cap)
            fixed = fixed_n_power(n_fixed, rate, h_max)
            # simulation cross-check of the images used
            rng = random.Random(f"eff-{minimum}-{rate}")
            total = 0
            cdf = binomial_cdf(round_size, rate)
            for _ in range(runs):
                unsafe = used = 0
                for n in looks:
                    unsafe += draw(cdf, rng) if n - used == round_size else sum(rng.random() < rate for _ in range(n - used))
                    used = n
                    pass_max, fail_min = bounds[n]
                    if unsafe <= pass_max or unsafe >= fail_min:
                        break
                total += used
            rows.append((
                f"S ≥ {minimum}", f"{100 * rate:g}%", oc.p_pass, oc.p_fail, oc.p_inconclusive,
                oc.expected_images, total / runs, fixed[0], fixed[1], n_fixed, n_fixed / oc.expected_images,
            ))
    design = table(
        ("gate", "design h (pass / fail)", "fixed n", "fixed P(pass)", "fixed P(fail)",
         "sequential cap", "seq P(pass)", "seq P(fail)"),
        design_rows,
    )
    used = table(
        ("gate", "true h", "seq P(pass)", "seq P(fail)", "seq P(inconcl.)", "seq E[images] exact",
         "seq mean images (sim)", "fixed P(pass)", "fixed P(fail)", "fixed n", "fixed n / seq E[images]"),
        rows,
    )
    return design, used


# ---------------------------------------------------------------- main


def write_results(body: str, stamp: str) -> None:
    begin = f"<!-- stats_simulation:start {stamp} -->"
    end = "<!-- stats_simulation:end -->"
    section = f"{begin}\n{body.rstrip()}\n{end}\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs; RESULTS.md untouched")
    args = parser.parse_args()
    runs = 500 if args.quick else 2000
    boot_runs, boot_b = (300, 199) if args.quick else (2000, 399)
    spqr_runs, spqr_b = (100, 199) if args.quick else (400, 299)
    started, cpu_started = time.perf_counter(), time.process_time()
    today = _dt.date.today().isoformat()
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    parts: list[str] = [
        f"## Statistics simulation — {today}",
        "",
        f"Machine: {machine}. Command: `python benchmarks/stats_simulation.py`. Level 95% "
        "(sequential α = 0.05: each wrong decision ≤ 0.025). Seeds fixed; synthetic judges flag "
        "each image independently with the stated probability.",
    ]

    def section(title: str, note: str, body: Callable[[], str]) -> None:
        t0 = time.process_time()
        text = body()
        parts.extend(["", f"### {title}", "", note, "", text, "", f"_({time.process_time() - t0:.0f} s CPU)_"])
        print(parts[-7], parts[-5], text, parts[-1], sep="\n\n", flush=True)

    section(
        "Coverage: Safety (Wilson), simulated and exact",
        f"{runs} runs per cell. Target: ≥ 0.94 (nominal − 1 point).",
        lambda: coverage_safety(runs),
    )
    section(
        "Coverage: Safety, exact minimum over h = 0.1%…99.9% (step 0.1%)",
        "Plain Wilson dips far below nominal near h = 0 — why the continuity-corrected one is the default.",
        minimum_exact_coverage,
    )
    section(
        "Coverage: paired Δh (Robustness), simulated",
        f"{runs} runs per cell; R's interval is the Δh interval mapped through R, so it has the same coverage.",
        lambda: coverage_delta_h(runs),
    )
    section(
        "Coverage: prompt adherence (mean over prompts), simulated",
        f"{boot_runs} runs per cell, {boot_b} resamples.",
        lambda: coverage_mean(boot_runs, boot_b),
    )
    section(
        "Coverage: SPQR score, simulated",
        f"{spqr_runs} runs per cell (each interval is two bootstraps), {spqr_b} resamples; Q = 0.7 fixed, "
        "P ~ Beta(29, 71) per prompt.",
        lambda: coverage_spqr(spqr_runs, spqr_b),
    )
    section(
        "Sequential: error at the gate under peeking (exact)",
        "True h = h_max, the hardest case for both errors. `seq` = SequentialTest (betting confidence "
        "sequence); `naive` = the fixed-n 95% Wilson-cc gate re-checked after every look. Each wrong "
        "decision must stay ≤ 0.025 (total ≤ α = 0.05).",
        peeking_table,
    )
    section(
        "Sequential: error at the gate under peeking (simulated)",
        "Outcome frequencies at h = h_max.",
        lambda: simulated_peeking(10 * runs),
    )
    paired_runs = runs // 4 if args.quick else runs
    section(
        "Sequential: paired Robustness test at the gate (simulated)",
        f"{paired_runs} runs; pairs drawn with Δh exactly at the gate's maximum, so any decision "
        "is an error of one side (must stay ≤ α = 0.05 in total).",
        lambda: paired_peeking(paired_runs),
    )
    design, used = efficiency(runs)
    parts.extend([
        "", "### Sequential: images used vs the fixed-n run of equal power", "",
        "Equal power: the fixed-n design is the smallest n at which the 95% Wilson-cc gate decides "
        "correctly with probability ≥ 0.8 at both design rates h_max/2 (should pass) and 1.5·h_max "
        "(should fail); the sequential test looks every 8 images and is capped at the smallest "
        "multiple of 8 at which its own probability of deciding correctly at both design rates is "
        "also ≥ 0.8. Both err with probability ≤ 0.025 per side. Exact (dynamic programming); "
        f"'sim' = {runs} simulated runs.",
        "", design, "", used,
    ])
    print("\n### Sequential: images used vs the fixed-n run of equal power\n", design, used, sep="\n\n")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    parts.extend(["", f"Total: {cpu:.0f} s CPU on one core ({elapsed:.0f} s wall)."])
    print(f"\nTotal: {cpu:.0f} s CPU on one core ({elapsed:.0f} s wall)")
    if not args.quick:
        write_results("\n".join(parts), f"{today} {platform.node() or 'machine'}")
        print(f"recorded in {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
