"""Causal attribution by unlearning: one run per (model, corpus), re-evaluated on the study's benchmarks,
and the profile-wide analysis (corpus relationships, high-impact corpora, attribution vs similarity).

The method lives in :mod:`simassets.core.unlearning`; this module picks the per-profile setup, reads the
warehouse, and returns ``unlearning_runs`` + ``attribution`` (per partition) and ``corpus_relationships``,
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
from simassets.core.computation import (Call, Computation, FilePath, Markdown, NotMaterialized, Output, Scope, Upstream,
                                        table_md)
from simassets.core.hashing import canonical_json
from simassets.core.measures import registry
from simassets.core.schema import (ATTRIBUTION, ATTRIBUTION_SIMILARITY, BENCHMARK_SCORES, CORPUS_DOCUMENTS,
                                   CORPUS_RELATIONSHIPS, EXAMPLE_RESULTS, HIGH_IMPACT_CORPORA, UNLEARNING_RUNS)
from simassets.core.training import LoraSpec, TrainConfig, seeded_order
from simassets.core.unlearning import UnlearnConfig
from simassets.defs.factory import build

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


def profile_setup(scope: Scope) -> AttributionSetup:
    base = SETUP[scope.profile]
    unlearn = dataclasses.replace(base.unlearn, train=with_run_settings(base.unlearn.train, scope.seed))
    return dataclasses.replace(base, unlearn=unlearn)


def eval_limit(scope: Scope, setup: AttributionSetup) -> int | None:
    limit = scope.spec.benchmark_limit
    return setup.eval_limit if limit is None else min(setup.eval_limit or limit, limit)


def _evaluated_benchmarks(scope: Scope, model_id: str) -> dict[str, str]:
    """Benchmark -> fingerprint of the base model's stored results, for the profile's evaluated benchmarks."""
    wh, profile = scope.warehouse, scope.profile
    fps = {b.name: wh.fingerprint(EXAMPLE_RESULTS, profile, {"model": model_id, "benchmark": b.name})
           for b in scope.catalog.benchmarks_for(profile)}
    return {b: fp for b, fp in fps.items() if fp is not None}


def _unlearning_inputs(scope: Scope, keys) -> dict:
    from simassets.core.models import model_fingerprint

    results = _evaluated_benchmarks(scope, keys["model"])
    if not results:
        raise NotMaterialized(f"no benchmark_evaluation of {keys['model']!r} in profile {scope.profile} yet: the "
                              "unlearned model is compared with the base model's stored per-example results")
    setup, prof = profile_setup(scope), scope.spec
    return {"setup": setup.as_dict(), "eval_limit": eval_limit(scope, setup),
            "model": model_fingerprint(scope.models[keys["model"]]),
            "corpora": {c: scope.upstream(CORPUS_DOCUMENTS, {"corpus": c}) for c in scope.values("corpus")},
            "results": results, "eval_batch_size": prof.eval_batch_size, "max_length": prof.max_length,
            "keep": os.environ.get("SIMASSETS_KEEP_UNLEARNED", ""),
            "versions": {p: version(p) for p in ("torch", "transformers", "lm_eval")}}


def _retain_texts(scope: Scope, corpus: str, per_corpus: int, seed: int) -> list[str]:
    wh, out = scope.warehouse, []
    for c in scope.catalog.corpora_for(scope.profile):
        if c.name != corpus:
            texts = wh.read_partition(CORPUS_DOCUMENTS, scope.profile, {"corpus": c.name})["text"].tolist()
            out += [texts[i] for i in seeded_order(texts, seed)[:per_corpus]]
    return out


def _score_deltas(scope: Scope, lm, model_id: str, benches: list[str], limit: int | None) -> pd.DataFrame:
    """Re-evaluate ``benches`` with the unlearned ``lm`` and pair each example with the base model's stored result."""
    from simassets.core.evaluation import evaluate_benchmark
    from simassets.core.unlearning import benchmark_delta

    wh, profile, prof, cat = scope.warehouse, scope.profile, scope.spec, scope.catalog
    rows = []
    for bench in benches:
        keys = {"model": model_id, "benchmark": bench}
        spec = cat.benchmarks[bench]
        stored = wh.read_partition(BENCHMARK_SCORES, profile, keys).iloc[0]
        primary = stored["primary_metric"]
        base = wh.read_partition(EXAMPLE_RESULTS, profile, keys).set_index("example_id")
        res = evaluate_benchmark(lm, spec, scope.data_root, limit, prof.seed, spec.num_fewshot)
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


