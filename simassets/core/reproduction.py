"""Published results this project reproduces, next to its own figures.

Yauney, Reif & Mimno (EMNLP 2023), Tables 1 (Spearman) and 3 (Pearson): 16 BIG-bench Lite multiple-choice tasks,
each similarity measure against each model's random-baseline-normalised aggregate score, from the CSV the
authors released (``published/yauney2023/bigbench-raw-results-multiple-choice.csv`` under the data root;
gyauney/data-similarity-is-not-enough @ 37c0f9b, ``raw-results/``). Pile measures meet Pythia-6.9B (0-shot), C4
measures T5 v1.1 XL and FLAN-T5 XL (0- and 2-shot). The cells are those the authors' ``tables-1-and-3.py``
prints (``f"{r:.2f}"``, ``f"{p:.3f}"``, scipy's asymptotic p); ``simassets_tests/test_yauney_reproduction.py``
checks that this project's engine reproduces every one, and :func:`yauney_tables` sets them side by side with
this project's exact / permutation p for the report.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from simassets.core import stats
from simassets.core.paths import data_root

YAUNEY_CSV = Path("published") / "yauney2023" / "bigbench-raw-results-multiple-choice.csv"
MODELS = ("Pythia 6.9B (0 shot)", "T5 v1.1 XL (0 shot)", "T5 v1.1 XL (2 shot)", "FLAN-T5 XL (0 shot)",
          "FLAN-T5 XL (2 shot)")
SCORES = [f"{m} normalized aggregate score" for m in MODELS]
_PPL = "perplexity per token (mean across examples)"
# table row -> (measure column for each of the five SCORES columns, direction: -1 = less similar)
ROWS: dict[str, tuple[list[str], int]] = {
    "Bigram KL-divergence": (["Average KL-divergence from the Pile (Hashed WPT bigrams)"]
                             + ["Average KL-divergence from C4 (Hashed WPT bigrams)"] * 4, -1),
    "MAUVE score": (["Average MAUVE score with the Pile"] + ["Average MAUVE score with C4"] * 4, 1),
    "Max cosine similarity": (["Mean max cosine similarity with the Pile (mean across examples)"]
                              + ["Mean max cosine similarity with C4 (mean across examples)"] * 4, 1),
    "Mean cosine similarity": (["Mean top 1000 cosine similarity with the Pile (mean across examples)"]
                               + ["Mean top 1000 cosine similarity with C4 (mean across examples)"] * 4, 1),
    "Input perplexity": ([f"Pythia 6.9B (0 shot) input with choices {_PPL}"]
                         + [f"T5 v1.1 XL (0 shot) input with choices {_PPL}"] * 2
                         + [f"FLAN-T5 XL (0 shot) input with choices {_PPL}"] * 2, -1),
    "Correct target perplexity": ([f"{m} correct choice {_PPL}" for m in (
        "Pythia 6.9B (0 shot)", "T5 v1.1 XL (0 shot)", "T5 v1.1 XL (2 shot)",
        "FLAN-T5 XL (0 shot)", "FLAN-T5 XL (2 shot)")], -1),
}
PAIRS = [(measure, score) for cols, _ in ROWS.values() for measure, score in zip(cols, SCORES)]
DIRECTIONS = {m: d for cols, d in ROWS.values() for m in cols}

# Table 1 (Spearman rho, p) and Table 3 (Pearson r, p); columns: Pythia-6.9B 0-shot (the Pile),
# T5 v1.1 XL 0-shot, 2-shot, FLAN-T5 XL 0-shot, 2-shot (C4). See the module docstring for provenance.
TABLE1 = {
    "Bigram KL-divergence": [(-0.06, .837), (-0.10, .708), (-0.04, .897), (-0.67, .005), (-0.64, .007)],
    "MAUVE score": [(-0.36, .165), (0.19, .478), (0.27, .318), (0.26, .329), (0.46, .075)],
    "Max cosine similarity": [(0.08, .778), (-0.10, .716), (-0.26, .339), (0.14, .594), (-0.13, .633)],
    "Mean cosine similarity": [(0.07, .795), (-0.05, .867), (-0.19, .478), (0.19, .492), (-0.10, .713)],
    "Input perplexity": [(0.09, .729), (-0.13, .644), (-0.24, .374), (-0.16, .542), (0.12, .664)],
    "Correct target perplexity": [(0.44, .085), (0.09, .745), (-0.02, .948), (-0.21, .431), (-0.25, .356)],
}
TABLE3 = {
    "Bigram KL-divergence": [(-0.09, .754), (0.05, .841), (0.02, .942), (-0.55, .029), (-0.64, .007)],
    "MAUVE score": [(-0.26, .331), (-0.14, .616), (-0.04, .873), (0.40, .122), (0.32, .226)],
    "Max cosine similarity": [(0.39, .132), (-0.21, .435), (-0.32, .227), (0.05, .840), (-0.14, .595)],
    "Mean cosine similarity": [(0.41, .119), (-0.19, .472), (-0.29, .284), (0.08, .771), (-0.13, .632)],
    "Input perplexity": [(-0.06, .835), (0.08, .775), (0.04, .888), (-0.16, .545), (0.09, .733)],
    "Correct target perplexity": [(0.58, .018), (-0.04, .869), (0.06, .838), (-0.19, .492), (-0.16, .545)],
}
TABLES = {"spearman": TABLE1, "pearson": TABLE3}


def _expected(method: str) -> dict[tuple[str, str], tuple[float, float]]:
    return {pair: cell for row, cells in TABLES[method].items()
            for pair, cell in zip(zip(ROWS[row][0], SCORES), cells)}




def expected(method: str) -> dict[tuple[str, str], tuple[float, float]]:
    """``{(measure column, score column): (r, p)}`` as published, for ``spearman`` (Table 1) or ``pearson`` (3)."""
    return {pair: cell for row, cells in TABLES[method].items()
            for pair, cell in zip(zip(ROWS[row][0], SCORES), cells)}


def yauney_csv(root: Path | None = None) -> Path:
    return (root or data_root()) / YAUNEY_CSV


def yauney_tables(root: Path | None = None, seed: int = 0) -> pd.DataFrame:
    """Tables 1 and 3, one row per cell: the published r and p, this project's r, its asymptotic p (theirs) and
    its exact-or-permutation p. Empty when the published CSV is not under the data root."""
    path = yauney_csv(root)
    if not path.is_file():
        return pd.DataFrame()
    table = pd.read_csv(path)
    measures = list(dict.fromkeys(m for m, _ in PAIRS))
    rows = []
    for method, table_no in (("spearman", 1), ("pearson", 3)):
        grid = stats.correlation_grid(table, measures, SCORES, method=method, pairs=PAIRS, directions=DIRECTIONS,
                                      seed=seed).set_index(["measure", "score"])
        pub = expected(method)
        for row_name, (cols, _) in ROWS.items():
            for measure, score, model in zip(cols, SCORES, MODELS):
                ours = grid.loc[(measure, score)]
                r_pub, p_pub = pub[(measure, score)]
                rows.append({"table": table_no, "method": method, "measure": row_name, "model": model,
                             "r_published": r_pub, "p_published": p_pub, "r": float(ours["r"]),
                             "p_asymptotic": float(ours["p_asymptotic"]), "p": float(ours["p"]),
                             "p_method": ours["p_method"], "p_adj": float(ours["p_adj"])})
    return pd.DataFrame(rows)
