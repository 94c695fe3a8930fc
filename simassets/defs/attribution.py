"""Causal attribution by unlearning: one run per (model, corpus), re-evaluated on the study's benchmarks,
and the profile-wide analysis (corpus relationships, high-impact corpora, attribution vs similarity).

The method lives in :mod:`simassets.core.unlearning`; this module picks the per-profile setup, reads the
warehouse, and writes ``unlearning_runs`` + ``attribution`` (per partition) and ``corpus_relationships``,
``high_impact_corpora``, ``attribution_similarity`` (profile-wide) with their figures.

Set-up knobs from the environment (part of every fingerprint): ``SIMASSETS_TRAINING_MODE`` = ``full``
(default) or ``lora`` (LoRA rank 8 on every linear layer, merged after training);
``SIMASSETS_KEEP_UNLEARNED=1`` keeps the unlearned weights under ``<home>/cache/unlearned/``.
"""

import dataclasses
import os
import time
from dataclasses import dataclass
from importlib.metadata import version

import dagster as dg
import pandas as pd

from simassets.core import plots
from simassets.core.hashing import canonical_json
from simassets.core.training import LoraSpec, TrainConfig, seeded_order
from simassets.core.unlearning import UnlearnConfig
from simassets.defs.common import Freshness, partition_fingerprint, skipped, table_md, upstream_fingerprint
from simassets.defs.corpora import corpus_documents
from simassets.defs.evaluation import benchmark_evaluation
from simassets.defs.model_similarity import model_similarity
from simassets.defs.partitions import keys_of, model_corpus_partitions
from simassets.defs.resources import StudyResource
from simassets.defs.similarity import embedding_similarity
from simassets.defs.text_similarity import text_similarity

CODE_VERSION = "1"
ANALYSIS_CODE_VERSION = "1"
TRAINING_MODES = ("full", "lora")


@dataclass(frozen=True)
class AttributionSetup:
    """Per profile: the unlearning run, the re-evaluation limit and the retain sample."""

    unlearn: UnlearnConfig
    eval_limit: int | None  # examples per benchmark re-evaluated (a subset of the base model's); None: the profile's
    retain_docs_per_corpus: int  # seeded documents of each other corpus in the retain set
    methods: tuple[str, ...] = ("spearman", "pearson")
    n_boot: int = 1000

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "unlearn": self.unlearn.as_dict()}


SETUP = {
    # quick: at most 8 ascent steps of 4 x 128 tokens, 10 examples per benchmark re-scored (see the README)
    "quick": AttributionSetup(
        UnlearnConfig(train=TrainConfig(lr=1e-4, seq_len=128, batch_size=4), max_steps=8, retain_tolerance=0.02,
                      max_retain_steps=3, eval_blocks=4, target_blocks=64, retain_blocks=32),
        eval_limit=10, retain_docs_per_corpus=40, n_boot=500),
    "full": AttributionSetup(
        UnlearnConfig(train=TrainConfig(lr=3e-5, seq_len=256, batch_size=8), max_steps=100, retain_tolerance=0.02,
                      max_retain_steps=5, eval_blocks=16, target_blocks=None, retain_blocks=256),
        eval_limit=None, retain_docs_per_corpus=200),
}


def training_mode() -> str:
    mode = os.environ.get("SIMASSETS_TRAINING_MODE", "full") or "full"
    if mode not in TRAINING_MODES:
        raise dg.Failure(f"SIMASSETS_TRAINING_MODE must be one of {TRAINING_MODES}, got {mode!r}", allow_retries=False)
    return mode


def with_run_settings(train: TrainConfig, seed: int) -> TrainConfig:
    """The profile's seed, the training mode and the device (CUDA when there is one) applied to a config."""
    import torch

    return dataclasses.replace(train, seed=seed, lora=LoraSpec() if training_mode() == "lora" else None,
                               device="cuda" if torch.cuda.is_available() else "cpu")


def profile_setup(study: StudyResource) -> AttributionSetup:
    base = SETUP[study.profile_name]
    unlearn = dataclasses.replace(base.unlearn, train=with_run_settings(base.unlearn.train, study.profile_spec().seed))
    return dataclasses.replace(base, unlearn=unlearn)


