"""Known-value tests for simassets.core.stats and the ``correlate`` command."""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, kendalltau, mannwhitneyu, pearsonr, spearmanr

from simassets import correlate_cmd
from simassets.core import stats

X4, Y4 = [1, 2, 3, 4], [1, 3, 2, 4]  # one adjacent swap: sum d^2 = 2, one discordant pair of 6


# --------------------------------------------------------------------------- point estimates
def test_spearman_kendall_pearson_hand_values():
    sp = stats.correlate(X4, Y4, "spearman")
    assert sp.r == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert sp.p_asymptotic == pytest.approx(0.2)  # t = rho*sqrt(2/(1-rho^2)), df=2: p = 1 - t/sqrt(2+t^2)
    assert sp.n == 4 and math.isnan(sp.p) and sp.note.startswith("n=4 < 5: no p-value")
    assert stats.correlate(X4, Y4, "kendall").r == pytest.approx(2 / 3)  # (5 - 1) / 6
    pe = stats.correlate([1, 2, 3], [1, 2, 4], "pearson")
    assert pe.r == pytest.approx(math.sqrt(27 / 28))  # 3 / sqrt(2 * 14/3)
    # df = 1: t is Cauchy, t = sqrt(27): p = 1 - (2/pi) atan(t)
    assert pe.p_asymptotic == pytest.approx(1 - 2 / math.pi * math.atan(math.sqrt(27)))


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
    e = stats.correlate([np.nan] * 5, [1, 2, 3, 4, 5], n_boot=50)
    assert e.n == 0 and math.isnan(e.r) and math.isnan(e.ci_low) and math.isnan(e.p) and e.p_method == ""
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
def test_no_p_value_below_the_n_where_005_is_reachable():
    """n = 3 and 4: even a perfect rank correlation has permutation p >= 2/4! = 0.083, so no p is reported
    (the asymptotic Spearman p at n = 3 is 0, which once printed "1 significant")."""
    tiny = stats.correlate([1, 2, 3], [2, 4, 6], "spearman")
    assert tiny.r == pytest.approx(1.0) and tiny.p_asymptotic == 0.0
    assert math.isnan(tiny.p) and "2/3! = 0.333" in tiny.note
    g = stats.correlation_grid(pd.DataFrame({"m": [1, 2, 3, 4], "s": [1, 2, 3, 4]}), ["m"], ["s"])
    assert math.isnan(g.loc[0, "p"]) and math.isnan(g.loc[0, "p_adj"]) and "n=4 < 5" in g.loc[0, "note"]
    assert stats.correlate(range(5), range(5)).p == pytest.approx(2 / 120)  # n = 5: reachable


def _enumerated(x, y, method):
    """Reference: scipy's statistic over every pairing, P(|r*| >= |r|)."""
    f = {"spearman": spearmanr, "pearson": pearsonr, "kendall": kendalltau}[method]
    r0 = abs(f(x, y).statistic)
    perms = list(itertools.permutations(range(len(y))))
    return sum(abs(f(x, np.asarray(y)[list(p)]).statistic) >= r0 - 1e-12 for p in perms) / len(perms)


@pytest.mark.parametrize("n", [5, 6, 7])
def test_exact_p_equals_full_enumeration_with_ties(n):
    x = np.array([1, 2, 2, 3, 5, 4, 1][:n], dtype=float)  # ties on both sides
    y = np.array([2, 1, 3, 3, 4, 4, 2][:n], dtype=float)
    assert len(set(x)) < n and len(set(y)) < n
    rng = np.random.default_rng(n)
    for method in stats.METHODS:
        res = stats.correlate(x, y, method)
        assert res.p_method == "exact"
        assert res.p == pytest.approx(_enumerated(x, y, method), abs=1e-12), method
    # without ties Kendall's exact null comes from scipy, and still equals the enumeration
    x, y = rng.permutation(n).astype(float), rng.permutation(n).astype(float)
    assert stats.correlate(x, y, "kendall").p == pytest.approx(_enumerated(x, y, "kendall"), abs=1e-12)


