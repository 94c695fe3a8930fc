"""Known-value tests for simassets.core.stats and the ``correlate`` command."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, mannwhitneyu

from simassets import correlate_cmd
from simassets.core import stats

X4, Y4 = [1, 2, 3, 4], [1, 3, 2, 4]  # one adjacent swap: sum d^2 = 2, one discordant pair of 6


# --------------------------------------------------------------------------- point estimates
def test_spearman_kendall_pearson_hand_values():
    sp = stats.correlate(X4, Y4, "spearman")
    assert sp.r == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert sp.p == pytest.approx(0.2)  # t = rho*sqrt(2/(1-rho^2)), df=2: p = 1 - t/sqrt(2+t^2) = 0.2
    assert sp.n == 4 and sp.note == ""
    assert stats.correlate(X4, Y4, "kendall").r == pytest.approx(2 / 3)  # (5 - 1) / 6
    pe = stats.correlate([1, 2, 3], [1, 2, 4], "pearson")
    assert pe.r == pytest.approx(math.sqrt(27 / 28))  # 3 / sqrt(2 * 14/3)
    # df = 1: t is Cauchy, t = sqrt(27): p = 1 - (2/pi) atan(t)
    assert pe.p == pytest.approx(1 - 2 / math.pi * math.atan(math.sqrt(27)))


def test_ties_use_average_ranks_and_tau_b():
    x, y = [1, 2, 2, 3], [1, 2, 3, 4]
    # ranks of x: 1, 2.5, 2.5, 4 -> Pearson of ranks = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert stats.correlate(x, y, "spearman").r == pytest.approx(3 / math.sqrt(10))
    # 5 concordant, 0 discordant, 1 pair tied in x: tau_b = 5 / sqrt((6 - 1) * 6)
    assert stats.correlate(x, y, "kendall").r == pytest.approx(5 / math.sqrt(30))


@pytest.mark.parametrize("method", stats.METHODS)
def test_perfect_correlation(method):
    x = np.arange(10.0)
    assert stats.correlate(x, 2 * x + 1, method).r == pytest.approx(1.0)
    assert stats.correlate(x, -3 * x, method).r == pytest.approx(-1.0)
    if method != "pearson":  # monotone but not linear
        assert stats.correlate(x, np.exp(x), method).r == pytest.approx(1.0)


def test_undefined_cases_return_nan_with_note():
    r = stats.correlate([1, 2], [3, 5])
    assert r.n == 2 and math.isnan(r.r) and math.isnan(r.p) and not r.defined
    assert r.note == "n=2 < 3: correlation undefined"
    c = stats.correlate([1, 2, 3, 4], [5, 5, 5, 5], "pearson")
    assert math.isnan(c.r) and "constant y" in c.note and "undefined" in c.note
    e = stats.correlate([np.nan] * 5, [1, 2, 3, 4, 5], n_boot=50, n_perm=50)
    assert e.n == 0 and math.isnan(e.r) and math.isnan(e.ci_low) and math.isnan(e.p_perm)
    assert e.note.startswith("n=0 < 3") and "dropped 5 pair(s)" in e.note


def test_missing_pairs_dropped_and_counted():
    r = stats.correlate([1, 2, None, 3, 4, 5], [1, 3, 9, np.nan, 2, 4])
    assert r.n == 4 and r.r == pytest.approx(0.8)  # the remaining pairs are X4, Y4
    assert "dropped 2 pair(s)" in r.note
    with pytest.raises(ValueError, match="differ in length"):
        stats.correlate([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="unknown correlation method"):
        stats.correlate(X4, Y4, "cosine")


# --------------------------------------------------------------------------- resampling
def test_permutation_p_exact_small_case_and_seeded():
    # Of the 24 orderings of 4 ranks, 8 give |rho| >= 0.8 (sum d^2 in {0, 2, 18, 20}): p = 1/3.
    a = stats.correlate(X4, Y4, n_perm=20000, seed=7)
    assert a.p_perm == pytest.approx(1 / 3, abs=0.015)
    assert stats.correlate(X4, Y4, n_perm=20000, seed=7).p_perm == a.p_perm
    assert stats.correlate(X4, Y4, n_perm=20000, seed=8).p_perm != a.p_perm
    # +1 correction: a perfect correlation on n=10 is never matched by chance -> 1/(n_perm+1)
    assert stats.correlate(range(10), range(10), n_perm=999).p_perm == pytest.approx(1 / 1000)


@pytest.mark.parametrize("method", stats.METHODS)
def test_permutation_p_close_to_analytic_for_moderate_n(method):
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)  # analytic p: spearman .50, pearson .068, kendall .38
    res = stats.correlate(x, y, method, n_perm=4000 if method != "kendall" else 1500, seed=1)
    assert 0.01 < res.p < 0.6
    assert res.p_perm == pytest.approx(res.p, abs=0.03)


def test_bootstrap_ci_contains_r_and_is_seeded():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    res = stats.correlate(x, y, "pearson", n_boot=1000, seed=5)
    assert res.ci_low < res.r < res.ci_high
    assert -1 <= res.ci_low and res.ci_high <= 1 and res.ci_high - res.ci_low < 0.8
    again = stats.correlate(x, y, "pearson", n_boot=1000, seed=5)
    assert (again.ci_low, again.ci_high) == (res.ci_low, res.ci_high)
    # the permutation stream is separate: asking for permutations leaves the CI unchanged
    both = stats.correlate(x, y, "pearson", n_boot=1000, n_perm=100, seed=5)
    assert (both.ci_low, both.ci_high) == (res.ci_low, res.ci_high)


# --------------------------------------------------------------------------- multiple testing
P4 = [0.01, 0.04, 0.03, 0.20]


def test_corrections_hand_values():
    # sorted 0.01, 0.03, 0.04, 0.20; BH raw p*m/i = .04, .06, .0533, .20 -> step-up min from top
    bh = [0.04, 0.16 / 3, 0.16 / 3, 0.20]
    assert stats.adjust_pvalues(P4, "bh") == pytest.approx(bh)
    c4 = 1 + 1 / 2 + 1 / 3 + 1 / 4  # BY multiplies BH by sum_{i<=m} 1/i = 25/12
    assert stats.adjust_pvalues(P4, "by") == pytest.approx([v * c4 for v in bh])
    # Holm: 4*.01, 3*.03, 2*.04, 1*.20 = .04, .09, .08, .20 -> step-down max: .04, .09, .09, .20
    assert stats.adjust_pvalues(P4, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert stats.adjust_pvalues(P4, "none") == pytest.approx(P4)
    assert stats.adjust_pvalues([0.5, 0.9], "holm") == pytest.approx([1.0, 1.0])  # clipped


def test_corrections_match_scipy_and_skip_nan():
    p = np.random.default_rng(0).uniform(size=25) ** 3
    for ours, theirs in (("bh", "bh"), ("by", "by")):
        assert stats.adjust_pvalues(p, ours) == pytest.approx(false_discovery_control(p, method=theirs))
    with_nan = stats.adjust_pvalues([0.01, np.nan, 0.04, 0.03, 0.20], "bh")
    assert math.isnan(with_nan[1])
    assert np.delete(with_nan, 1) == pytest.approx(stats.adjust_pvalues(P4, "bh"))
    with pytest.raises(ValueError, match="unknown correction"):
        stats.adjust_pvalues(P4, "bonferroni")


# --------------------------------------------------------------------------- grids
def _table() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 24
    cos = rng.uniform(size=n)
    return pd.DataFrame({
        "suite": ["a"] * 12 + ["b"] * 12,
        "max_cosine": cos,                              # registered, direction +1
        "kl": -cos + 0.05 * rng.normal(size=n),         # a divergence: direction -1
        "odd": rng.normal(size=n),                      # not registered
        "acc": cos + 0.3 * rng.normal(size=n),
        "f1": rng.normal(size=n),
    })


def test_grid_columns_orientation_and_correction():
    df = _table()
    df.loc[0, "acc"] = np.nan
    g = stats.correlation_grid(df, ["max_cosine", "kl", "odd"], ["acc", "f1"], directions={"kl": -1})
    assert list(g.columns) == stats.GRID_COLUMNS and len(g) == 6
    by = g.set_index(["measure", "score"])
    assert by.loc[("max_cosine", "acc"), "n"] == 23 and by.loc[("max_cosine", "f1"), "n"] == 24
    kl, cos = by.loc[("kl", "acc")], by.loc[("max_cosine", "acc")]
    assert kl.direction == -1 and kl.expected_sign == -1 and kl.r < 0
    assert kl.r_oriented == pytest.approx(-kl.r) and kl.r_oriented > 0
    assert cos.direction == 1 and cos.r_oriented == pytest.approx(cos.r) and cos.r > 0
    assert "assumed +1" in by.loc[("odd", "acc"), "note"]
    assert g["p_adj"].to_numpy() == pytest.approx(stats.adjust_pvalues(g["p"], "by"))
    expect = stats.correlate(df["kl"], df["acc"])
    assert kl.r == pytest.approx(expect.r) and kl.p == pytest.approx(expect.p)


def test_grid_group_by_corrects_within_groups():
    df = _table()
    g = stats.correlation_grid(df, ["max_cosine", "kl"], ["acc", "f1"], correction="holm",
                               directions={"kl": -1}, group_by="suite")
    assert list(g.columns[:2]) == ["suite", "measure"] and len(g) == 8
    for suite, sub in g.groupby("suite"):
        assert sub["p_adj"].to_numpy() == pytest.approx(stats.adjust_pvalues(sub["p"], "holm"))
        part = df[df.suite == suite]
        assert sub.iloc[0]["r"] == pytest.approx(stats.correlate(part["max_cosine"], part["acc"]).r)


def test_grid_cell_streams_do_not_depend_on_grid_shape():
    df = _table()
    kw = dict(n_perm=200, n_boot=200, seed=3, directions={"kl": -1})
    small = stats.correlation_grid(df, ["kl"], ["acc"], **kw).iloc[0]
    big = stats.correlation_grid(df, ["max_cosine", "kl"], ["f1", "acc"], **kw)
    cell = big[(big.measure == "kl") & (big.score == "acc")].iloc[0]
    assert (cell.p_perm, cell.ci_low, cell.ci_high) == (small.p_perm, small.ci_low, small.ci_high)
    pairs = stats.correlation_grid(df, ["max_cosine", "kl"], ["f1", "acc"], pairs=[("kl", "acc")], **kw)
    assert len(pairs) == 1 and pairs.iloc[0].p_perm == small.p_perm
    with pytest.raises(ValueError, match="pairs not in"):
        stats.correlation_grid(df, ["kl"], ["acc"], pairs=[("acc", "kl")])


def test_grid_rejects_bad_columns():
    df = _table().assign(label=["x"] * 24)
    with pytest.raises(ValueError, match="no column 'nope'"):
        stats.correlation_grid(df, ["nope"], ["acc"])
    with pytest.raises(ValueError, match="column 'label' is not numeric"):
        stats.correlation_grid(df, ["label"], ["acc"])


def test_agreement_matrix_is_oriented():
    df = _table()
    m = stats.agreement_matrix(df, ["max_cosine", "kl", "odd"], directions={"kl": -1})
    assert m.loc["max_cosine", "max_cosine"] == pytest.approx(1.0)
    assert m.loc["max_cosine", "kl"] > 0.9 and m.loc["kl", "max_cosine"] == m.loc["max_cosine", "kl"]
    raw = stats.correlate(df["max_cosine"], df["kl"]).r
    assert raw < 0 and m.loc["max_cosine", "kl"] == pytest.approx(-raw)


# --------------------------------------------------------------------------- per-example
def test_per_example_auroc_hand_cases():
    assert stats.per_example_analysis([1, 2, 3, 4], [0, 0, 1, 1])["auroc"] == 1.0
    assert stats.per_example_analysis([1, 2, 3, 4], [1, 1, 0, 0])["auroc"] == 0.0
    assert stats.per_example_analysis([5, 5, 5, 5], [0, 1, 0, 1])["auroc"] == 0.5
    sim = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    ok = [0, 0, 1, 0, 1, 1, 0, 1]
    res = stats.per_example_analysis(sim, [bool(v) for v in ok])
    # correct .3,.5,.6,.8 beat 2+3+3+4 = 12 of the 16 (correct, incorrect) pairs
    assert res["auroc"] == pytest.approx(12 / 16) and res["mannwhitney_u"] == 12
    mw = mannwhitneyu([0.3, 0.5, 0.6, 0.8], [0.1, 0.2, 0.4, 0.7], alternative="two-sided")
    assert res["mannwhitney_u"] == mw.statistic and res["p_mannwhitney"] == pytest.approx(mw.pvalue)
    assert res["mean_similarity_correct"] == pytest.approx(0.55)
    assert res["mean_similarity_incorrect"] == pytest.approx(0.35)
    assert [q["accuracy"] for q in res["quartiles"]] == [0.0, 0.5, 1.0, 0.5]
    assert [q["n"] for q in res["quartiles"]] == [2, 2, 2, 2]


def test_per_example_ties_share_a_quartile_and_degenerate_labels():
    res = stats.per_example_analysis([1, 1, 1, 1, 2, 3, 4, 5], [1, 0, 1, 0, 1, 1, 1, 1])
    assert [q["n"] for q in res["quartiles"]] == [0, 4, 2, 2]  # ties (avg rank 2.5) stay together
    allc = stats.per_example_analysis([0.2, 0.4, 0.9], [1, 1, 1])
    assert math.isnan(allc["auroc"]) and allc["note"].startswith("all examples correct")
    allw = stats.per_example_analysis([0.2, 0.4, 0.9], [0, 0, 0])
    assert math.isnan(allw["p_mannwhitney"]) and allw["note"].startswith("all examples incorrect")
    with pytest.raises(ValueError, match="0/1"):
        stats.per_example_analysis([0.1, 0.2], [0, 2])


# --------------------------------------------------------------------------- the command
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="simassets")
    correlate_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["correlate", *argv])
    return args.func(args)


def test_correlate_command_writes_exact_columns(tmp_path, capsys):
    table = tmp_path / "t.csv"
    _table().to_csv(table, index=False)
    out = tmp_path / "o" / "r.csv"
    rc = _cli([str(table), "--score", "acc", "--score", "f1", "--measure", "kl", "--measure",
               "max_cosine", "--direction", "kl=-1", "--method", "kendall", "--correction", "bh",
               "--bootstrap", "200", "--out", str(out)])
    assert rc == 0
    written = pd.read_csv(out)
    assert list(written.columns) == correlate_cmd.OUT_COLUMNS and len(written) == 4
    engine = stats.correlation_grid(_table(), ["kl", "max_cosine"], ["acc", "f1"], method="kendall",
                                    correction="bh", n_boot=200, directions={"kl": -1})
    assert written["r"].to_numpy() == pytest.approx(engine["r"].to_numpy())
    assert written["p_adj"].to_numpy() == pytest.approx(engine["p_adj"].to_numpy())
    assert written["ci_low"].to_numpy() == pytest.approx(engine["ci_low"].to_numpy())
    printed = capsys.readouterr().out
    assert "kendall correlation over 24 rows" in printed and "max_cosine" in printed


def test_correlate_command_errors_name_file_and_column(tmp_path, capsys):
    table = tmp_path / "t.csv"
    _table().assign(label=["x"] * 24).to_csv(table, index=False)
    assert _cli([str(table), "--score", "acc", "--measure", "missing_col"]) == 2
    err = capsys.readouterr().err
    assert str(table) in err and "'missing_col'" in err
    assert _cli([str(table), "--score", "acc", "--measure", "label"]) == 2
    err = capsys.readouterr().err
    assert str(table) in err and "column 'label' is not numeric (line 2: 'x')" in err
    assert _cli([str(table), "--score", "acc", "--measure", "kl", "--direction", "kl=down"]) == 2
    assert "COL=+1 or COL=-1" in capsys.readouterr().err
    assert _cli([str(tmp_path / "nope.csv"), "--score", "acc", "--measure", "kl"]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