def eval_limit(study: StudyResource, setup: AttributionSetup) -> int | None:
    limit = study.profile_spec().benchmark_limit
    return setup.eval_limit if limit is None else min(setup.eval_limit or limit, limit)


def _evaluated_benchmarks(study: StudyResource, model_id: str) -> dict[str, str]:
    """Benchmark -> fingerprint of the base model's stored results, for the profile's evaluated benchmarks."""
    wh, profile = study.warehouse(), study.profile_name
    fps = {b.name: wh.fingerprint("example_results", profile, {"model": model_id, "benchmark": b.name})
           for b in study.catalog().benchmarks_for(profile)}
    return {b: fp for b, fp in fps.items() if fp is not None}


def unlearning_runs_freshness(study: StudyResource, partition_key: str) -> Freshness:
    from simassets.core.models import model_fingerprint

    keys = keys_of(model_corpus_partitions, partition_key)
    profile, wh, prof = study.profile_name, study.warehouse(), study.profile_spec()
    if keys["model"] not in study.models():
        raise dg.Failure(f"model {keys['model']!r} is not in the registry {study.catalog_path / 'models.toml'}")
    results = _evaluated_benchmarks(study, keys["model"])
    if not results:
        raise dg.Failure(f"no benchmark_evaluation of {keys['model']!r} in profile {profile} yet: the unlearned model "
                         "is compared with the base model's stored per-example results", allow_retries=False)
    corpora = {c.name: upstream_fingerprint(wh, "corpus_documents", profile, {"corpus": c.name})
               for c in study.catalog().corpora_for(profile)}
    setup = profile_setup(study)
    fp = partition_fingerprint(
        "unlearning_runs", CODE_VERSION, setup=setup.as_dict(), eval_limit=eval_limit(study, setup),
        model=model_fingerprint(study.models()[keys["model"]]), corpora=corpora, results=results,
        eval_batch_size=prof.eval_batch_size, max_length=prof.max_length, keep=os.environ.get("SIMASSETS_KEEP_UNLEARNED", ""),
        versions={p: version(p) for p in ("torch", "transformers", "lm_eval")})
    return Freshness(("unlearning_runs", "attribution"), keys, fp)


def _retain_texts(study: StudyResource, corpus: str, per_corpus: int, seed: int) -> list[str]:
    wh, out = study.warehouse(), []
    for c in study.catalog().corpora_for(study.profile_name):
        if c.name != corpus:
            texts = wh.read_partition("corpus_documents", study.profile_name, {"corpus": c.name})["text"].tolist()
            out += [texts[i] for i in seeded_order(texts, seed)[:per_corpus]]
    return out


def _score_deltas(study: StudyResource, lm, model_id: str, benches: list[str], limit: int | None) -> pd.DataFrame:
    """Re-evaluate ``benches`` with the unlearned ``lm`` and pair each example with the base model's stored result."""
    from simassets.core.evaluation import evaluate_benchmark
    from simassets.core.unlearning import benchmark_delta

    wh, profile, prof, cat = study.warehouse(), study.profile_name, study.profile_spec(), study.catalog()
    rows = []
    for bench in benches:
        keys = {"model": model_id, "benchmark": bench}
        spec = cat.benchmarks[bench]
        stored = wh.read_partition("benchmark_scores", profile, keys).iloc[0]
        primary = stored["primary_metric"]
        base = wh.read_partition("example_results", profile, keys).set_index("example_id")
        res = evaluate_benchmark(lm, spec, study.data_root_path, limit, prof.seed, spec.num_fewshot)
        ids = [e.example_id for e in res.examples]
        if missing := sorted(set(ids) - set(base.index)):
            raise dg.Failure(f"{bench}: examples {missing[:5]} of the re-evaluation have no stored base result; "
                             "re-materialize benchmark_evaluation", allow_retries=False)
        col = "correct_norm" if primary == "acc_norm" else "correct"
        unl = [getattr(e, col) for e in res.examples]
        d = benchmark_delta(base.loc[ids, col].astype(bool).tolist(), unl, res.score.random_baseline)
        if len(ids) == stored["n"] and abs(d["base_acc"] - stored[primary]) > 1e-9:
            raise dg.Failure(f"{bench}: stored example_results ({d['base_acc']}) and benchmark_scores "
                             f"({stored[primary]}) disagree; re-materialize benchmark_evaluation", allow_retries=False)
        rows.append({"benchmark": bench, "category": spec.category, "n_benchmarks": 1, "seconds": res.seconds, **d})
    return pd.DataFrame(rows)


