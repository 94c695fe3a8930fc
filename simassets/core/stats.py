"""Correlation and statistics engine: similarity measures against benchmark scores.

Conventions (tested in ``simassets_tests/test_stats.py``):

* **Undefined correlations.** When fewer than 3 complete pairs remain, or either side is constant,
  ``r`` and ``p`` are ``NaN`` (a float, so DataFrame columns stay numeric) and ``note`` says why,
  e.g. ``"n=2 < 3: correlation undefined"``. Nothing undefined leaves without a note.
* **Missing values.** Pairs where either value is missing or non-finite are dropped; ``n`` is the
  number of pairs actually used and ``note`` records how many were dropped.
* **Resampling.** Permutation p-values are two-sided with the +1 correction,
  ``(1 + #{|r_perm| >= |r_obs|}) / (n_perm + 1)``; bootstrap CIs are percentile intervals over
  resampled *pairs*. Both are seeded; in :func:`correlation_grid` every cell draws from its own
  stream derived from ``(seed, group, measure, score)``, so a cell's figures do not depend on which
  other cells are in the grid.
* **Orientation.** Each measure has a direction (+1: higher = more similar, -1: higher = less
  similar; see :mod:`simassets.core.measures.registry`). Scores are taken as higher = better.
  ``r_oriented = r * direction`` is positive whenever "more similar => better";
  ``expected_sign`` (= direction) is the sign the *raw* ``r`` has under that hypothesis.
* **Multiple testing.** ``p_adj`` adjusts the analytic ``p`` across the whole grid (within each
  group when ``group_by`` is given); undefined cells (NaN p) are left out of the count ``m``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from simassets.core.hashing import canonical_json, seeded_hash64
from simassets.core.measures.registry import MEASURES

METHODS = ("spearman", "pearson", "kendall")
CORRECTIONS = ("by", "bh", "holm", "none")
MIN_N = 3
GRID_COLUMNS = [
    "measure", "score", "method", "n", "r", "p", "p_adj", "ci_low", "ci_high", "p_perm",
    "direction", "r_oriented", "expected_sign", "note",
]
_NAN = float("nan")
_CHUNK = 1 << 20  # elements per resampling batch (bounds memory for large n)


@dataclass(frozen=True)
class CorrelationResult:
    """One correlation. ``r``/``p``/CI/``p_perm`` are NaN when undefined or not requested."""

    method: str
    n: int
    r: float
    p: float
    ci_low: float = _NAN
    ci_high: float = _NAN
    p_perm: float = _NAN
    note: str = ""

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.r))


# --------------------------------------------------------------------------- input handling
def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown correlation method {method!r}; choose one of {METHODS}")


def complete_pairs(x: Iterable[float], y: Iterable[float]) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop pairs where either value is missing or non-finite; return ``(x, y, n_dropped)``."""
    xa = np.asarray(pd.to_numeric(pd.Series(list(x), dtype=object), errors="raise"), dtype=float)
    ya = np.asarray(pd.to_numeric(pd.Series(list(y), dtype=object), errors="raise"), dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep], int((~keep).sum())


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
        # (identical to scipy's tau-b, ~10x faster for the bootstrap/permutation matrices)
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


def permutation_pvalue(x: np.ndarray, y: np.ndarray, method: str, n_perm: int,
                       rng: np.random.Generator) -> float:
    """Two-sided permutation p-value of the correlation, with the +1 correction."""
    if method == "spearman":  # permuting y permutes its ranks: rank once, then correlate ranks
        x, y, method = sps.rankdata(x), sps.rankdata(y), "pearson"
    r_obs = abs(_rowwise_r(x[None], y[None], method)[0])
    hits = 0
    for k in _batches(n_perm, x.size):
        perms = rng.permuted(np.tile(y, (k, 1)), axis=1)
        r = _rowwise_r(np.broadcast_to(x, perms.shape), perms, method)
        hits += int((np.abs(r) >= r_obs - 1e-12).sum())
    return (hits + 1) / (n_perm + 1)


