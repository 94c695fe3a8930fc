"""The unlearning-attribution and training-intervention assets on the tiny study (tiny random model)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from simassets.core.finetune import FinetuneConfig, Target  # noqa: E402
from simassets.core.measures.task2vec import Task2VecParams  # noqa: E402
from simassets.core.training import TrainConfig  # noqa: E402
from simassets.core.unlearning import STOP_RULES, UnlearnConfig  # noqa: E402
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module

MODEL, CORPORA, BENCHES = "tiny-llama", ("c4_en", "pubmed_abstracts"), ("arc_easy", "lambada_openai")


def _run(instance, names: list[str], key=None) -> list[dg.AssetMaterialization]:
    from simassets_tests.conftest import materialize

    res = materialize(names, key, instance, tags={"simassets/runner": "test"}, raise_on_error=True)
    return [e.event_specific_data.materialization for e in res.get_asset_materialization_events()]


def _mk(**keys) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey(keys)


def _model_knowing_the_samples(tiny_model_dir: Path, out: Path, seed: int) -> Path:
    """The tiny random model after learning the first blocks of each corpus sample (the blocks unlearning
    ascends on and measures), so it knows them better than their shuffle and unlearning has something to
    remove (on real text the random model stops at 'unknown_at_start')."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simassets.core.training import BatchStream, Trainer, fresh_copy, pack_texts, seeded_order
    from simassets.core.warehouse import Warehouse

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    parts = []
    for c in CORPORA:
        texts = Warehouse().read_partition("corpus_documents", "quick", {"corpus": c})["text"].tolist()
        parts.append(pack_texts(tok, [texts[i] for i in seeded_order(texts, seed)], 32, seed=None, max_blocks=4))
    blocks = torch.cat(parts)
    trainer, stream = Trainer(fresh_copy(model), TrainConfig(lr=1e-2, seq_len=32, batch_size=4, seed=0)), BatchStream(8, 4, 0)
    for _ in range(40):
        trainer.step(blocks[stream.next()])
    trainer.finished_model().save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model_dir):
    """The tiny study (conftest's catalog) with its corpora, two benchmarks evaluated with a tiny model that
    learned the first blocks of each corpus sample, and their text similarity materialized; module-wide."""
    from simassets.core.catalog import load_catalog
    from simassets_tests.conftest import TINY_CATALOG, add_partitions

    root = tmp_path_factory.mktemp("attribution_study")
    catalog_dir, home = root / "catalog", root / "home"
    catalog_dir.mkdir()
    (catalog_dir / "catalog.toml").write_text(TINY_CATALOG)
    registry = catalog_dir / "models.toml"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"SIMASSETS_CATALOG_DIR": catalog_dir, "SIMASSETS_HOME": home, "SIMASSETS_PROFILE": "quick"}.items():
            mp.setenv(k, str(v))
        instance = dg.DagsterInstance.ephemeral()
        add_partitions(instance, corpus=list(CORPORA), benchmark=list(BENCHES), model=[MODEL])
        for c in CORPORA:
            _run(instance, ["corpus_documents", "corpus_index"], c)
        knowing = _model_knowing_the_samples(tiny_model_dir, root / "knowing", load_catalog().profile("quick").seed)
        registry.write_text(f'[[models]]\nid = "{MODEL}"\nkind = "local"\npath = "{knowing}"\nprofiles = ["quick", "full"]\n')
        for b in BENCHES:
            _run(instance, ["benchmark_examples"], b)
            _run(instance, ["benchmark_evaluation"], _mk(model=MODEL, benchmark=b))
            for c in CORPORA:
                _run(instance, ["text_similarity"], _mk(corpus=c, benchmark=b))
        yield instance