def _keep_weights(scope: Scope, model, tokenizer, fp: str) -> str:
    if os.environ.get("SIMASSETS_KEEP_UNLEARNED", "") not in ("1", "true", "yes"):
        return ""
    out = scope.cache_dir / "unlearned" / fp[:16]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def _unlearning(call: Call) -> Output:
    """Unlearn the corpus from a fresh copy of the model, re-evaluate, and pair each example with the base result."""
    from simassets.core.evaluation import make_lm
    from simassets.core.models import load_causal_lm
    from simassets.core.unlearning import category_deltas, loss_curves, unlearn

    scope, keys, fp = call.scope, call.keys, call.fingerprint
    profile, wh = scope.profile, scope.warehouse
    model_id, corpus = keys["model"], keys["corpus"]
    setup, prof = profile_setup(scope), scope.spec
    cfg, limit = setup.unlearn, eval_limit(scope, setup)
    loaded = load_causal_lm(scope.models[model_id], device=cfg.train.device)
    target = wh.read_partition(CORPUS_DOCUMENTS, profile, {"corpus": corpus})["text"].tolist()
    retain = _retain_texts(scope, corpus, setup.retain_docs_per_corpus, prof.seed)
    call.log(f"unlearning {corpus} from {model_id}: {len(target)} documents, {len(retain)} retain documents, "
                     f"at most {cfg.max_steps} ascent steps ({training_mode()} parameters, {cfg.train.device})")
    res = unlearn(loaded.model, loaded.tokenizer, target, retain, cfg)
    call.log(f"stopped by {res.stop_rule} after {res.ascent_steps} ascent + {res.retain_steps} retain steps "
                     f"({res.seconds:.1f}s, {res.seconds_per_step:.2f}s per step)")
    t0 = time.perf_counter()
    lm = make_lm(res.model, loaded.tokenizer, batch_size=prof.eval_batch_size, max_length=prof.max_length)
    bench = _score_deltas(scope, lm, model_id, sorted(_evaluated_benchmarks(scope, model_id)), limit)
    eval_seconds = time.perf_counter() - t0
    weights_path = _keep_weights(scope, res.model, loaded.tokenizer, fp)
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
    figure = loss_curves([{"corpus": corpus, "curve": res.curve, "retain_bound": res.retain_bound, "stop_rule": res.stop_rule}],
                         plots.plots_dir(scope.home, profile, "attribution") / f"curve_{plots.safe_name(model_id)}_{plots.safe_name(corpus)}.png",
                         f"unlearning {corpus} from {model_id}")
    return Output({UNLEARNING_RUNS: run, ATTRIBUTION: attr}, info={"plots": [str(figure)]}, metadata={
        "stop_rule": res.stop_rule, "ascent_steps": res.ascent_steps, "retain_steps": res.retain_steps,
        "seconds_per_step": round(res.seconds_per_step, 3), "unlearn_seconds": round(res.seconds, 1),
        "eval_seconds": round(eval_seconds, 1), "eval_limit": limit if limit is not None else -1,
        "trainable_parameters": res.trainable_parameters, "tokens": res.tokens, "mean_delta": float(bench["delta"].mean()),
        "categories": table_md(cats[["category", "n_benchmarks", "n", "base_score", "unlearned_score", "delta",
                                     "delta_stderr"]]),
        "largest_drops": table_md(bench.sort_values("delta")[["benchmark", "category", "n", "base_score",
                                                               "unlearned_score", "delta", "delta_stderr"]], 10),
        "loss_curves": Markdown(plots.image_markdown([figure]))})


