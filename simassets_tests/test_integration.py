"""End to end: the whole graph on a tiny catalog with a tiny random model, through the CLI."""

from __future__ import annotations

import json

import duckdb
import pytest

from simassets import cli

VIEWS = ["dataset_diversity", "measure_agreement", "per_example_analysis", "corpus_documents", "benchmark_examples", "corpus_embeddings", "benchmark_embeddings", "example_similarity",
         "dataset_similarity", "benchmark_scores", "example_results", "correlations", "measures"]


def _sql(capsys, query: str) -> list[dict]:
    assert cli.main(["sql", query, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_whole_graph_materializes_and_reruns_skip(tiny_study, capsys):
    assert cli.main(["run", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out

    counts = {v: _sql(capsys, f"select count(*) as n from {v}")[0]["n"] for v in VIEWS}
    assert counts["corpus_documents"] == 40  # 2 corpora x 20 docs
    assert counts["benchmark_examples"] == 30  # 3 benchmarks x 10 examples
    assert counts["benchmark_scores"] == 3
    assert counts["example_results"] == 30
    # per (corpus, benchmark): 4 embedding + 12 text (hashed KL/JS, gzip, longest match, contaminated fraction and
    # coverage at 4 thresholds) + 1 task2vec + 1 word coverage measures; per (model, benchmark): 2 perplexities,
    # unigram KL/JS and the contamination gain at 4 thresholds against each corpus; per (model, corpus): corpus
    # perplexity
    assert counts["dataset_similarity"] == 6 * (4 + 12 + 1 + 1) + 3 * (2 + 2 * 2 + 2 * 4) + 2
    # per example: 2 embedding + 8 text (2 importance weights, gzip, longest match, coverage at 4 thresholds) + 1
    # word coverage measures per corpus, 2 perplexities per model
    assert counts["example_similarity"] == 30 * (2 * (2 + 8 + 1) + 2)
    families = _sql(capsys, """select family, count(distinct name) n from measures m
                               join (select distinct measure from dataset_similarity union
                                     select distinct measure from example_similarity) d on d.measure = m.name
                               group by 1 order by 1""")
    assert {f["family"] for f in families} >= {"embedding", "token", "model", "compression", "overlap", "task2vec"}
    assert all(n > 0 for n in counts.values()), counts

    # similarity and accuracy describe the same examples
    orphans = _sql(capsys, """select count(*) n from example_similarity s anti join example_results r
                              using (benchmark, example_id)""")[0]["n"]
    assert orphans == 0
    scores = _sql(capsys, "select * from benchmark_scores order by benchmark")
    for row in scores:
        assert 0.0 <= row["acc"] <= 1.0 and row["n"] == 10
        r = row["random_baseline"]
        primary = row["acc_norm"] if row["primary_metric"] == "acc_norm" else row["acc"]
        assert row["normalized_score"] == pytest.approx(100 * (primary - r) / (1 - r))
    corr = _sql(capsys, "select * from correlations where method = 'spearman' and study = 'all'")
    assert {c["corpus"] for c in corr} == {"", "c4_en", "pubmed_abstracts"}  # "": model-only measures (perplexity)
    # the gain is undefined for a benchmark with no contaminated (or no clean) example: fewer benchmarks
    assert all(c["n"] == 3 for c in corr if not c["measure"].startswith("contamination_gain"))
    assert all(c["n"] <= 3 for c in corr)

    # a second run recomputes nothing, and starts no run: the planner finds every partition unchanged
    assert cli.main(["run", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "(0 runs): 0 computed," in out, out
    units = [line for line in out.splitlines() if "partition(s) unchanged" in line]
    assert len(units) >= 6 and all("run(s)" not in line for line in units), out
    assert not [line for line in out.splitlines() if line.startswith("[run")], out


@pytest.mark.slow
def test_read_only_session_does_not_block_a_run(tiny_study, capsys):
    assert cli.main(["run", "--profile", "quick"]) == 0
    capsys.readouterr()
    db = tiny_study / "simassets.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        before = con.execute("select count(*) from benchmark_scores").fetchone()[0]
        # the full profile must write new partitions while the session is open
        assert cli.main(["run", "--profile", "full"]) == 0
        assert "0 failed" in capsys.readouterr().out
        after = con.execute("select count(*) from benchmark_scores").fetchone()[0]
        assert after == before + 3  # the full profile's rows are visible through the open session's views
    finally:
        con.close()