def test_n12_with_ties_agrees_with_enumeration_within_monte_carlo_error():
    """The multilingual study's size. 12! pairings cannot be enumerated; the reference here is an exact
    computation for Pearson through the same statistic on 2 million pairings (MC error 0.0004)."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=12)
    y = 0.6 * x + rng.normal(size=12)
    y[3] = y[4]  # a tie in the scores
    for method in stats.METHODS:
        res = stats.correlate(x, y, method, seed=1)
        assert res.p_method.startswith("monte-carlo") and res.n == 12
        ref = stats.monte_carlo_pvalue(x, y, method, 400_000, np.random.default_rng(99))
        r_used = int(res.p_method.rsplit("-", 1)[1])
        assert abs(res.p - ref) < 4 * math.sqrt(ref * (1 - ref) / r_used) + 1e-4, (method, res.p, ref)
    assert stats.correlate(x, y, seed=1).p == stats.correlate(x, y, seed=1).p  # seeded
    # a p near 0.05 gets the 50,000 pairings that put the Monte-Carlo error under 0.001
    near = stats.permutation_pvalue(np.arange(40.0), np.arange(40.0) + rng.normal(size=40) * 33, "pearson",
                                    np.random.default_rng(0))
    assert near[1] in ("monte-carlo-50000", "monte-carlo-10000")
    if near[1] == "monte-carlo-10000":
        assert near[0] > 0.1


def test_permutation_p_of_a_perfect_correlation_and_asymptotic_option():
    assert stats.correlate(range(10), range(10)).p == pytest.approx(2 / math.factorial(10))
    mc = stats.correlate(range(12), range(12), "pearson", seed=2)
    assert mc.p == pytest.approx(1 / (stats.MC_FULL + 1)) and mc.p_method == f"monte-carlo-{stats.MC_FULL}"
    asym = stats.correlate(range(12), np.arange(12) ** 1.5, "pearson", p_method="asymptotic")
    assert asym.p_method == "asymptotic" and asym.p == asym.p_asymptotic


@pytest.mark.parametrize("method", stats.METHODS)
def test_permutation_p_close_to_analytic_for_moderate_n(method):
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)  # analytic p: spearman .50, pearson .068, kendall .38
    res = stats.correlate(x, y, method, seed=1)
    assert 0.01 < res.p < 0.6
    assert res.p == pytest.approx(res.p_asymptotic, abs=0.03)


def test_bootstrap_ci_contains_r_and_is_seeded():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    res = stats.correlate(x, y, "pearson", n_boot=1000, seed=5)
    assert res.ci_low < res.r < res.ci_high
    assert -1 <= res.ci_low and res.ci_high <= 1 and res.ci_high - res.ci_low < 0.8
    again = stats.correlate(x, y, "pearson", n_boot=1000, seed=5)
    assert (again.ci_low, again.ci_high) == (res.ci_low, res.ci_high)
    # the permutation stream is separate: another p-method leaves the CI unchanged
    both = stats.correlate(x, y, "pearson", n_boot=1000, p_method="asymptotic", seed=5)
    assert (both.ci_low, both.ci_high) == (res.ci_low, res.ci_high)


def test_two_level_interval_covers_the_true_score_correlation():
    """Simulated benchmarks whose accuracies come from 30 examples each: the benchmark-only interval is centred
    on the attenuated r and misses the correlation with the true accuracies; the two-level interval (re-drawn
    scores, attenuation corrected) covers it at about the nominal rate and is wider. Scores that are pure noise
    (reliability <= 0) leave the true correlation open."""
    rng = np.random.default_rng(0)
    rho, n = 0.6, 30
    big_x = rng.normal(size=200_000)
    true = spearmanr(big_x, rho * big_x + np.sqrt(1 - rho**2) * rng.normal(size=big_x.size)).statistic
    cover1 = cover2 = 0
    widen, rels = [], []
    for k in range(40):
        x = rng.normal(size=n)
        t = np.clip(0.55 + 0.12 * (rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)), 0.01, 0.99)
        acc = rng.binomial(30, t) / 30
        res = stats.correlate(x, acc, "spearman", n_boot=400, seed=k, p_method="asymptotic",
                              noise=stats.ScoreNoise.of(np.full(n, 30), acc))
        cover1 += res.ci_low <= true <= res.ci_high
        cover2 += res.ci2_low <= true <= res.ci2_high
        widen.append((res.ci2_high - res.ci2_low) / (res.ci_high - res.ci_low))
        rels.append(res.reliability)
    assert cover2 >= 36 and cover1 < cover2, (cover1, cover2)
    assert np.median(widen) > 1.2
    # reliability = 1 - mean error variance / variance of the scores: about var(t) / (var(t) + p(1-p)/30) here
    assert 0.5 < np.median(rels) < 0.8
    # pure noise: every benchmark at the same true rate, the observed spread is sampling error only
    acc = rng.binomial(30, np.full(n, 0.5)) / 30
    noisy = stats.correlate(rng.normal(size=n), acc, "spearman", n_boot=400, seed=1, p_method="asymptotic",
                            noise=stats.ScoreNoise.of(np.full(n, 30), acc))
    assert noisy.reliability < 0.3
    assert noisy.ci2_low < -0.9 and noisy.ci2_high > 0.9


def test_two_level_interval_reduces_to_one_level_without_noise():
    """With a huge example count the two levels agree (reliability 1, nothing re-drawn); a strong correlation
    of noisy scores is corrected toward 1 (its interval moves up)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=15)
    acc = np.clip(0.55 + 0.1 * x + 0.05 * rng.normal(size=15), 0.05, 0.95)
    small = stats.ScoreNoise.of(np.full(15, 30), acc)
    res = stats.correlate(x, acc, "spearman", n_boot=2000, seed=3, noise=small)
    assert res.ci2_low > res.ci_low and res.ci2_high >= res.ci_high
    big = stats.correlate(x, acc, "spearman", n_boot=2000, seed=3, noise=stats.ScoreNoise.of(np.full(15, 1e9), acc))
    assert big.ci2_low == pytest.approx(res.ci_low, abs=0.05) and big.ci2_high == pytest.approx(res.ci_high, abs=0.05)
    # the normalized score: offset and scale carry the binomial draw to 100 (acc - r) / (1 - r)
    draws = stats.ScoreNoise.of([30], [0.5], offset=-100 * 0.25 / 0.75, scale=100 / 0.75).draw(
        np.zeros(20000, dtype=int), np.random.default_rng(0))
    assert draws.mean() == pytest.approx(100 * (0.5 - 0.25) / 0.75, abs=0.5)
    assert draws.std() == pytest.approx(100 / 0.75 * math.sqrt(0.25 / 30), rel=0.03)