def _keep_weights(study: StudyResource, model, tokenizer, fp: str) -> str:
    if os.environ.get("SIMASSETS_KEEP_UNLEARNED", "") not in ("1", "true", "yes"):
        return ""
    out = study.cache_dir / "unlearned" / fp[:16]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@dg.asset(
    partitions_def=model_corpus_partitions,
    deps=[dg.AssetDep(corpus_documents, partition_mapping=dg.AllPartitionMapping()),
          dg.AssetDep(benchmark_evaluation, partition_mapping=dg.AllPartitionMapping())],
    group_name="attribution",
    kinds={"pytorch", "parquet"},
    code_version=CODE_VERSION,
    pool="model",
)
def unlearning_runs(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Unlearn one corpus from one model (gradient ascent with retain repair, stopped by the shuffled-text rule or the step budget), re-evaluate the unlearned model on the benchmarks' examples and store Delta score per benchmark and capability category against the base model's results on the same examples; loss curves."""
    from simassets.core.evaluation import make_lm
    from simassets.core.models import load_causal_lm
    from simassets.core.unlearning import category_deltas, loss_curves, unlearn

    fresh = unlearning_runs_freshness(study, context.partition_key)
    keys, fp, profile, wh = fresh.keys, fresh.fingerprint, study.profile_name, study.warehouse()
    if fresh.fresh(wh, profile):
        return skipped(context, wh, "unlearning_runs", profile, keys, fp)
    model_id, corpus = keys["model"], keys["corpus"]
    setup, prof = profile_setup(study), study.profile_spec()
    cfg, limit = setup.unlearn, eval_limit(study, setup)
    loaded = load_causal_lm(study.models()[model_id], device=cfg.train.device)
    target = wh.read_partition("corpus_documents", profile, {"corpus": corpus})["text"].tolist()
    retain = _retain_texts(study, corpus, setup.retain_docs_per_corpus, prof.seed)
    context.log.info(f"unlearning {corpus} from {model_id}: {len(target)} documents, {len(retain)} retain documents, "
                     f"at most {cfg.max_steps} ascent steps ({training_mode()} parameters, {cfg.train.device})")
    res = unlearn(loaded.model, loaded.tokenizer, target, retain, cfg)
    context.log.info(f"stopped by {res.stop_rule} after {res.ascent_steps} ascent + {res.retain_steps} retain steps "
                     f"({res.seconds:.1f}s, {res.seconds_per_step:.2f}s per step)")
    t0 = time.perf_counter()
    lm = make_lm(res.model, loaded.tokenizer, batch_size=prof.eval_batch_size, max_length=prof.max_length)
    bench = _score_deltas(study, lm, model_id, sorted(_evaluated_benchmarks(study, model_id)), limit)
    eval_seconds = time.perf_counter() - t0
    weights_path = _keep_weights(study, res.model, loaded.tokenizer, fp)
    cats = category_deltas(bench)
    params = canonical_json({"setup": setup.as_dict(), "eval_limit": limit, "mode": training_mode(),
                             "model_fingerprint": loaded.fingerprint, "retain_docs": len(retain)})
    attr = pd.concat([bench.drop(columns="seconds").assign(level="benchmark"),
                      cats.assign(level="category", benchmark="")], ignore_index=True)
    attr = attr.assign(model=model_id, corpus=corpus, params=params)
    curve = pd.DataFrame(res.curve)
    s = res.summary()
    run = pd.DataFrame([{
        "model": model_id, "corpus": corpus, "stop_rule": res.stop_rule, "ascent_steps": res.ascent_steps,
        "retain_steps": res.retain_steps, "max_steps": cfg.max_steps,
        **{k: s[k] for k in ("base_target_loss", "base_shuffled_loss", "base_retain_loss", "retain_bound",
                             "final_target_loss", "final_shuffled_loss", "final_retain_loss")},
        "curve_step": curve["step"].astype(int).tolist(), "curve_target": curve["target_loss"].tolist(),
        "curve_shuffled": curve["shuffled_loss"].tolist(), "curve_retain": curve["retain_loss"].tolist(),
        "curve_retain_steps": curve["retain_steps"].astype(int).tolist(), "tokens": res.tokens,
        "seconds_per_step": res.seconds_per_step, "unlearn_seconds": res.seconds, "eval_seconds": eval_seconds,
        "eval_limit": limit, "n_benchmarks": len(bench), "weights_path": weights_path,
        "model_fingerprint": loaded.fingerprint, "params": params}])
    cols = lambda t: [c for c, _, _ in wh.table(t).columns if c not in ("profile", "created_at")]  # noqa: E731
    figure = loss_curves([{"corpus": corpus, "curve": res.curve, "retain_bound": res.retain_bound, "stop_rule": res.stop_rule}],
                         plots.plots_dir(study.home_path, profile, "attribution") / f"curve_{plots.safe_name(model_id)}_{plots.safe_name(corpus)}.png",
                         f"unlearning {corpus} from {model_id}")
    wh.write_partition("attribution", profile, keys, attr[cols("attribution")], fp)
    wh.write_partition("unlearning_runs", profile, keys, run[cols("unlearning_runs")], fp, info={"plots": [str(figure)]})
    return dg.MaterializeResult(
        metadata={"stop_rule": res.stop_rule, "ascent_steps": res.ascent_steps, "retain_steps": res.retain_steps,
                  "seconds_per_step": round(res.seconds_per_step, 3), "unlearn_seconds": round(res.seconds, 1),
                  "eval_seconds": round(eval_seconds, 1), "eval_limit": limit if limit is not None else -1,
                  "trainable_parameters": res.trainable_parameters, "tokens": res.tokens,
                  "mean_delta": float(bench["delta"].mean()),
                  "categories": table_md(cats[["category", "n_benchmarks", "n", "base_score", "unlearned_score", "delta", "delta_stderr"]]),
                  "largest_drops": table_md(bench.sort_values("delta")[["benchmark", "category", "n", "base_score", "unlearned_score", "delta", "delta_stderr"]], 10),
                  "loss_curves": dg.MetadataValue.md(plots.image_markdown([figure])), "fingerprint": fp[:16]},
        data_version=dg.DataVersion(fp),
    )


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class FiguresFreshness(Freshness):
    """Fresh when the fingerprint matches *and* the figures recorded with the first table still exist."""

    def fresh(self, wh, profile: str) -> bool:
        stored = wh.stored(self.tables[0], profile, self.keys)
        return super().fresh(wh, profile) and stored is not None and plots.existing(stored.info.get("plots", []))


def _similarity_rows(wh, profile: str) -> pd.DataFrame:
    return wh.query("select corpus, benchmark, model, measure, value from dataset_similarity where profile = ? and benchmark <> ''",
                    [profile])


def attribution_analysis_freshness(study: StudyResource, partition_key: str | None = None) -> Freshness:
    from simassets.core.models import models_for_profile
    from simassets.core.studies import frame_digest

    wh, profile = study.warehouse(), study.profile_name
    runs = {f"{m.id}|{c.name}": wh.fingerprint("attribution", profile, {"model": m.id, "corpus": c.name})
            for m in models_for_profile(study.models(), profile) for c in study.catalog().corpora_for(profile)}
    setup = SETUP[profile]
    fp = partition_fingerprint("attribution_analysis", ANALYSIS_CODE_VERSION, runs=runs,
                               similarity=frame_digest(_similarity_rows(wh, profile)), methods=setup.methods,
                               n_boot=setup.n_boot, seed=study.profile_spec().seed)
    return FiguresFreshness(("corpus_relationships", "high_impact_corpora", "attribution_similarity"), {}, fp)


@dg.asset(
    deps=[unlearning_runs, *(dg.AssetDep(a, partition_mapping=dg.AllPartitionMapping())
                             for a in (embedding_similarity, text_similarity, model_similarity))],
    group_name="attribution",
    kinds={"scipy", "parquet"},
    code_version=ANALYSIS_CODE_VERSION,
)
def attribution_analysis(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Across the unlearning runs of the profile: relationships between corpora from their impact vectors (correlated / complementary / orthogonal), high-impact corpora per capability, and whether a corpus's similarity to a benchmark predicts the benchmark's drop when the corpus is unlearned (stats.correlation_grid); Delta heatmap (corpus x capability) and loss curves."""
    from simassets.core import unlearning as U

    fresh = attribution_analysis_freshness(study)
    fp, profile, wh, seed = fresh.fingerprint, study.profile_name, study.warehouse(), study.profile_spec().seed
    if fresh.fresh(wh, profile):
        return skipped(context, wh, "corpus_relationships", profile, {}, fp)
    attr = wh.query("select * from attribution where profile = ?", [profile])
    runs = wh.query("select * from unlearning_runs where profile = ?", [profile])
    if attr.empty:
        raise dg.Failure("no unlearning_runs materialized for this profile yet", allow_retries=False)
    setup = SETUP[profile]
    bench, cats = attr[attr["level"] == "benchmark"], attr[attr["level"] == "category"]
    rel, hi, figures = [], [], []
    out = plots.plots_dir(study.home_path, profile, "attribution")
    for model, mb in bench.groupby("model", sort=True):
        impact = mb.pivot(index="benchmark", columns="corpus", values="delta")
        rel.append(U.corpus_relationships(impact).assign(model=model))
        mc = cats[cats["model"] == model]
        hi.append(U.high_impact(mc).assign(model=model))
        figures.append(U.delta_heatmap(mc, out / f"heatmap_{plots.safe_name(model)}.png",
                                       f"{model}: Δ normalised score when a corpus is unlearned (profile {profile})"))
        mr = runs[runs["model"] == model].sort_values("corpus")
        figures.append(U.loss_curves(
            [{"corpus": r.corpus, "retain_bound": r.retain_bound, "stop_rule": r.stop_rule,
              "curve": [{"step": s, "target_loss": t, "shuffled_loss": sh, "retain_loss": rt} for s, t, sh, rt in
                        zip(r.curve_step, r.curve_target, r.curve_shuffled, r.curve_retain)]} for r in mr.itertuples()],
            out / f"curves_{plots.safe_name(model)}.png", f"{model}: unlearning loss curves"))
    sim = U.attribution_similarity_table(bench, _similarity_rows(wh, profile), setup.methods, setup.n_boot, seed)
    params = canonical_json({"methods": setup.methods, "n_boot": setup.n_boot, "seed": seed,
                             "thresholds": {"correlated": U.CORRELATED_R, "complementary": U.COMPLEMENTARY_R,
                                            "orthogonal": U.ORTHOGONAL_R, "high_impact_points": U.HIGH_IMPACT_POINTS,
                                            "high_impact_se": U.HIGH_IMPACT_SE}})
    tables = {"corpus_relationships": pd.concat(rel, ignore_index=True), "high_impact_corpora": pd.concat(hi, ignore_index=True),
              "attribution_similarity": sim}
    for name, df in tables.items():
        cols = [c for c, _, _ in wh.table(name).columns if c not in ("profile", "created_at")]
        wh.write_partition(name, profile, {}, df.assign(params=params)[cols], fp,
                           info={"plots": [str(f) for f in figures]} if name == "corpus_relationships" else None)
    pooled = sim[(sim["scope"] == "*")] if len(sim) else sim
    return dg.MaterializeResult(
        metadata={"runs": len(runs), "relationships": table_md(tables["corpus_relationships"][["model", "corpus_a", "corpus_b", "n", "r", "relation"]], 30),
                  "high_impact": table_md(tables["high_impact_corpora"].query("high_impact")[["model", "category", "corpus", "delta", "delta_stderr"]], 30),
                  "attribution_vs_similarity": table_md(pooled[["model", "measure", "method", "n", "r", "r_oriented", "p", "p_adj"]], 30)
                  if len(pooled) else dg.MetadataValue.md("_(no similarity rows)_"),
                  "plots": dg.MetadataValue.md(plots.image_markdown(figures)), "plot_dir": dg.MetadataValue.path(str(out)),
                  "fingerprint": fp[:16]},
        data_version=dg.DataVersion(fp),
    )
