"""Studies: selection on the real catalog, catalog validation, the study assets on a small synthetic
warehouse (known correlations, AUROC, agreement, model-specific joins, skip-if-unchanged) and their
declarative automation."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from simassets.core import stats
from simassets.core.catalog import CatalogError, load_catalog, parse_catalog
from simassets.core.studies import DEFAULT_STUDIES, XCOPA_LANGUAGES, load_studies
from simassets.core.warehouse import Warehouse
from simassets.defs.resources import StudyResource

# --------------------------------------------------------------------------- synthetic study
CATALOG = """
[profiles.quick]
corpus_sample_size = 10
benchmark_limit = 4
seed = 7
[profiles.full]
corpus_sample_size = 10

[corpora.c1]
source = { path = "c1.jsonl" }
[corpora.c2]
source = { path = "c2.jsonl" }
[corpora.de_web]
language = "de"
source = { path = "de.jsonl" }

[benchmarks.b1]
kind = "gauntlet"
path = "b1.jsonl"
format = "mc"
category = "commonsense_reasoning"
[benchmarks.b2]
kind = "gauntlet"
path = "b2.jsonl"
format = "mc"
category = "commonsense_reasoning"
[benchmarks.b3]
kind = "gauntlet"
path = "b3.jsonl"
format = "mc"
category = "world_knowledge"
[benchmarks.b4]
kind = "gauntlet"
path = "b4.jsonl"
format = "mc"
category = "world_knowledge"
[benchmarks.b5]
kind = "gauntlet"
path = "b5.jsonl"
format = "mc"
category = "world_knowledge"
[benchmarks.xq]
kind = "gauntlet"
path = "xq.jsonl"
format = "mc"
category = "multilingual"
language = "de"

