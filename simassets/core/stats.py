"""Correlation and statistics engine: similarity measures against benchmark scores.

Conventions (tested in ``simassets_tests/test_stats.py``):

* **Undefined correlations.** When fewer than 3 complete pairs remain, or either side is constant,
  ``r`` and ``p`` are ``NaN`` (a float, so DataFrame columns stay numeric) and ``note`` says why,
  e.g. ``"n=2 < 3: correlation undefined"``. Nothing undefined leaves without a note.
* **No p-value that cannot be small.** Below :data:`MIN_N_P` pairs (5) no rearrangement of the data reaches a
  two-sided p under 0.05 (the smallest is 2 / n!: 0.083 at n = 4), so ``p`` is NaN and the note says so.
* **Missing values.** Pairs where either value is missing or non-finite are dropped; ``n`` is the
  number of pairs actually used and ``note`` records how many were dropped.
* **p-values** (``p_method``): two-sided, P(|r*| >= |r|) under random pairing of x and y.
  ``exact``: every one of the n! pairings enumerated (n <= :data:`EXACT_MAX_N` = 10), so ties are handled
  as they are; ``kendall-exact``: scipy's exact null distribution of Kendall's tau (n > 10, no ties);
  ``monte-carlo``: seeded random pairings, 10,000, extended to 50,000 when the estimate could be near the
  0.05 level (Monte-Carlo standard error <= 0.00098 at p = 0.05), with the +1 correction
  ``(1 + #{|r*| >= |r|}) / (R + 1)``; ``asymptotic``: scipy's t / normal approximation, what the papers
  report, always kept in ``p_asymptotic``.
* **Intervals.** ``ci_low/ci_high``: percentile bootstrap over resampled benchmarks (pairs), as if each score
  were exact. ``ci2_low/ci2_high`` (two-level): each resampled benchmark's score is also re-estimated by
  resampling its examples (a binomial draw of its correct count, :class:`ScoreNoise`), so a score from 30
  examples carries its ~0.09 standard error into the interval, and each resample's r is corrected for the
  attenuation the noise causes: it is the interval of the correlation with the true scores (see
  :func:`bootstrap_ci`). ``reliability`` is the share of the scores' variance that is not noise. Everything is
  seeded; in :func:`correlation_grid` every cell draws from its own stream derived from ``(seed, group, measure,
  score)``, so a cell's figures do not depend on which other cells are in the grid.
* **Orientation.** Each measure has a direction (+1: higher = more similar, -1: higher = less
  similar; see :mod:`simassets.core.measures.registry`). Scores are taken as higher = better.
  ``r_oriented = r * direction`` is positive whenever "more similar => better";
  ``expected_sign`` (= direction) is the sign the *raw* ``r`` has under that hypothesis.
* **Multiple testing.** ``p_adj`` adjusts ``p`` across the whole grid (within each group when ``group_by``
  is given) with scipy's ``false_discovery_control`` (BH, BY) or Holm; undefined cells (NaN p) are left
  out of the count ``m``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from simassets.core.hashing import canonical_json, seeded_hash64
from simassets.core.measures.registry import MEASURES

METHODS = ("spearman", "pearson", "kendall")
CORRECTIONS = ("by", "bh", "holm", "none")
P_METHODS = ("auto", "asymptotic")
MIN_N = 3
MIN_N_P = 5  # the smallest n whose best two-sided permutation p (2 / n!) is below 0.05
EXACT_MAX_N = 10  # 10! = 3.6M pairings, ~1 s; 11! would be 40M
MC_FIRST, MC_FULL = 10_000, 50_000
GRID_COLUMNS = [
    "measure", "score", "method", "n", "r", "p", "p_method", "p_asymptotic", "p_adj", "ci_low", "ci_high",
    "ci2_low", "ci2_high", "reliability", "direction", "r_oriented", "expected_sign", "note",
]
_NAN = float("nan")
_CHUNK = 1 << 20  # elements per resampling batch (bounds memory for large n)


@dataclass(frozen=True)
class CorrelationResult:
    """One correlation. ``r``/``p``/CIs are NaN when undefined or not requested."""

    method: str
    n: int
    r: float
    p: float
    p_method: str = ""
    p_asymptotic: float = _NAN
    ci_low: float = _NAN
    ci_high: float = _NAN
    ci2_low: float = _NAN
    ci2_high: float = _NAN
    reliability: float = _NAN
    note: str = ""

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.r))


@dataclass(frozen=True)
class ScoreNoise:
    """How each benchmark's score was estimated, so a bootstrap can re-estimate it: score = offset + scale *
    k / n_examples with k ~ Binomial(n_examples, rate) (resampling n 0/1 outcomes with replacement is exactly
    that). For accuracy offset = 0, scale = 1; for the normalized score 100 (acc - r) / (1 - r) offset =
    -100 r / (1 - r), scale = 100 / (1 - r), the chance level r held fixed."""

    n_examples: np.ndarray
    rate: np.ndarray
    offset: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, n_examples, rate, offset=0.0, scale=1.0) -> "ScoreNoise":
        n = np.asarray(n_examples, dtype=float)
        as_arr = lambda v: np.broadcast_to(np.asarray(v, dtype=float), n.shape).copy()  # noqa: E731
        return cls(n, as_arr(rate), as_arr(offset), as_arr(scale))

    def subset(self, keep: np.ndarray) -> "ScoreNoise":
        return ScoreNoise(self.n_examples[keep], self.rate[keep], self.offset[keep], self.scale[keep])

    def usable(self) -> bool:
        return bool(np.all(np.isfinite(self.n_examples) & (self.n_examples >= 1))
                    and np.all((self.rate >= 0) & (self.rate <= 1)))

    def draw(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Scores of the benchmarks ``idx`` (any shape), each re-estimated from a fresh binomial draw."""
        n = self.n_examples[idx]
        return self.offset[idx] + self.scale[idx] * rng.binomial(n.astype(np.int64), self.rate[idx]) / n

    def _spread(self) -> np.ndarray:
        return self.scale**2 * self.rate * (1 - self.rate)

    def error_variance(self) -> np.ndarray:
        """Each observed score's sampling variance, unbiased: scale^2 rate (1 - rate) / (n - 1)."""
        return self._spread() / np.maximum(self.n_examples - 1, 1)

    def redrawn_error_variance(self) -> np.ndarray:
        """The error variance of a re-estimated score (:meth:`draw`): the observed score's own error plus the
        fresh draw's, scale^2 rate (1 - rate) / n."""
        return self.error_variance() + self._spread() / self.n_examples

    def reliability(self, y: np.ndarray) -> float:
        """The share of the scores' variance across benchmarks that is not sampling error,
        1 - mean(error variance) / var(y) (classical test theory's reliability; <= 0: the scores differ no more
        than their noise)."""
        v = float(np.var(y, ddof=1))
        return 1.0 - float(self.error_variance().mean()) / v if v > 0 else _NAN