UNLEARNING_RUNS_STEP = Computation(
    name="unlearning_runs", group="attribution", partitioning="model_x_corpus", writes=(UNLEARNING_RUNS, ATTRIBUTION),
    description="Unlearn one corpus from one model (gradient ascent with retain repair, stopped by the shuffled-text "
                "rule or the step budget), re-evaluate the unlearned model on the benchmarks' examples and store Delta "
                "score per benchmark and capability category against the base model's results on the same examples; "
                "loss curves.",
    inputs=_unlearning_inputs, compute=_unlearning, upstream=(Upstream("corpus_documents", "all"),
                                                              Upstream("benchmark_evaluation", "all")),
    kinds=("pytorch", "parquet"), pool="model", code_version=CODE_VERSION)


# --------------------------------------------------------------------------- analysis


def _similarity_rows(wh, profile: str) -> pd.DataFrame:
    return wh.query("select corpus, benchmark, model, measure, value from dataset_similarity where profile = ? and benchmark <> ''",
                    [profile])


def _analysis_inputs(scope: Scope, keys) -> dict:
    from simassets.core.studies import frame_digest

    setup = SETUP[scope.profile]
    runs = {f"{m}|{c}": scope.warehouse.fingerprint(ATTRIBUTION, scope.profile, {"model": m, "corpus": c})
            for m in scope.values("model") for c in scope.values("corpus")}
    return {"runs": runs, "similarity": frame_digest(_similarity_rows(scope.warehouse, scope.profile)),
            "methods": setup.methods, "n_boot": setup.n_boot, "seed": scope.seed}


def _analysis(call: Call) -> Output:
    """Corpus relationships, high-impact corpora and attribution vs similarity across the profile's runs."""
    from simassets.core import unlearning as U

    scope = call.scope
    profile, wh, seed = scope.profile, scope.warehouse, scope.seed
    attr = wh.query("select * from attribution where profile = ?", [profile])
    runs = wh.query("select * from unlearning_runs where profile = ?", [profile])
    if attr.empty:
        raise NotMaterialized("no unlearning_runs materialized for this profile yet")
    setup = SETUP[profile]
    bench, cats = attr[attr["level"] == "benchmark"], attr[attr["level"] == "category"]
    rel, hi, figures = [], [], []
    out = plots.plots_dir(scope.home, profile, "attribution")
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
    tables = {CORPUS_RELATIONSHIPS: pd.concat(rel, ignore_index=True), HIGH_IMPACT_CORPORA: pd.concat(hi, ignore_index=True),
              ATTRIBUTION_SIMILARITY: sim}
    pooled = sim[(sim["scope"] == "*")] if len(sim) else sim
    return Output({name: df.assign(params=params) for name, df in tables.items()},
                  info={"plots": [str(f) for f in figures]}, metadata={
        "runs": len(runs),
        "relationships": table_md(tables[CORPUS_RELATIONSHIPS][["model", "corpus_a", "corpus_b", "n", "r", "relation"]], 30),
        "high_impact": table_md(tables[HIGH_IMPACT_CORPORA].query("high_impact")[["model", "category", "corpus", "delta",
                                                                                 "delta_stderr"]], 30),
        "attribution_vs_similarity": table_md(pooled[["model", "measure", "method", "n", "r", "r_oriented", "p", "p_adj"]],
                                              30) if len(pooled) else Markdown("_(no similarity rows)_"),
        "plots": Markdown(plots.image_markdown(figures)), "plot_dir": FilePath(out)})


ATTRIBUTION_ANALYSIS_STEP = Computation(
    name="attribution_analysis", group="attribution", partitioning=None,
    writes=(CORPUS_RELATIONSHIPS, HIGH_IMPACT_CORPORA, ATTRIBUTION_SIMILARITY),
    description="Across the unlearning runs of the profile: relationships between corpora from their impact vectors "
                "(correlated / complementary / orthogonal), high-impact corpora per capability, and whether a corpus's "
                "similarity to a benchmark predicts the benchmark's drop when the corpus is unlearned "
                "(stats.correlation_grid); Delta heatmap (corpus x capability) and loss curves.",
    inputs=_analysis_inputs, compute=_analysis,
    upstream=(Upstream("unlearning_runs", "all"),
              *(Upstream(f.name, "all") for f in registry.FAMILIES.values() if "benchmark" in f.dimensions)),
    kinds=("scipy", "parquet"), code_version=ANALYSIS_CODE_VERSION, figures=True)

defs = dg.Definitions(assets=build(UNLEARNING_RUNS_STEP, ATTRIBUTION_ANALYSIS_STEP))