[studies.english]
languages = ["en"]
corpus_languages = ["en"]
n_boot = 40
n_perm = 40
[studies.tiny]
description = "two benchmarks: every correlation is undefined"
benchmarks = ["b1", "b2"]
corpora = ["c1"]
methods = ["spearman"]
n_boot = 0
p_method = "asymptotic"
[studies.french]
languages = ["fr"]
"""
BENCHES = ["b1", "b2", "b3", "b4", "b5"]
SCORES = {"m1": [10.0, 20.0, 30.0, 40.0, 50.0], "m2": [50.0, 20.0, 40.0, 10.0, 30.0]}
MAX_COS = {"c1": [0.1, 0.2, 0.3, 0.4, 0.5], "c2": [0.5, 0.1, 0.4, 0.2, 0.3]}
KL_M1 = {"c1": [5.0, 4.0, 3.0, 2.0, 1.0], "c2": [1.0, 5.0, 2.0, 4.0, 3.0]}  # = 6 - 10 * max_cosine
EX_SIM = [0.1, 0.2, 0.3, 0.4]  # per-example max_cosine of examples 0..3 in every benchmark
CORRECT = {"m1": [False, False, True, True], "m2": [True, False, True, False]}
TOY = "toy_model_measure"  # corpus-free, m1 only: value i + 1 for benchmark b(i+1); per example 4 - k


def _write(wh: Warehouse, table: str, keys: dict, rows: list[dict], fp: str = "fp") -> None:
    cols = [c for c, _, _ in wh.table(table).columns if c not in ("profile", "created_at")]
    wh.write_partition(table, "quick", keys, pd.DataFrame([{c: r.get(c) for c in cols} for r in rows]), fp)


def write_scores(wh: Warehouse, model: str, bench: str, score: float, fp: str = "fp") -> None:
    _write(wh, "benchmark_scores", {"model": model, "benchmark": bench},
           [{"model": model, "benchmark": bench, "category": "x", "language": "en", "n": 4, "acc": 0.5,
             "normalized_score": score, "primary_metric": "acc", "random_baseline": 0.25}], fp)


def build_study(root: Path) -> tuple[Path, Path]:
    """A catalog dir and a warehouse home holding similarity, scores and per-example results."""
    catalog_dir, home = root / "catalog", root / "home"
    catalog_dir.mkdir(parents=True)
    (catalog_dir / "catalog.toml").write_text(CATALOG)
    wh = Warehouse(home)
    for i, b in enumerate(BENCHES):
        for c in ("c1", "c2"):
            _write(wh, "dataset_similarity", {"corpus": c, "benchmark": b, "asset": "embedding_similarity"},
                   [{"corpus": c, "benchmark": b, "model": "", "measure": "max_cosine", "value": MAX_COS[c][i], "n": 4,
                     "warning": "at floor (synthetic)" if (c, b) == ("c2", "b5") else None}])
            _write(wh, "dataset_similarity", {"corpus": c, "benchmark": b, "asset": "token_similarity"},
                   [{"corpus": c, "benchmark": b, "model": "m1", "measure": "unigram_kl", "value": KL_M1[c][i], "n": 4}])
            _write(wh, "example_similarity", {"corpus": c, "benchmark": b, "asset": "embedding_similarity"},
                   [{"corpus": c, "benchmark": b, "model": "", "example_id": k, "measure": "max_cosine", "value": v}
                    for k, v in enumerate(EX_SIM)])
        # a corpus-free, model-specific measure (like input perplexity), not in the registry
        _write(wh, "dataset_similarity", {"model": "m1", "benchmark": b},
               [{"corpus": "", "benchmark": b, "model": "m1", "measure": TOY, "value": float(i + 1), "n": 4}])
        _write(wh, "example_similarity", {"model": "m1", "benchmark": b},
               [{"corpus": "", "benchmark": b, "model": "m1", "example_id": k, "measure": TOY, "value": 4.0 - k}
                for k in range(4)])
        for m in SCORES:
            write_scores(wh, m, b, SCORES[m][i])
            _write(wh, "example_results", {"model": m, "benchmark": b},
                   [{"model": m, "benchmark": b, "example_id": k, "correct": ok} for k, ok in enumerate(CORRECT[m])])
    # a benchmark-free row (like corpus perplexity): describes a corpus, takes no part in a study
    _write(wh, "dataset_similarity", {"model": "m1", "corpus": "c1"},
           [{"corpus": "c1", "benchmark": "", "model": "m1", "measure": "corpus_perplexity", "value": 30.0, "n": 10}])
    # the German benchmark: in no English study, so its rows must never count
    _write(wh, "dataset_similarity", {"corpus": "c1", "benchmark": "xq", "asset": "embedding_similarity"},
           [{"corpus": "c1", "benchmark": "xq", "model": "", "measure": "max_cosine", "value": 0.99, "n": 4}])
    write_scores(wh, "m1", "xq", -90.0)
    return catalog_dir, home


def materialize(catalog_dir: Path, home: Path, study: str, instance: dg.DagsterInstance | None = None):
    from simassets_tests.conftest import add_partitions, materialize as run

    instance = instance or dg.DagsterInstance.ephemeral()
    add_partitions(instance, study=[study])
    return run(["correlations", "measure_agreement", "per_example_analysis"], study, instance, raise_on_error=True,
               resources={"study": StudyResource(home=str(home), catalog_dir=str(catalog_dir))})


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The synthetic study materialized once for the module: (catalog_dir, home, instance, result)."""
    catalog_dir, home = build_study(tmp_path_factory.mktemp("study"))
    instance = dg.DagsterInstance.ephemeral()
    return catalog_dir, home, instance, materialize(catalog_dir, home, "english", instance)


def _table(home: Path, table: str, study: str = "english") -> pd.DataFrame:
    return Warehouse(home).read_partition(table, "quick", {"study": study})


# --------------------------------------------------------------------------- selection
def test_default_studies_on_the_real_catalog():
    cat = load_catalog()
    studies = load_studies(cat)
    assert set(studies) >= {"multilingual", "english", "all"}
    multi = studies["multilingual"].select_benchmarks(cat, "quick")
    assert sorted(multi) == sorted(["copa", *(f"xcopa_{lang}" for lang in XCOPA_LANGUAGES)])
    assert studies["multilingual"].select_corpora(cat, "quick") == [c.name for c in cat.corpora_for("quick")]
    english = studies["english"].select_benchmarks(cat, "quick")
    assert {"copa", "arc_easy", "lambada_openai", "sst2", "mmlu_high_school_biology"} <= set(english)
    assert not [b for b in english if b.startswith("xcopa_")]
    assert english == [b.name for b in cat.benchmarks_for("quick") if b.language == "en"]
    assert studies["all"].select_benchmarks(cat, "quick") == [b.name for b in cat.benchmarks_for("quick")]
    # full-only benchmarks join the English study in the full profile
    assert "mmlu_college_medicine" in studies["english"].select_benchmarks(cat, "full")
    assert "mmlu_college_medicine" not in english


