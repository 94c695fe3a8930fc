"""Calibration of the correlation intervals under score noise (simulation; prints a table).

Benchmarks whose true accuracy is tied to a similarity x with Spearman rho, each accuracy observed from 30
examples (a binomial draw). For each setting it simulates many data sets and prints how often each 95% interval
covers the correlation of x with the *true* accuracy, and the median width:

* ``benchmarks only``: ``ci_low/ci_high`` (pairs resampled, scores taken as exact);
* ``two-level``: ``ci2_low/ci2_high`` as stored (examples re-drawn, each resample de-attenuated);
* ``de-attenuated, no re-draw``: the alternative that was not chosen, the pair bootstrap of r / sqrt(reliability).

    .venv/bin/python benchmarks/two_level_coverage.py [--datasets 100] [--n-boot 400]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

from simassets.core import stats

SETTINGS = ((0.6, 0.12), (0.6, 0.07), (0.0, 0.07), (0.3, 0.20))  # (rho, sd of the true accuracy)


def deattenuated_pairs_ci(x: np.ndarray, y: np.ndarray, noise: stats.ScoreNoise, n_boot: int,
                          rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    r = stats._rowwise_r(x[idx], y[idx], "spearman")
    rel = 1 - noise.error_variance()[idx].mean(axis=1) / y[idx].var(axis=1, ddof=1)
    r = stats.deattenuate(r, rel)
    lo, hi = np.percentile(r[np.isfinite(r)], [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--n-boot", type=int, default=400)
    ap.add_argument("--benchmarks", type=int, default=30)
    ap.add_argument("--examples", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, m = args.benchmarks, args.examples
    names = ("benchmarks only", "two-level", "de-attenuated, no re-draw")
    print(f"{args.datasets} data sets per row, {n} benchmarks x {m} examples, {args.n_boot} resamples; "
          "coverage of the true-score Spearman correlation by the 95% intervals (median width)")
    print(f"{'rho':>5} {'sd':>5} {'true':>6} {'reliab.':>7}  " + "  ".join(f"{s:>26}" for s in names))
    for rho, sd in SETTINGS:
        big = rng.normal(size=200_000)
        true = spearmanr(big, rho * big + np.sqrt(1 - rho**2) * rng.normal(size=big.size)).statistic
        hits, widths, rels = np.zeros(3), [[], [], []], []
        for k in range(args.datasets):
            x = rng.normal(size=n)
            t = np.clip(0.55 + sd * (rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)), 0.01, 0.99)
            acc = rng.binomial(m, t) / m
            noise = stats.ScoreNoise.of(np.full(n, m), acc)
            res = stats.correlate(x, acc, "spearman", n_boot=args.n_boot, seed=k, p_method="asymptotic",
                                  noise=noise)
            alt = deattenuated_pairs_ci(x, acc, noise, args.n_boot, np.random.default_rng([k, 3]))
            for j, (lo, hi) in enumerate(((res.ci_low, res.ci_high), (res.ci2_low, res.ci2_high), alt)):
                hits[j] += lo <= true <= hi
                widths[j].append(hi - lo)
            rels.append(res.reliability)
        cells = [f"{h / args.datasets:>19.0%} ({np.median(w):.2f})" for h, w in zip(hits, widths)]
        print(f"{rho:>5.1f} {sd:>5.2f} {true:>6.2f} {np.median(rels):>7.2f}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