# --------------------------------------------------------------------------- input handling
def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; choose one of {METHODS}")


def complete_pairs(x: Iterable[float], y: Iterable[float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop pairs where either value is missing or non-finite; return ``(x, y, n_dropped)``."""
    xa, ya, keep = _complete(x, y)
    return xa[keep], ya[keep], int((~keep).sum())


def _complete(x: Iterable[float], y: Iterable[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xa = np.asarray(pd.to_numeric(pd.Series(list(x), dtype=object), errors="raise"), dtype=float)
    ya = np.asarray(pd.to_numeric(pd.Series(list(y), dtype=object), errors="raise"), dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    return xa, ya, np.isfinite(xa) & np.isfinite(ya)


def undefined_reason(x: np.ndarray, y: np.ndarray) -> str:
    """Why a correlation of complete pairs ``x``, ``y`` is undefined; ``""`` when it is defined."""
    if x.size < MIN_N:
        return f"n={x.size} < {MIN_N}: correlation undefined"
    for name, v in (("x", x), ("y", y)):
        if np.ptp(v) == 0:
            return f"constant {name} (all values {v[0]:g}): correlation undefined"
    return ""


def numeric_columns(df: pd.DataFrame, columns: Sequence[str], source: str = "table",
                    row_name: str = "row") -> pd.DataFrame:
    """``df[columns]`` as floats; raise ValueError naming ``source``, the column and the first bad
    row (``row_name`` + index label) if a column is missing or holds a value that is neither
    empty nor a number."""
    out = {}
    for col in columns:
        if col not in df.columns:
            raise ValueError(f"{source}: no column {col!r} (columns: {list(map(str, df.columns))})")
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            out[col] = s.astype(float)
            continue
        num = pd.to_numeric(s, errors="coerce")
        blank = s.isna() | s.astype(str).str.strip().eq("")
        bad = num.isna() & ~blank
        if bad.any():
            row = bad.idxmax()
            raise ValueError(f"{source}: column {col!r} is not numeric ({row_name} {row}: {s[row]!r})")
        out[col] = num.astype(float)
    return pd.DataFrame(out, index=df.index)


# --------------------------------------------------------------------------- statistics
def _rowwise_r(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation of each row of ``x`` with the same row of ``y`` (2-D, equal shapes); rows with
    a constant side give NaN."""
    if method == "kendall" and x.shape[1] <= 200:
        # tau-b = sum sx*sy / sqrt(sum sx^2 * sum sy^2) over pairs i<j, vectorised over rows
        # (identical to scipy's tau-b; 22x (n=30) to 209x (n=12) faster than scipy per row: benchmarks/stats.py)
        i, j = np.triu_indices(x.shape[1], 1)
        sx, sy = np.sign(x[:, j] - x[:, i]), np.sign(y[:, j] - y[:, i])
        with np.errstate(invalid="ignore", divide="ignore"):
            return (sx * sy).sum(axis=1) / np.sqrt((sx * sx).sum(axis=1) * (sy * sy).sum(axis=1))
    if method == "kendall":
        return np.array([sps.kendalltau(a, b).statistic if np.ptp(a) and np.ptp(b) else _NAN
                         for a, b in zip(x, y)])
    if method == "spearman":
        x, y = sps.rankdata(x, axis=1), sps.rankdata(y, axis=1)
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _batches(total: int, n: int) -> Iterable[int]:
    size = max(1, _CHUNK // max(n, 1))
    for start in range(0, total, size):
        yield min(size, total - start)


@lru_cache(maxsize=EXACT_MAX_N)
def all_permutations(n: int) -> np.ndarray:
    """Every permutation of ``range(n)`` as an (n!, n) int8 array, built by insertion in numpy (itertools
    would hold 3.6M tuples at n = 10)."""
    if not 1 <= n <= EXACT_MAX_N:
        raise ValueError(f"enumerating permutations needs 1 <= n <= {EXACT_MAX_N}, got {n}")
    perms = np.zeros((1, 1), dtype=np.int8)
    for k in range(1, n):
        perms = np.concatenate([np.insert(perms, pos, k, axis=1) for pos in range(k + 1)])
    perms.setflags(write=False)
    return perms


class _Null:
    """|r*| for pairings of ``y`` with a fixed ``x``: for Pearson and Spearman the centred sums of squares do not
    change under a permutation, so r* = x_c . y_c[perm] / norm (one matrix-vector product); Kendall's tau-b
    keeps its denominator too, only the concordance sum is recomputed. Hand-written: 5.6-6.9x faster than
    scipy's permutation_test at n = 12-30 with the same p, 47x for the exact n = 8 enumeration (benchmarks/stats.py).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, method: str):
        if method == "spearman":
            x, y, method = sps.rankdata(x), sps.rankdata(y), "pearson"
        self.method = method
        if method == "pearson":
            self.xc, self.yc = x - x.mean(), y - y.mean()
            self.norm = math.sqrt(float(self.xc @ self.xc) * float(self.yc @ self.yc))
            self.r_obs = abs(float(self.xc @ self.yc) / self.norm)
        else:
            i, j = np.triu_indices(x.size, 1)
            sx = np.sign(x[j] - x[i])
            sy = np.sign(y[j] - y[i])
            self.norm = math.sqrt(float(sx @ sx) * float(sy @ sy))
            self.r_obs = abs(float(sx @ sy) / self.norm)
            self.s_obs = abs(float(sx @ sy))  # the concordance sum: an integer, compared exactly
            # only pairs untied in x count; y as small dense ranks: int16 differences and float32 sums are ~10x
            # faster than float64 on the studies' n = 39 (same sums: they are small integers)
            keep = sx != 0
            self.i, self.j, self.sx = i[keep], j[keep], sx[keep].astype(np.float32)
            self.y = sps.rankdata(y, method="dense").astype(np.int16)

    def abs_r(self, perms: np.ndarray) -> np.ndarray:
        if self.method == "pearson":
            return np.abs(self.yc[perms] @ self.xc) / self.norm
        return self._abs_s(perms) / self.norm

    def _abs_s(self, perms: np.ndarray) -> np.ndarray:
        yp = self.y[perms]
        return np.abs(np.sign(yp[:, self.j] - yp[:, self.i]).astype(np.float32) @ self.sx)

    def hits(self, perms: np.ndarray) -> int:
        if self.method == "kendall":
            return int((self._abs_s(perms) >= self.s_obs - 0.5).sum())
        return int((self.abs_r(perms) >= self.r_obs - 1e-12).sum())


def exact_pvalue(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """P(|r*| >= |r|) over all n! pairings (n <= 10): the exact two-sided permutation p, ties included."""
    null = _Null(np.asarray(x, float), np.asarray(y, float), method)
    perms = all_permutations(x.size)
    rows = max(1, (_CHUNK * 4) // (x.size * (x.size - 1) // 2 if null.method == "kendall" else x.size))
    hits = sum(null.hits(perms[s:s + rows]) for s in range(0, len(perms), rows))
    return hits / len(perms)


def monte_carlo_pvalue(x: np.ndarray, y: np.ndarray, method: str, n_perm: int,
                       rng: np.random.Generator) -> float:
    """Two-sided permutation p from ``n_perm`` seeded random pairings, with the +1 correction."""
    null = _Null(np.asarray(x, float), np.asarray(y, float), method)
    hits = 0
    for k in _batches(n_perm, x.size if null.method == "pearson" else x.size * 8):
        hits += null.hits(rng.permuted(np.tile(np.arange(x.size, dtype=np.int16), (k, 1)), axis=1))
    return (hits + 1) / (n_perm + 1)


def _might_be_near(p: float, r: int, level: float = 0.05) -> bool:
    """Could the true p be within 2 level of ``level``? (the estimate's 99.9% Monte-Carlo interval reaches it)"""
    half = 3.29 * math.sqrt(max(p * (1 - p), 1.0 / r) / r)
    return p - half <= 2 * level


def permutation_pvalue(x: np.ndarray, y: np.ndarray, method: str, rng: np.random.Generator,
                       n_first: int = MC_FIRST, n_full: int = MC_FULL) -> tuple[float, str]:
    """``(p, p_method)``: exact enumeration for n <= 10, scipy's exact Kendall null without ties, else Monte
    Carlo (``n_first`` pairings, ``n_full`` when the estimate could be near 0.05)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if method == "kendall" and np.unique(x).size == x.size and np.unique(y).size == y.size:
        # without ties scipy's exact null is the enumeration's answer, in milliseconds (enumerating 10! takes 2 s)
        return float(sps.kendalltau(x, y, method="exact").pvalue), "exact" if x.size <= EXACT_MAX_N else "kendall-exact"
    if x.size <= EXACT_MAX_N:
        return exact_pvalue(x, y, method), "exact"
    p = monte_carlo_pvalue(x, y, method, n_first, rng)
    if n_full > n_first and _might_be_near(p, n_first):
        more = monte_carlo_pvalue(x, y, method, n_full - n_first, rng)
        hits = round(p * (n_first + 1)) - 1 + round(more * (n_full - n_first + 1)) - 1
        return (hits + 1) / (n_full + 1), f"monte-carlo-{n_full}"
    return p, f"monte-carlo-{n_first}"


def deattenuate(r: np.ndarray, reliability: np.ndarray) -> np.ndarray:
    """Spearman's correction for attenuation, r / sqrt(reliability), within [-1, 1]; where the reliability is
    <= 0 (the scores differ no more than their noise) the true correlation is open: +-1, the sign of r."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = reliability > 0
        return np.where(ok, np.clip(r / np.sqrt(np.where(ok, reliability, 1.0)), -1.0, 1.0), np.sign(r))


def bootstrap_ci(x: np.ndarray, y: np.ndarray, method: str, n_boot: int, rng: np.random.Generator,
                 level: float = 0.95, noise: ScoreNoise | None = None) -> tuple[float, float, str]:
    """Percentile bootstrap CI over resampled pairs: ``(low, high, note)``. Resamples whose correlation is
    undefined (a constant side) are dropped and counted in the note. Hand-written rather than
    ``scipy.stats.bootstrap``: the two-level draw does not fit its interface (for the one-level CI both give
    the same interval, ours 1.1-1.2x faster; benchmarks/stats.py).

    With ``noise`` it is the two-level interval of the correlation with the benchmarks' *true* scores: every
    resampled benchmark's score is re-estimated from its examples (:meth:`ScoreNoise.draw`), and each
    resample's r is corrected for the attenuation that score noise causes, r / sqrt(reliability), the
    reliability computed in that resample from its scores' spread and their error variance (the observed
    error plus the re-draw's). Re-drawing alone would count the noise twice (the observed scores already hold
    it) and pull every resample toward 0, shrinking the interval; the correction undoes that and widens it
    by the uncertainty of the true scores. A resample whose scores differ no more than their noise
    (reliability <= 0) leaves the true correlation open: it counts as +-1 (the sign of its r)."""
    rs = []
    err = noise.redrawn_error_variance() if noise is not None else None
    for k in _batches(n_boot, x.size):
        idx = rng.integers(0, x.size, size=(k, x.size))
        if noise is None:
            rs.append(_rowwise_r(x[idx], y[idx], method))
            continue
        yd = noise.draw(idx, rng)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = 1.0 - err[idx].mean(axis=1) / yd.var(axis=1, ddof=1)
        rs.append(deattenuate(_rowwise_r(x[idx], yd, method), rel))
    r = np.concatenate(rs)
    ok = r[np.isfinite(r)]
    note = f"{n_boot - ok.size} of {n_boot} bootstrap resamples degenerate" if ok.size < n_boot else ""
    if ok.size < max(2, n_boot // 2):
        return _NAN, _NAN, f"{note}: CI undefined"
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(ok, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high), note


def correlate(x: Iterable[float], y: Iterable[float], method: str = "spearman", *, n_boot: int = 0,
              p_method: str = "auto", seed: int = 0, ci_level: float = 0.95, noise: ScoreNoise | None = None,
              n_perm: int = MC_FIRST) -> CorrelationResult:
    """Correlation of ``x`` with ``y``: the statistic, a p-value (``p_method`` "auto": exact or permutation,
    see the module docstring; "asymptotic": scipy's), the asymptotic p, and with ``n_boot`` > 0 a percentile
    bootstrap CI over pairs, plus the two-level CI when ``noise`` describes how each y was estimated."""
    _check_method(method)
    if p_method not in P_METHODS:
        raise ValueError(f"unknown p_method {p_method!r}; choose one of {P_METHODS}")
    xa, ya, keep = _complete(x, y)
    dropped = int((~keep).sum())
    xa, ya = xa[keep], ya[keep]
    notes = [f"dropped {dropped} pair(s) with missing or non-finite values"] if dropped else []
    reason = undefined_reason(xa, ya)
    if reason:
        return CorrelationResult(method, int(xa.size), _NAN, _NAN, note="; ".join([reason, *notes]))
    fn = {"spearman": sps.spearmanr, "pearson": sps.pearsonr, "kendall": sps.kendalltau}[method]
    res = fn(xa, ya)
    p_asym = float(res.pvalue)
    if xa.size < MIN_N_P:
        p, how = _NAN, ""
        notes.insert(0, f"n={xa.size} < {MIN_N_P}: no p-value (the smallest two-sided permutation p, "
                        f"2/{xa.size}! = {2 / math.factorial(xa.size):.3f}, cannot reach 0.05)")
    elif p_method == "asymptotic":
        p, how = p_asym, "asymptotic"
    else:
        p, how = permutation_pvalue(xa, ya, method, np.random.default_rng([seed, 0]), n_first=n_perm)
    lo = hi = lo2 = hi2 = _NAN
    if n_boot > 0:
        lo, hi, bnote = bootstrap_ci(xa, ya, method, n_boot, np.random.default_rng([seed, 1]), ci_level)
        notes += [bnote] if bnote else []
    rel = _NAN
    if noise is not None:
        nz = noise.subset(keep)
        if not nz.usable():
            notes.append("two-level CI undefined: a score without its example count or rate")
        else:
            rel = nz.reliability(ya)
            if n_boot > 0:
                lo2, hi2, bnote = bootstrap_ci(xa, ya, method, n_boot, np.random.default_rng([seed, 2]), ci_level, nz)
                notes += [f"two-level: {bnote}"] if bnote else []
    return CorrelationResult(method, int(xa.size), float(res.statistic), p, how, p_asym, lo, hi, lo2, hi2,
                             rel, "; ".join(notes))


def wilson_interval(k: Iterable[float], n: Iterable[float], level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of k successes in n trials (scipy's ``binomtest(...).proportion_ci``, elementwise;
    NaN where n < 1)."""
    ks, ns = np.atleast_1d(np.asarray(k, float)), np.atleast_1d(np.asarray(n, float))
    lo, hi = np.full(ks.shape, _NAN), np.full(ks.shape, _NAN)
    for i, (kk, nn) in enumerate(zip(ks, ns)):
        if np.isfinite(kk) and np.isfinite(nn) and nn >= 1:
            ci = sps.binomtest(int(round(kk)), int(nn)).proportion_ci(level, method="wilson")
            lo[i], hi[i] = ci.low, ci.high
    return lo, hi


# --------------------------------------------------------------------------- multiple testing
def adjust_pvalues(p: Iterable[float], method: str = "by") -> np.ndarray:
    """Adjusted p-values: Benjamini–Yekutieli (``by``) and Benjamini–Hochberg (``bh``) by scipy's
    ``false_discovery_control``, Holm (``holm``; scipy has none), or ``none``. NaN entries stay NaN and are not
    counted in the number of tests."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose one of {CORRECTIONS}")
    pa = np.asarray(list(p), dtype=float)
    out = pa.copy()
    ok = np.isfinite(pa)
    m = int(ok.sum())
    if method == "none" or m == 0:
        return out
    if ((pa[ok] < 0) | (pa[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    if method in ("bh", "by"):
        out[ok] = sps.false_discovery_control(pa[ok], method=method)
        return out
    order = np.argsort(pa[ok], kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * pa[ok][order])
    back = np.empty(m)
    back[order] = np.minimum(adj, 1.0)
    out[ok] = back
    return out


# --------------------------------------------------------------------------- orientation
def resolve_directions(measures: Sequence[str],
                       directions: Mapping[str, int] | None = None) -> dict[str, tuple[int, str]]:
    """``{measure: (direction, note)}``: from ``directions``, else the measure registry, else +1
    with a note saying it was assumed."""
    out: dict[str, tuple[int, str]] = {}
    for m in measures:
        if directions is not None and m in directions:
            d, note = int(directions[m]), ""
        elif m in MEASURES:
            d, note = MEASURES[m].direction, ""
        else:
            d, note = 1, "direction not given; assumed +1 (higher = more similar)"
        if d not in (1, -1):
            raise ValueError(f"measure {m!r}: direction must be +1 or -1, got {d}")
        out[m] = (d, note)
    return out


# --------------------------------------------------------------------------- grids
def _cell_seed(seed: int, group: Any, measure: str, score: str) -> int:
    return seeded_hash64(seed, canonical_json([group, measure, score]))


NOISE_FIELDS = ("n_examples", "rate", "offset", "scale")


def _grid_rows(df: pd.DataFrame, cells: list[tuple[str, str]], dirs: dict[str, tuple[int, str]],
               method: str, correction: str, n_boot: int, p_method: str, seed: int, group: Any,
               noise: Mapping[str, Mapping[str, str]], n_perm: int) -> list[dict[str, Any]]:
    rows = []
    for measure, score in cells:
        nz = None
        if score in noise:
            nz = ScoreNoise.of(*(df[noise[score][f]].to_numpy(dtype=float) for f in NOISE_FIELDS))
        res = correlate(df[measure], df[score], method, n_boot=n_boot, p_method=p_method, n_perm=n_perm,
                        seed=_cell_seed(seed, group, measure, score), noise=nz)
        d, dnote = dirs[measure]
        rows.append({
            "measure": measure, "score": score, "method": method, "n": res.n, "r": res.r, "p": res.p,
            "p_method": res.p_method, "p_asymptotic": res.p_asymptotic, "ci_low": res.ci_low,
            "ci_high": res.ci_high, "ci2_low": res.ci2_low, "ci2_high": res.ci2_high,
            "reliability": res.reliability, "direction": d,
            "r_oriented": res.r * d, "expected_sign": d,
            "note": "; ".join(s for s in (res.note, dnote) if s),
        })
    for row, padj in zip(rows, adjust_pvalues([r["p"] for r in rows], correction)):
        row["p_adj"] = float(padj)
    return rows


def correlation_grid(df: pd.DataFrame, measures: Sequence[str], scores: Sequence[str],
                     method: str = "spearman", correction: str = "by", n_boot: int = 0,
                     p_method: str = "auto", seed: int = 0, directions: Mapping[str, int] | None = None,
                     group_by: str | Sequence[str] | None = None,
                     pairs: Iterable[tuple[str, str]] | None = None,
                     noise: Mapping[str, Mapping[str, str]] | None = None, n_perm: int = MC_FIRST) -> pd.DataFrame:
    """One row per (group..., measure, score) with columns :data:`GRID_COLUMNS`.

    ``pairs`` restricts the cross product ``measures x scores`` to the listed (measure, score)
    pairs (each must be in it). The correction runs over all cells of the grid, or over the cells
    of each group separately when ``group_by`` (a column or list of columns) is given. ``noise`` maps a
    score to the columns of ``df`` holding its :class:`ScoreNoise` fields (``{"n_examples": col, "rate": col,
    "offset": col, "scale": col}``): those scores get the two-level interval.
    """
    _check_method(method)
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose one of {CORRECTIONS}")
    cells = [(m, s) for m in measures for s in scores]
    if pairs is not None:
        wanted = [tuple(p) for p in pairs]
        stray = [p for p in wanted if p not in cells]
        if stray:
            raise ValueError(f"pairs not in measures x scores: {stray}")
        cells = [c for c in cells if c in wanted]
    groups = [group_by] if isinstance(group_by, str) else list(group_by or [])
    noise = dict(noise or {})
    noise_cols = [c for spec in noise.values() for c in (spec[f] for f in NOISE_FIELDS)]
    numeric = numeric_columns(df, list(dict.fromkeys([*measures, *scores, *noise_cols])))
    for g in groups:
        if g not in df.columns:
            raise ValueError(f"table: no group_by column {g!r}")
    dirs = resolve_directions(list(measures), directions)
    if not groups:
        rows = _grid_rows(numeric, cells, dirs, method, correction, n_boot, p_method, seed, None, noise, n_perm)
        return pd.DataFrame(rows, columns=GRID_COLUMNS)
    rows = []
    by = groups[0] if len(groups) == 1 else groups
    for key, idx in df.groupby(by, sort=True, dropna=False).groups.items():
        key = key if isinstance(key, tuple) else (key,)
        label = dict(zip(groups, key))
        for row in _grid_rows(numeric.loc[idx], cells, dirs, method, correction, n_boot, p_method,
                              seed, [str(k) for k in key], noise, n_perm):
            rows.append({**label, **row})
    return pd.DataFrame(rows, columns=[*groups, *GRID_COLUMNS])


def agreement_matrix(df: pd.DataFrame, measures: Sequence[str], method: str = "spearman",
                     directions: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Measure x measure correlations of the oriented measures (value x direction), so measures
    that agree on what is "more similar" correlate positively. Pairwise-complete; undefined = NaN."""
    _check_method(method)
    num = numeric_columns(df, list(measures))
    dirs = resolve_directions(list(measures), directions)
    out = pd.DataFrame(np.nan, index=list(measures), columns=list(measures))
    for i, a in enumerate(measures):
        for b in measures[i:]:
            r = correlate(num[a] * dirs[a][0], num[b] * dirs[b][0], method, p_method="asymptotic").r  # r only
            out.loc[a, b] = out.loc[b, a] = r
    return out


# --------------------------------------------------------------------------- per-example
TIE_RTOL = 1e-6  # similarities closer than this (relative) are one value: float32 noise is ~1e-7


def tie_within_tolerance(values: np.ndarray, rtol: float = TIE_RTOL) -> np.ndarray:
    """``values`` with every run of sorted neighbours closer than ``rtol`` (relative to the larger magnitude)
    replaced by the run's smallest value, so that ranks treat them as ties.

    Texts that embed identically get cosines that differ in the 8th digit depending on the BLAS's blocking (its
    thread count): XCOPA-th's 30 Thai examples, nearly all unknown tokens to MiniLM, split into two groups 3e-8
    apart, and the AUROC over that split moved from 0.52 to 0.36 between two runs of the same study."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return v.copy()
    order = np.argsort(v, kind="stable")
    sv = v[order]
    gap = np.diff(sv) > rtol * np.maximum(np.abs(sv[1:]), np.abs(sv[:-1]))
    start = np.concatenate([[0], np.flatnonzero(gap) + 1])
    out = np.empty_like(v)
    out[order] = sv[start[np.cumsum(np.concatenate([[True], gap])) - 1]]
    return out


def per_example_analysis(similarity: Iterable[float], correct: Iterable[Any]) -> dict[str, Any]:
    """Does similarity separate correctly from incorrectly answered examples?

    Returns ``n`` (pairs used), ``n_correct``, ``n_incorrect``, ``auroc`` (= Mann–Whitney U of the
    correct group / (n1 n0), ties counting 1/2), ``mannwhitney_u``, ``p_mannwhitney`` (two-sided),
    ``mean_similarity_correct``/``_incorrect``, ``quartiles`` and ``note``.

    Quartiles are rank-based: with average ranks r in [1, n] (ties share a rank, so tied
    similarities always fall in the same quartile), an example goes to quartile ceil(4 r / n)
    (1 = least similar). Quartiles may therefore differ in size, and are empty when n < 4. Each
    quartile reports ``quartile, n, accuracy, similarity_min, similarity_max``. Similarities within
    :data:`TIE_RTOL` of each other rank as ties (:func:`tie_within_tolerance`).
    """
    s = np.asarray(pd.to_numeric(pd.Series(list(similarity), dtype=object)), dtype=float)
    c = pd.to_numeric(pd.Series(list(correct), dtype=object)).to_numpy(dtype=float)
    if s.shape != c.shape:
        raise ValueError(f"similarity and correct differ in length: {s.size} vs {c.size}")
    keep = np.isfinite(s) & np.isfinite(c)
    s, c = s[keep], c[keep]
    if not np.isin(c, (0.0, 1.0)).all():
        raise ValueError("correct must hold only 0/1 or booleans")
    ok = c == 1
    n1, n0 = int(ok.sum()), int((~ok).sum())
    notes = [f"dropped {int((~keep).sum())} example(s) with missing values"] if (~keep).any() else []
    s_raw, s = s, tie_within_tolerance(s)  # ranks (AUROC, U, quartiles) from values that float noise cannot split
    auroc = u = p = _NAN
    if n1 and n0:
        mw = sps.mannwhitneyu(s[ok], s[~ok], alternative="two-sided")
        u, p = float(mw.statistic), float(mw.pvalue)
        # U / (n1 n0) is the AUROC (sklearn's roc_auc_score agrees to 1e-15, test_stats), without its ~2.8 ms
        # of input validation per call: 2,223 calls were 5.5 s of the quick study's per-example step
        auroc = u / (n1 * n0)
    else:
        what = "no examples" if s.size == 0 else ("all examples correct" if n1 else "all examples incorrect")
        notes.insert(0, f"{what}: AUROC and Mann-Whitney test undefined")
    quart = np.ceil(4 * sps.rankdata(s) / max(s.size, 1)).astype(int) if s.size else np.array([], int)
    quartiles = []
    for q in range(1, 5):
        sel = quart == q
        quartiles.append({
            "quartile": q, "n": int(sel.sum()),
            "accuracy": float(c[sel].mean()) if sel.any() else _NAN,
            "similarity_min": float(s_raw[sel].min()) if sel.any() else _NAN,
            "similarity_max": float(s_raw[sel].max()) if sel.any() else _NAN,
        })
    return {
        "n": int(s.size), "n_correct": n1, "n_incorrect": n0, "auroc": auroc, "mannwhitney_u": u,
        "p_mannwhitney": p,
        "mean_similarity_correct": float(s_raw[ok].mean()) if n1 else _NAN,
        "mean_similarity_incorrect": float(s_raw[~ok].mean()) if n0 else _NAN,
        "quartiles": quartiles, "note": "; ".join(notes),
    }