def test_defaults_apply_without_studies_table_and_filters_combine(tmp_path):
    raw = __import__("tomllib").loads(CATALOG)
    cat = parse_catalog({k: v for k, v in raw.items() if k != "studies"}, tmp_path / "catalog.toml")
    studies = load_studies(cat)
    assert list(studies) == list(DEFAULT_STUDIES)
    assert studies["multilingual"].select_benchmarks(cat, "quick") == ["xq"]  # no copa here; the category filter
    assert studies["multilingual"].select_corpora(cat, "quick") == ["c1", "c2"]  # English corpora only
    assert studies["english"].select_benchmarks(cat, "quick") == BENCHES
    raw["studies"] = {"mix": {"benchmarks": ["xq"], "categories": ["world_knowledge"], "exclude": ["b4"]}}
    mix = load_studies(parse_catalog(raw, tmp_path / "catalog.toml"))["mix"]
    assert mix.select_benchmarks(cat, "quick") == ["b3", "b5", "xq"]  # named OR filtered, minus excluded


@pytest.mark.parametrize("entry, field, fragment", [
    ({"benchmarks": ["nope"]}, "benchmarks", "unknown benchmark(s) ['nope']"),
    ({"categories": ["poetry"]}, "categories", "unknown category(ies)"),
    ({"methods": ["cosine"]}, "methods", "unknown method(s)"),
    ({"scores": ["f1"]}, "scores", "unknown score column(s)"),
    ({"n_boot": -1}, "n_boot", "must be >= 0"),
    ({"correction": "bonferroni"}, "correction", "must be one of"),
    ({"languages": "en"}, "languages", "must be list"),
])
def test_bad_study_entries_name_file_entry_and_field(tmp_path, entry, field, fragment):
    raw = __import__("tomllib").loads(CATALOG)
    raw["studies"] = {"bad": entry}
    cat = parse_catalog(raw, tmp_path / "catalog.toml")
    with pytest.raises(CatalogError) as exc:
        load_studies(cat)
    msg = str(exc.value)
    assert str(tmp_path / "catalog.toml") in msg and "[studies.bad]" in msg and f"'{field}'" in msg and fragment in msg


def test_unknown_study_field_is_refused(tmp_path):
    raw = __import__("tomllib").loads(CATALOG)
    raw["studies"] = {"bad": {"benchmark": ["b1"]}}
    with pytest.raises(CatalogError, match=r"\[studies.bad\] unknown field\(s\) \['benchmark'\]"):
        load_studies(parse_catalog(raw, tmp_path / "catalog.toml"))


# --------------------------------------------------------------------------- the assets
def test_correlations_known_values_and_model_specific_join(study_run):
    _, home, _, result = study_run
    assert result.success
    corr = _table(home, "correlations")
    assert set(corr["study"]) == {"english"} and set(corr["method"]) == set(stats.METHODS)
    assert set(corr["corpus"]) == {"c1", "c2", ""}  # de_web is not an English corpus; '' = corpus-free
    assert (corr["n"] == 5).all()  # xq (German) never enters
    # unigram_kl is m1's own measure: it never meets m2's scores
    assert set(corr.loc[corr["measure"] == "unigram_kl", "model"]) == {"m1"}
    # the corpus-free measure forms its own corpus '' group, once per method; corpus perplexity never enters
    toy = corr[corr["measure"] == TOY]
    assert set(zip(toy["model"], toy["corpus"])) == {("m1", "")} and len(toy) == 3
    assert toy["r"].tolist() == pytest.approx([1.0] * 3) and (toy["n"] == 5).all()
    assert toy["note"].str.contains("direction not given; assumed +1", regex=False).all()
    assert "corpus_perplexity" not in set(corr["measure"])
    sp = corr[corr["method"] == "spearman"].set_index(["model", "corpus", "measure"])
    assert sp.loc[("m1", "c1", "max_cosine"), "r"] == pytest.approx(1.0)
    assert sp.loc[("m1", "c1", "unigram_kl"), "r"] == pytest.approx(-1.0)  # raw: higher KL, lower score
    assert sp.loc[("m1", "c1", "unigram_kl"), "r_oriented"] == pytest.approx(1.0)  # oriented: similar => better
    assert sp.loc[("m1", "c1", "unigram_kl"), "direction"] == -1
    # m2 on c2: ranks of max_cosine (5,1,4,2,3) vs score (5,2,4,1,3): sum d^2 = 2 -> rho = 1 - 12/120
    assert sp.loc[("m2", "c2", "max_cosine"), "r"] == pytest.approx(0.9)
    for method, g in corr.groupby("method"):  # correction across the study's whole grid, per method
        assert len(g) == 7  # (m1, m2) x (c1, c2) max_cosine + m1 x (c1, c2) unigram_kl + (m1, '') toy
        np.testing.assert_allclose(g["p_adj"], stats.adjust_pvalues(g["p"], "by"))
    assert corr[["ci_low", "ci_high"]].notna().all().all()