@pytest.fixture(autouse=True)
def small_setups(study, monkeypatch):
    """The study's environment and small unlearning / fine-tuning set-ups for each test."""
    from simassets.defs import attribution, interventions

    unlearn = UnlearnConfig(train=TrainConfig(lr=3e-3, seq_len=32, batch_size=4), max_steps=0, eval_blocks=2,
                            target_blocks=4, retain_blocks=8, retain_tolerance=0.1)
    monkeypatch.setitem(attribution.SETUP, "quick", attribution.AttributionSetup(unlearn, eval_limit=None, retain_docs_per_corpus=10, n_boot=50))
    monkeypatch.setitem(interventions.SETUP, "quick", interventions.InterventionSetup(
        FinetuneConfig(TrainConfig(lr=1e-2, seq_len=32, batch_size=4), token_budget=256, eval_points=1),
        targets=("benchmark:arc_easy", "benchmark:lambada_openai", "heldout:c4_en", "benchmark:xcopa_it"),
        task2vec=Task2VecParams(batch_size=2, seq_len=32, n_batches=2), gzip_pairs=20, n_boot=50))


def _sql(query: str):
    from simassets.core.warehouse import Warehouse

    return Warehouse().query(query)


def test_unlearning_assets_end_to_end(study, monkeypatch):
    from simassets.defs import attribution

    # zero ascent steps, all 10 examples: the re-evaluated model is the base model, so every delta is exactly
    # 0 and the base scores are the stored ones -- the re-evaluation path reproduces benchmark_evaluation
    for c in CORPORA:
        _run(study, ["unlearning_runs"], _mk(model=MODEL, corpus=c))
    attr = _sql("select * from attribution")
    assert len(attr) == 2 * (2 + 2)  # corpora x (2 benchmarks + 2 categories)
    assert (attr["delta"] == 0).all() and (attr.loc[attr["level"] == "benchmark", "n"] == 10).all()
    assert set(attr.loc[attr["level"] == "category", "n_benchmarks"]) == {1}
    scores = _sql("select benchmark, acc, normalized_score from benchmark_scores")
    merged = attr[attr["level"] == "benchmark"].merge(scores, on="benchmark")
    assert np.allclose(merged["base_acc"], merged["acc"]) and np.allclose(merged["base_score"], merged["normalized_score"])
    # unchanged inputs: skipped
    mats = _run(study, ["unlearning_runs"], _mk(model=MODEL, corpus="c4_en"))
    assert mats[0].metadata["skipped"].value is True

    # now a real (tiny) unlearning run re-scored on 4 of the 10 examples; the set-up is part of the
    # fingerprint, so both partitions recompute
    s = attribution.SETUP["quick"]
    monkeypatch.setitem(attribution.SETUP, "quick", dataclasses.replace(s, eval_limit=4, unlearn=dataclasses.replace(s.unlearn, max_steps=2)))
    for c in CORPORA:
        mats = _run(study, ["unlearning_runs"], _mk(model=MODEL, corpus=c))
        md = mats[0].metadata
        assert "skipped" not in md and md["seconds_per_step"].value > 0 and "data:image/png;base64" in md["loss_curves"].value
    runs = _sql("select * from unlearning_runs order by corpus")
    assert list(runs["corpus"]) == list(CORPORA) and set(runs["stop_rule"]) <= set(STOP_RULES)
    assert (runs["ascent_steps"] >= 1).all() and (runs["final_target_loss"] > runs["base_target_loss"]).all()
    for r in runs.itertuples():
        assert len(r.curve_target) == r.ascent_steps + 1 <= 3 and r.eval_limit == 4 and r.n_benchmarks == 2
        assert r.curve_target[0] == r.base_target_loss and r.curve_retain[-1] == r.final_retain_loss
    attr = _sql("select * from attribution where level = 'benchmark'")
    assert np.allclose(attr["delta"], attr["unlearned_score"] - attr["base_score"])
    assert attr.groupby("benchmark")["base_acc"].nunique().eq(1).all()  # both runs meet the same base results
    assert (attr["n"] == 4).all() and set((attr["base_acc"] * 4).round(9)) <= {0.0, 1.0, 2.0, 3.0, 4.0}

    mats = _run(study, ["attribution_analysis"])
    md = mats[0].metadata
    assert "data:image/png;base64" in md["plots"].value
    rel = _sql("select * from corpus_relationships")
    assert len(rel) == 1 and rel["relation"].iloc[0] in ("correlated", "complementary", "orthogonal", "weak", "undefined")
    hi = _sql("select * from high_impact_corpora")
    assert len(hi) == 2 * 2 and set(hi["rank"]) <= {1, 2}
    sim = _sql("select * from attribution_similarity")
    assert set(sim["scope"]) == {"*", *CORPORA} and {"gzip_alignment", "match_coverage_13"} <= set(sim["measure"])
    assert (sim.loc[sim["scope"] == "*", "n"] == 4).all()  # 2 corpora x 2 benchmarks
    plots = Path(str(md["plot_dir"].value))
    assert (plots / f"heatmap_{MODEL}.png").stat().st_size > 0 and (plots / f"curves_{MODEL}.png").exists()
    assert _run(study, ["attribution_analysis"])[0].metadata["skipped"].value is True


