"""The statistics engine's hand-written routines against the scipy routines that do the same job, side by side.

On the studies' real shapes (Spearman / Kendall across n = 12 and n = 30 benchmarks; 1,000 bootstrap resamples,
10,000 permutation pairings; exact enumeration at n = 8), prints seconds per cell for ours and scipy's, the ratio,
and the largest difference between the two answers. ``simassets.core.stats`` keeps a hand-written routine only
where this script shows it faster; the one-line comments there cite it.

    .venv/bin/python benchmarks/stats.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats as sps

from simassets.core import stats


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def spearman_vec(x, y, axis=-1):
    return stats._rowwise_r(np.atleast_2d(x), np.atleast_2d(y), "spearman")


def kendall_vec(x, y, axis=-1):
    return stats._rowwise_r(np.atleast_2d(x), np.atleast_2d(y), "kendall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []

    def row(name, ours, theirs, diff):
        rows.append((name, ours, theirs, theirs / ours, diff))

    for n in (12, 30):
        x = rng.normal(size=n)
        y = 0.4 * x + rng.normal(size=n)
        # permutation p (Monte Carlo, 10,000 pairings): ours ranks once and takes one matrix-vector product;
        # scipy's permutation_test calls a vectorised statistic on permuted copies
        t_ours, p_ours = timed(lambda: stats.monte_carlo_pvalue(x, y, "spearman", 10_000, np.random.default_rng(1)),
                               args.repeat)
        # one sample permuted against the fixed x (with both, scipy enumerates (n!)^2 pairings)
        t_sp, res = timed(lambda: sps.permutation_test(
            (y,), lambda b, axis=-1: np.abs(spearman_vec(np.broadcast_to(x, b.shape), b)), permutation_type="pairings",
            vectorized=True, n_resamples=10_000, alternative="greater", random_state=np.random.default_rng(1)),
            args.repeat)
        row(f"spearman permutation p, n={n}, 10k", t_ours, t_sp, abs(p_ours - res.pvalue))
        # bootstrap CI over pairs (1,000 resamples, percentile)
        t_ours, ci = timed(lambda: stats.bootstrap_ci(x, y, "spearman", 1000, np.random.default_rng(2)), args.repeat)
        t_sp, res = timed(lambda: sps.bootstrap((x, y), spearman_vec, paired=True, vectorized=True, n_resamples=1000,
                                                method="percentile", random_state=np.random.default_rng(2)),
                          args.repeat)
        row(f"spearman bootstrap CI, n={n}, 1k", t_ours, t_sp,
            max(abs(ci[0] - res.confidence_interval.low), abs(ci[1] - res.confidence_interval.high)))
        # Kendall's tau-b over the bootstrap's 1,000 resampled rows: vectorised sign sums vs scipy per row
        idx = rng.integers(0, n, size=(1000, n))
        t_ours, r_ours = timed(lambda: stats._rowwise_r(x[idx], y[idx], "kendall"), args.repeat)
        t_sp, r_sp = timed(lambda: np.array([sps.kendalltau(x[i], y[i]).statistic for i in idx]), args.repeat)
        row(f"kendall tau-b x 1,000 rows, n={n}", t_ours, t_sp, float(np.nanmax(np.abs(r_ours - r_sp))))

    # exact p by enumerating all 8! pairings
    x = np.array([1, 2, 2, 3, 5, 4, 1, 6.0])
    y = np.array([2, 1, 3, 3, 4, 4, 2, 5.0])
    t_ours, p_ours = timed(lambda: stats.exact_pvalue(x, y, "spearman"), args.repeat)
    t_sp, res = timed(lambda: sps.permutation_test(
        (y,), lambda b, axis=-1: np.abs(spearman_vec(np.broadcast_to(x, b.shape), b)), permutation_type="pairings",
        vectorized=True,
        n_resamples=np.inf, alternative="greater"), 1)
    row("spearman exact p, n=8 (40,320 pairings)", t_ours, t_sp, abs(p_ours - res.pvalue))

    print(f"{'routine':<42} {'ours s':>9} {'scipy s':>9} {'scipy/ours':>10} {'max |diff|':>11}")
    for name, a, b, ratio, d in rows:
        print(f"{name:<42} {a:9.4f} {b:9.4f} {ratio:10.1f} {d:11.2e}")


if __name__ == "__main__":
    main()