def bootstrap_ci(x: np.ndarray, y: np.ndarray, method: str, n_boot: int, rng: np.random.Generator,
                 level: float = 0.95) -> tuple[float, float, str]:
    """Percentile bootstrap CI over resampled pairs: ``(low, high, note)``. Resamples whose
    correlation is undefined (a constant side) are dropped and counted in the note."""
    rs = []
    for k in _batches(n_boot, x.size):
        idx = rng.integers(0, x.size, size=(k, x.size))
        rs.append(_rowwise_r(x[idx], y[idx], method))
    r = np.concatenate(rs)
    ok = r[np.isfinite(r)]
    note = f"{n_boot - ok.size} of {n_boot} bootstrap resamples degenerate" if ok.size < n_boot else ""
    if ok.size < max(2, n_boot // 2):
        return _NAN, _NAN, f"{note}: CI undefined"
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(ok, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high), note


def correlate(x: Iterable[float], y: Iterable[float], method: str = "spearman", *, n_boot: int = 0,
              n_perm: int = 0, seed: int = 0, ci_level: float = 0.95) -> CorrelationResult:
    """Correlation of ``x`` with ``y`` (scipy statistic and analytic p-value), optionally with a
    seeded permutation p-value (``n_perm`` > 0) and percentile bootstrap CI (``n_boot`` > 0)."""
    _check_method(method)
    xa, ya, dropped = complete_pairs(x, y)
    notes = [f"dropped {dropped} pair(s) with missing or non-finite values"] if dropped else []
    reason = undefined_reason(xa, ya)
    if reason:
        return CorrelationResult(method, int(xa.size), _NAN, _NAN, note="; ".join([reason, *notes]))
    fn = {"spearman": sps.spearmanr, "pearson": sps.pearsonr, "kendall": sps.kendalltau}[method]
    res = fn(xa, ya)
    lo = hi = pp = _NAN
    if n_perm > 0:
        pp = permutation_pvalue(xa, ya, method, n_perm, np.random.default_rng([seed, 0]))
    if n_boot > 0:
        lo, hi, bnote = bootstrap_ci(xa, ya, method, n_boot, np.random.default_rng([seed, 1]), ci_level)
        notes += [bnote] if bnote else []
    return CorrelationResult(method, int(xa.size), float(res.statistic), float(res.pvalue),
                             lo, hi, pp, "; ".join(notes))


# --------------------------------------------------------------------------- multiple testing
def adjust_pvalues(p: Iterable[float], method: str = "by") -> np.ndarray:
    """Adjusted p-values: Benjamini–Yekutieli (``by``), Benjamini–Hochberg (``bh``), Holm
    (``holm``) or ``none``. NaN entries stay NaN and are not counted in the number of tests."""
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
    order = np.argsort(pa[ok], kind="stable")
    ps = pa[ok][order]
    rank = np.arange(1, m + 1)
    if method == "holm":
        adj = np.maximum.accumulate((m - rank + 1) * ps)
    else:
        scale = np.sum(1.0 / rank) if method == "by" else 1.0
        adj = np.minimum.accumulate((ps * m * scale / rank)[::-1])[::-1]
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


def _grid_rows(df: pd.DataFrame, cells: list[tuple[str, str]], dirs: dict[str, tuple[int, str]],
               method: str, correction: str, n_boot: int, n_perm: int, seed: int,
               group: Any) -> list[dict[str, Any]]:
    rows = []
    for measure, score in cells:
        res = correlate(df[measure], df[score], method, n_boot=n_boot, n_perm=n_perm,
                        seed=_cell_seed(seed, group, measure, score))
        d, dnote = dirs[measure]
        rows.append({
            "measure": measure, "score": score, "method": method, "n": res.n, "r": res.r, "p": res.p,
            "ci_low": res.ci_low, "ci_high": res.ci_high, "p_perm": res.p_perm, "direction": d,
            "r_oriented": res.r * d, "expected_sign": d,
            "note": "; ".join(s for s in (res.note, dnote) if s),
        })
    for row, padj in zip(rows, adjust_pvalues([r["p"] for r in rows], correction)):
        row["p_adj"] = float(padj)
    return rows


def correlation_grid(df: pd.DataFrame, measures: Sequence[str], scores: Sequence[str],
                     method: str = "spearman", correction: str = "by", n_boot: int = 0,
                     n_perm: int = 0, seed: int = 0, directions: Mapping[str, int] | None = None,
                     group_by: str | Sequence[str] | None = None,
                     pairs: Iterable[tuple[str, str]] | None = None) -> pd.DataFrame:
    """One row per (group..., measure, score) with columns :data:`GRID_COLUMNS`.

    ``pairs`` restricts the cross product ``measures x scores`` to the listed (measure, score)
    pairs (each must be in it). The correction runs over all cells of the grid, or over the cells
    of each group separately when ``group_by`` (a column or list of columns) is given.
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
    numeric = numeric_columns(df, list(dict.fromkeys([*measures, *scores])))
    for g in groups:
        if g not in df.columns:
            raise ValueError(f"table: no group_by column {g!r}")
    dirs = resolve_directions(list(measures), directions)
    if not groups:
        rows = _grid_rows(numeric, cells, dirs, method, correction, n_boot, n_perm, seed, None)
        return pd.DataFrame(rows, columns=GRID_COLUMNS)
    rows = []
    by = groups[0] if len(groups) == 1 else groups
    for key, idx in df.groupby(by, sort=True, dropna=False).groups.items():
        key = key if isinstance(key, tuple) else (key,)
        label = dict(zip(groups, key))
        for row in _grid_rows(numeric.loc[idx], cells, dirs, method, correction, n_boot, n_perm,
                              seed, [str(k) for k in key]):
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
            r = correlate(num[a] * dirs[a][0], num[b] * dirs[b][0], method).r
            out.loc[a, b] = out.loc[b, a] = r
    return out


# --------------------------------------------------------------------------- per-example
def per_example_analysis(similarity: Iterable[float], correct: Iterable[Any]) -> dict[str, Any]:
    """Does similarity separate correctly from incorrectly answered examples?

    Returns ``n`` (pairs used), ``n_correct``, ``n_incorrect``, ``auroc`` (= Mann–Whitney U of the
    correct group / (n1 n0), ties counting 1/2), ``mannwhitney_u``, ``p_mannwhitney`` (two-sided),
    ``mean_similarity_correct``/``_incorrect``, ``quartiles`` and ``note``.

    Quartiles are rank-based: with average ranks r in [1, n] (ties share a rank, so tied
    similarities always fall in the same quartile), an example goes to quartile ceil(4 r / n)
    (1 = least similar). Quartiles may therefore differ in size, and are empty when n < 4. Each
    quartile reports ``quartile, n, accuracy, similarity_min, similarity_max``.
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
    auroc = u = p = _NAN
    if n1 and n0:
        ranks = sps.rankdata(s)
        u = float(ranks[ok].sum() - n1 * (n1 + 1) / 2)
        auroc = u / (n1 * n0)
        p = float(sps.mannwhitneyu(s[ok], s[~ok], alternative="two-sided").pvalue)
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
            "similarity_min": float(s[sel].min()) if sel.any() else _NAN,
            "similarity_max": float(s[sel].max()) if sel.any() else _NAN,
        })
    return {
        "n": int(s.size), "n_correct": n1, "n_incorrect": n0, "auroc": auroc, "mannwhitney_u": u,
        "p_mannwhitney": p,
        "mean_similarity_correct": float(s[ok].mean()) if n1 else _NAN,
        "mean_similarity_incorrect": float(s[~ok].mean()) if n0 else _NAN,
        "quartiles": quartiles, "note": "; ".join(notes),
    }
