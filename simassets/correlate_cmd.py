"""``simassets correlate``: the correlation engine on any CSV of per-benchmark measures and scores.

    simassets correlate TABLE.csv --score COL [--score COL ...] --measure COL [--measure COL ...]
        [--method spearman|pearson|kendall] [--correction by|bh|holm|none] [--bootstrap N]
        [--p-method auto|asymptotic] [--permutations N] [--seed S] [--out FILE.csv] [--direction COL=+1|-1 ...]

Every (measure, score) pair is correlated over the rows (benchmarks) where both are present; the
correction runs across all pairs. p-values are exact (all n! pairings) up to n = 10 and permutation
estimates above (see :mod:`simassets.core.stats`); ``--p-method asymptotic`` uses scipy's t / normal
approximation instead, which is what the papers report; ``p_asymptotic`` is always printed. ``--out``
writes one row per pair with the columns :data:`OUT_COLUMNS`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from simassets.core import stats

OUT_COLUMNS = ["measure", "score", "method", "n", "r", "p", "p_method", "p_asymptotic", "p_adj", "ci_low", "ci_high"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``correlate`` on ``subparsers``; the parser's default ``func`` is :func:`run`."""
    p = subparsers.add_parser(
        "correlate", help="correlate similarity measures with benchmark scores from a CSV",
        description="Correlate similarity measures with benchmark scores over the rows (benchmarks) "
                    "of a CSV, with a multiple-testing correction across all (measure, score) pairs.")
    p.add_argument("table", help="CSV with one row per benchmark")
    p.add_argument("--score", action="append", required=True, metavar="COL",
                   help="score column (higher = better); repeatable")
    p.add_argument("--measure", action="append", required=True, metavar="COL",
                   help="similarity measure column; repeatable")
    p.add_argument("--method", choices=stats.METHODS, default="spearman")
    p.add_argument("--correction", choices=stats.CORRECTIONS, default="by",
                   help="multiple-testing correction across all pairs (default: Benjamini-Yekutieli)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples for a 95%% CI")
    p.add_argument("--p-method", choices=stats.P_METHODS, default="auto",
                   help="auto (default): exact for n <= 10, else permutation; asymptotic: scipy's approximation")
    p.add_argument("--permutations", type=int, default=stats.MC_FIRST, metavar="N",
                   help=f"first-stage Monte-Carlo pairings above n = 10 (default {stats.MC_FIRST:,}; "
                        f"{stats.MC_FULL:,} when p could be near 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed for permutations and bootstrap")
    p.add_argument("--out", metavar="FILE.csv", help="write one row per (measure, score)")
    p.add_argument("--direction", action="append", default=[], metavar="COL=+1|-1",
                   help="orientation of a measure (+1: higher = more similar); default: the "
                        "measure registry, else +1")
    p.set_defaults(func=run)
    return p


def parse_directions(items: list[str], measures: list[str]) -> dict[str, int]:
    """``["kl=-1", "cos=+1"]`` -> ``{"kl": -1, "cos": 1}``; each column must be a measure."""
    out: dict[str, int] = {}
    for item in items:
        col, sep, value = item.rpartition("=")
        if not sep or value.strip() not in ("1", "+1", "-1"):
            raise ValueError(f"--direction {item!r}: expected COL=+1 or COL=-1")
        if col not in measures:
            raise ValueError(f"--direction {item!r}: {col!r} is not one of the --measure columns")
        out[col] = int(value)
    return out


def _fmt(x: float) -> str:
    return "" if pd.isna(x) else (f"{x:.2e}" if 0 < abs(x) < 1e-3 else f"{x:.3f}")


def format_table(grid: pd.DataFrame) -> str:
    """A readable text table of a correlation grid."""
    cols = ["measure", "score", "n", "r", "p", "p_method", "p_asymptotic", "p_adj", "ci_low", "ci_high", "r_oriented",
            "note"]
    show = grid[[c for c in cols if c in grid.columns]].copy()
    for c in ("r", "p", "p_asymptotic", "p_adj", "ci_low", "ci_high", "r_oriented"):
        if show[c].isna().all():
            show = show.drop(columns=c)
        else:
            show[c] = show[c].map(_fmt)
    if (show["note"] == "").all():
        show = show.drop(columns="note")
    return show.to_string(index=False)


def run(args: argparse.Namespace) -> int:
    """Run ``correlate``; 0 on success, 2 on bad input (message on stderr)."""
    try:
        path = Path(args.table)
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        df = pd.read_csv(path)
        df.index = pd.RangeIndex(2, len(df) + 2)  # file line numbers, for error messages
        measures = list(dict.fromkeys(args.measure))
        scores = list(dict.fromkeys(args.score))
        stats.numeric_columns(df, measures + scores, source=str(path), row_name="line")
        dirs = stats.resolve_directions(measures, parse_directions(args.direction, measures))
        grid = stats.correlation_grid(
            df, measures, scores, method=args.method, correction=args.correction,
            n_boot=args.bootstrap, p_method=args.p_method, n_perm=args.permutations, seed=args.seed,
            directions={m: d for m, (d, _) in dirs.items()})
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        print(f"simassets correlate: error: {exc}", file=sys.stderr)
        return 2
    sig = int((grid["p_adj"] < 0.05).sum())
    print(f"{args.method} correlation over {len(df)} rows of {path}; {len(grid)} (measure, score) "
          f"pairs; {args.p_method} p-values; {args.correction} correction; {sig} with p_adj < 0.05")
    assumed = [m for m, (_, note) in dirs.items() if note]
    if assumed:
        print(f"direction assumed +1 (higher = more similar) for: {', '.join(assumed)}")
    print(format_table(grid))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        grid[OUT_COLUMNS].to_csv(out, index=False)
        print(f"wrote {out}")
    return 0