def test_wilson_interval_matches_the_closed_form():
    lo, hi = stats.wilson_interval([12, 0, 30], [30, 30, 30])
    z, n = 1.959963984540054, 30
    for k, a, b in zip([12, 0, 30], lo, hi):
        p = k / n
        mid = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        assert (a, b) == pytest.approx((mid - half, mid + half), abs=1e-9)
    assert lo[1] == pytest.approx(0, abs=1e-12) and hi[2] == pytest.approx(1)


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
    assert kl.r == pytest.approx(expect.r) and kl.p_asymptotic == pytest.approx(expect.p_asymptotic)
    assert set(g["p_method"]) <= {"kendall-exact", "monte-carlo-10000", "monte-carlo-50000"}


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
    assert (cell.p, cell.ci_low, cell.ci_high) == (small.p, small.ci_low, small.ci_high)
    assert cell.p_method.startswith("monte-carlo")
    pairs = stats.correlation_grid(df, ["max_cosine", "kl"], ["f1", "acc"], pairs=[("kl", "acc")], **kw)
    assert len(pairs) == 1 and pairs.iloc[0].p == small.p
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


def test_per_example_auroc_equals_sklearn_with_ties_and_imbalance():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    for n, rate in ((7, 0.3), (30, 0.5), (200, 0.9), (500, 0.05)):
        sim = np.round(rng.normal(size=n), 1)  # rounded: many ties
        ok = rng.random(n) < rate
        ok[:2] = (True, False)
        assert stats.per_example_analysis(sim, ok)["auroc"] == pytest.approx(roc_auc_score(ok, sim), abs=1e-15)


def test_per_example_similarities_split_by_float_noise_rank_as_ties():
    # 30 texts that embed alike: cosines 3e-8 apart by the BLAS's rounding, not by the texts
    sim = np.where(np.arange(30) < 12, 0.15680054, 0.15680051)
    ok = np.arange(30) % 2 == 0
    res = stats.per_example_analysis(sim, ok)
    assert res["auroc"] == 0.5 and res["p_mannwhitney"] == pytest.approx(1.0)
    assert [q["n"] for q in res["quartiles"]] == [0, 0, 30, 0]  # one tie: the average rank 15.5 of 30
    assert res["quartiles"][2]["similarity_max"] == 0.15680054  # reported as measured
    # a real difference of 1e-5 still ranks
    assert stats.per_example_analysis(np.where(ok, 0.15681, 0.15680), ok)["auroc"] == 1.0
    assert stats.tie_within_tolerance(np.array([3.0, 1.0, 1.0 + 1e-9, 2.0])).tolist() == [3.0, 1.0, 1.0, 2.0]


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
    assert written["p"].to_numpy() == pytest.approx(engine["p"].to_numpy())
    printed = capsys.readouterr().out
    assert "kendall correlation over 24 rows" in printed and "max_cosine" in printed
    assert "auto p-values" in printed and "kendall-exact" in printed


def test_correlate_command_small_n_exact_and_asymptotic(tmp_path, capsys):
    """At n = 6 the command reports the exact p; --p-method asymptotic gives scipy's, as the papers do."""
    table = tmp_path / "six.csv"
    pd.DataFrame({"m": [0.1, 0.4, 0.3, 0.8, 0.6, 0.9], "s": [10, 25, 20, 40, 20, 55]}).to_csv(table, index=False)
    out = tmp_path / "r.csv"
    assert _cli([str(table), "--score", "s", "--measure", "m", "--out", str(out)]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row.p_method == "exact" and row.p == pytest.approx(_enumerated([0.1, 0.4, 0.3, 0.8, 0.6, 0.9],
                                                                         [10, 25, 20, 40, 20, 55], "spearman"))
    assert "exact" in capsys.readouterr().out
    assert _cli([str(table), "--score", "s", "--measure", "m", "--p-method", "asymptotic", "--out", str(out)]) == 0
    row2 = pd.read_csv(out).iloc[0]
    assert row2.p_method == "asymptotic" and row2.p == pytest.approx(row.p_asymptotic) and row2.p != row.p


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