def test_finetune_assets_refuse_overlap_and_correlate(study, monkeypatch):
    from simassets.defs import interventions

    real = interventions.build_targets

    def with_leak(study_, setup):  # a target made of c4_en documents: training on c4_en must be refused
        targets, held = real(study_, setup)
        docs = _sql("select text from corpus_documents where corpus = 'c4_en'")["text"].tolist()[:3]
        return [*targets, Target("benchmark:leak", tuple(docs))], held

    monkeypatch.setattr(interventions, "build_targets", with_leak)
    for c in CORPORA:
        _run(study, ["finetune_runs"], _mk(model=MODEL, corpus=c))
    runs = _sql("select * from finetune_runs order by corpus")
    assert list(runs["tokens"]) == [256, 256] and list(runs["steps"]) == [2, 2]  # the same budget for every corpus
    assert list(runs.loc[runs["corpus"] == "c4_en", "refused_targets"].iloc[0]) == ["benchmark:leak"]
    ev = _sql("select * from finetune_eval")
    # xcopa_it is not in the tiny catalog: dropped; 3 real targets + the leak, per corpus
    assert sorted(ev["target"].unique()) == ["benchmark:arc_easy", "benchmark:lambada_openai", "benchmark:leak", "heldout:c4_en"]
    leak = ev[(ev["target"] == "benchmark:leak") & (ev["corpus"] == "c4_en")].iloc[0]
    assert leak["status"] == "refused" and np.isnan(leak["loss_after"]) and "overlaps target" in leak["note"]
    ok = ev[ev["status"] == "evaluated"]
    assert len(ok) == 7 and np.allclose(ok["delta_loss"], ok["loss_after"] - ok["loss_before"])
    assert ok["task2vec_alignment"].between(0, 1).all() and ok["gzip_alignment"].notna().all()
    # the base loss of a target is the same whichever corpus is trained on
    assert ok.groupby("target")["loss_before"].nunique().eq(1).all()
    held = ok[ok["target"] == "heldout:c4_en"]
    assert (held["contaminated_fraction_13"] == 0).all()  # held-out documents were removed from the training data
    # each target's base loss was computed once and kept on disk by content (4 targets trained against)
    from simassets.core import paths

    cached = [json.loads(p.read_text()) for p in (paths.cache_dir() / "finetune_base_loss").glob("*.json")]
    assert sorted(c["target"] for c in cached) == sorted(ok["target"].unique())
    by_target = ok.groupby("target")["loss_before"].first()
    assert all(abs(c["loss"] - by_target[c["target"]]) < 1e-12 for c in cached)

    mats = _run(study, ["alignment_vs_loss"])
    assert "data:image/png;base64" in mats[0].metadata["plots"].value
    corr = _sql("select * from alignment_vs_loss")
    pooled = corr[(corr["target"] == "*") & (corr["method"] == "pearson") & (corr["loss"] == "delta_loss")]
    assert set(pooled["measure"]) == {"task2vec_alignment", "gzip_alignment"} and (pooled["n"] == 7).all()
    assert np.allclose(pooled["r2"], pooled["r"] ** 2)