def test_agreement_is_oriented_and_counts_pairs(study_run):
    _, home, _, _ = study_run
    agree = _table(home, "measure_agreement")
    assert set(agree["model"]) == {"m1"}  # one group: the model with model-specific measures
    pooled = agree[(agree["corpus"] == "*")].set_index(["measure_a", "measure_b"])
    # unigram_kl = 6 - 10 * max_cosine everywhere: raw rho -1, oriented +1
    assert pooled.loc[("max_cosine", "unigram_kl"), "r"] == pytest.approx(1.0)
    assert pooled.loc[("max_cosine", "unigram_kl"), "n"] == 10  # 2 corpora x 5 benchmarks
    assert pooled.loc[("max_cosine", "max_cosine"), "r"] == pytest.approx(1.0)
    per_corpus = agree[agree["corpus"] == "c2"]
    assert set(per_corpus["n"]) == {5}
    # the corpus-free measure meets every corpus: toy = i + 1 against c1's max_cosine 0.1 * (i + 1)
    c1 = agree[agree["corpus"] == "c1"].set_index(["measure_a", "measure_b"])
    assert c1.loc[("max_cosine", TOY), "r"] == pytest.approx(1.0) and c1.loc[("max_cosine", TOY), "n"] == 5
    assert pooled.loc[(TOY, TOY), "n"] == 10
    assert "corpus_perplexity" not in set(agree["measure_a"])


def test_per_example_auroc_quartiles_and_notes(study_run):
    _, home, _, _ = study_run
    pe = _table(home, "per_example_analysis").set_index(["model", "corpus", "benchmark", "measure"])
    assert len(pe) == 2 * 2 * 5 + 5  # models x corpora x benchmarks (max_cosine) + m1's corpus-free toy
    assert pe.loc[("m1", "", "b1", TOY), "auroc"] == pytest.approx(0.0)  # the correct ones are the least "similar"
    m1 = pe.loc[("m1", "c1", "b1", "max_cosine")]
    assert m1["auroc"] == pytest.approx(1.0)  # the two most similar are the two correct ones
    assert (m1["acc_q1"], m1["acc_q4"]) == (0.0, 1.0)
    assert m1["n"] == 4 and m1["n_correct"] == 2
    m2 = pe.loc[("m2", "c1", "b1", "max_cosine")]
    assert m2["auroc"] == pytest.approx(0.25)  # correct 0.1, 0.3 vs incorrect 0.2, 0.4: only 0.3 > 0.2 of 4 pairs
    assert m2["p"] == pytest.approx(stats.per_example_analysis(EX_SIM, CORRECT["m2"])["p_mannwhitney"])
    np.testing.assert_allclose(pe["p_adj"], stats.adjust_pvalues(pe["p"], "by"))


def test_plots_written_and_embedded_in_metadata(study_run):
    _, home, _, result = study_run
    plot_dir = home / "plots" / "quick" / "english"
    names = sorted(p.name for p in plot_dir.glob("*.png"))
    assert names == ["agreement_m1.png", "examples_m1_max_cosine.png", f"examples_m1_{TOY}.png",
                     "examples_m2_max_cosine.png", "headline_normalized_score.png",
                     "scatter_normalized_score_max_cosine.png", f"scatter_normalized_score_{TOY}.png", "scatter_normalized_score_unigram_kl.png"]
    assert all((plot_dir / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    for mat in result.get_asset_materialization_events():
        md = mat.event_specific_data.materialization.metadata
        assert "data:image/png;base64," in md["plots"].value
        assert md["plot_dir"].value == str(plot_dir)


def test_rerun_skips_then_an_upstream_change_recomputes(study_run):
    catalog_dir, home, instance, _ = study_run
    wh = Warehouse(home)
    before = wh.fingerprint("correlations", "quick", {"study": "english"})
    again = materialize(catalog_dir, home, "english", instance)
    assert all(m.event_specific_data.materialization.metadata["skipped"].value
               for m in again.get_asset_materialization_events())
    # the German benchmark is outside the study: changing its score changes nothing
    write_scores(wh, "m1", "xq", -10.0, fp="fp2")
    assert materialize(catalog_dir, home, "english", instance).get_asset_materialization_events()[0] \
        .event_specific_data.materialization.metadata["skipped"].value
    write_scores(wh, "m2", "b3", 5.0, fp="fp2")  # m2 scores now 50,20,5,10,30
    third = materialize(catalog_dir, home, "english", instance)
    skipped = {m.asset_key.path[-1]: "skipped" in m.event_specific_data.materialization.metadata
               for m in third.get_asset_materialization_events()}
    assert skipped == {"correlations": False, "per_example_analysis": True, "measure_agreement": True}
    assert wh.fingerprint("correlations", "quick", {"study": "english"}) != before
    sp = _table(home, "correlations").query("method == 'spearman' and model == 'm2' and corpus == 'c1'")
    assert sp["r"].iloc[0] == pytest.approx(stats.correlate(MAX_COS["c1"], [50, 20, 5, 10, 30], "spearman").r)


def test_undefined_study_still_writes_rows_with_notes(study_run):
    catalog_dir, home, instance, _ = study_run
    materialize(catalog_dir, home, "tiny", instance)
    corr = _table(home, "correlations", "tiny")
    assert (corr["n"] == 2).all() and corr["r"].isna().all()
    assert all(n.startswith("n=2 < 3: correlation undefined") for n in corr["note"])
    assert math.isnan(corr["p_adj"].iloc[0])


def test_study_selecting_nothing_writes_empty_partitions(study_run):
    catalog_dir, home, instance, _ = study_run
    result = materialize(catalog_dir, home, "french", instance)
    assert result.success
    for table in ("correlations", "measure_agreement", "per_example_analysis"):
        stored = Warehouse(home).stored(table, "quick", {"study": "french"})
        assert stored.rows == 0 and stored.info["plots"] == []
    assert not list((home / "plots" / "quick" / "french").glob("*.png"))


def test_unknown_study_partition_fails_clearly(study_run):
    catalog_dir, home, _, _ = study_run
    with pytest.raises(dg.Failure, match="study 'ghost' is not in profile 'quick'"):
        materialize(catalog_dir, home, "ghost")


# --------------------------------------------------------------------------- automation
@pytest.mark.filterwarnings("ignore::dagster.BetaWarning")  # raised inside dg.evaluate_automation_conditions
def test_study_assets_refresh_when_any_input_partition_changes():
    from simassets import runner
    from simassets.defs import factory
    from simassets_tests.conftest import add_partitions

    key = lambda name: factory.asset_key("quick", name)  # noqa: E731

    @dg.asset(key=key("eager_correlations"), partitions_def=factory.partitions_def("quick", "study"),
              automation_condition=dg.AutomationCondition.eager(),
              deps=[dg.AssetDep(key(a), partition_mapping=dg.AllPartitionMapping())
                    for a in ("embedding_similarity", "benchmark_evaluation")])
    def eager_correlations() -> None:
        """The same dependencies under plain eager(), for contrast."""

    quick = [a for a in runner.definitions().assets or () if a.key.path[0] == "quick"]
    defs = dg.Definitions(assets=[*quick, eager_correlations], resources={"study": StudyResource()})
    instance = dg.DagsterInstance.ephemeral()
    add_partitions(instance, corpus=["c1"], benchmark=["b1", "b2", "b3"], model=["m1"], study=["all"])

    def mat(asset: str, partition: str) -> None:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key(asset), partition=partition))

    sim = lambda b: str(dg.MultiPartitionKey({"corpus": "c1", "benchmark": b}))  # noqa: E731
    ev = lambda b: str(dg.MultiPartitionKey({"model": "m1", "benchmark": b}))  # noqa: E731
    for b in ("b1", "b2"):  # b3 is never materialized (say a full-profile-only benchmark)
        mat("embedding_similarity", sim(b))
        mat("benchmark_evaluation", ev(b))
    for a in ("correlations", "measure_agreement", "per_example_analysis", "eager_correlations"):
        mat(a, "all")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0  # nothing changed since the studies were materialized

    mat("embedding_similarity", sim("b2"))  # one input partition changes
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = {k.path[-1]: second.get_requested_partitions(k) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert requested["correlations"] == {"all"}
    assert requested["measure_agreement"] == {"all"}
    assert requested["per_example_analysis"] == {"all"}
    assert requested["eager_correlations"] == set()  # plain eager(): blocked by the missing b3 partitions
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
    assert third.total_requested == 0  # handled: not requested again

    mat("benchmark_evaluation", ev("b1"))  # a score changes: the score-free agreement matrix stays
    fourth = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=third.cursor)
    assert fourth.get_requested_partitions(key("correlations")) == {"all"}
    assert fourth.get_requested_partitions(key("measure_agreement")) == set()
