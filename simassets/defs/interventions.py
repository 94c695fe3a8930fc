"""Training interventions: fine-tune each model on each training corpus for the same token budget, measure
every target's loss before and after, and ask whether corpus-target alignment predicts it.

The experiment lives in :mod:`simassets.core.finetune`; this module picks the per-profile setup (targets,
positive controls, budget), reads the warehouse and writes ``finetune_runs`` + ``finetune_eval`` (per
(model, corpus) partition) and ``alignment_vs_loss`` (profile-wide) with the scatter plot.
``SIMASSETS_TRAINING_MODE`` (``full`` | ``lora``) applies as for unlearning.
"""

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import dagster as dg
import pandas as pd

from simassets.core import plots
from simassets.core.computation import Call, Computation, FilePath, Markdown, NotMaterialized, Output, Scope, Upstream
from simassets.core.computation import table_md
from simassets.core.finetune import FinetuneConfig, Target
from simassets.core.hashing import canonical_json, sha256_text
from simassets.core.measures.task2vec import Task2VecParams, probe_spec, task2vec_params
from simassets.core.paths import atomic_write_text
from simassets.core.schema import ALIGNMENT_VS_LOSS, BENCHMARK_EXAMPLES, CORPUS_DOCUMENTS, FINETUNE_EVAL, FINETUNE_RUNS
from simassets.core.tasks import benchmark_text
from simassets.core.training import TrainConfig
from simassets.defs.attribution import training_mode, with_run_settings
from simassets.defs.factory import build

CODE_VERSION = "2"
ANALYSIS_CODE_VERSION = "2"  # 2: the reliability column
BENCHMARK, HELDOUT = "benchmark:", "heldout:"


@dataclass(frozen=True)
class InterventionSetup:
    """Per profile: the fine-tuning run, the targets, the declared positive controls and the alignment sizes."""

    finetune: FinetuneConfig
    targets: tuple[str, ...]  # "benchmark:NAME" (rendered input + gold continuation) | "heldout:CORPUS"
    positive_controls: tuple[tuple[str, str], ...] = ()  # (training corpus, target) pairs allowed to overlap
    heldout_fraction: float = 0.2  # share of a corpus sample held out as its target (removed from all training data)
    heldout_max_length: int = 128  # tokens scored per held-out document
    task2vec: Task2VecParams | None = None  # None: the study's own Task2Vec parameters (task2vec_params(profile))
    gzip_pairs: int = 300
    methods: tuple[str, ...] = ("pearson", "spearman")
    n_boot: int = 1000

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "finetune": self.finetune.as_dict()}


SETUP = {
    # quick: 12 steps of 4 x 128 tokens (6,144 tokens) per corpus, 4 targets measured before and after only;
    # Task2Vec with the quick study's own parameters, so the corpora's embeddings come from corpus_task2vec's cache
    "quick": InterventionSetup(
        FinetuneConfig(TrainConfig(lr=1e-4, seq_len=128, batch_size=4), token_budget=6144, eval_points=0),
        targets=("benchmark:arc_easy", "benchmark:lambada_openai", "benchmark:pubmed_qa_labeled", "heldout:c4_en"),
        positive_controls=(("pubmed_abstracts", "benchmark:pubmed_qa_labeled"),), n_boot=500),
    "full": InterventionSetup(
        FinetuneConfig(TrainConfig(lr=3e-5, seq_len=256, batch_size=8), token_budget=262_144, eval_points=4),
        targets=("benchmark:arc_easy", "benchmark:arc_challenge", "benchmark:lambada_openai", "benchmark:boolq",
                 "benchmark:hellaswag", "benchmark:pubmed_qa_labeled", "benchmark:mmlu_high_school_biology",
                 "heldout:c4_en", "heldout:wikitext2"),
        positive_controls=(("pubmed_abstracts", "benchmark:pubmed_qa_labeled"),), heldout_max_length=256,
        task2vec=Task2VecParams(n_batches=8), gzip_pairs=1000),
}


def profile_setup(scope: Scope) -> InterventionSetup:
    """The profile's setup with its seed, training mode and device; targets the profile lacks are dropped."""
    base = SETUP[scope.profile]
    seed = scope.seed
    cat, profile = scope.catalog, scope.profile
    have = {BENCHMARK + b.name for b in cat.benchmarks_for(profile)} | {HELDOUT + c.name for c in cat.corpora_for(profile)}
    ft = dataclasses.replace(base.finetune, train=with_run_settings(base.finetune.train, seed))
    t2v = task2vec_params(profile, seed) if base.task2vec is None else dataclasses.replace(base.task2vec, seed=seed)
    return dataclasses.replace(base, finetune=ft, targets=tuple(t for t in base.targets if t in have), task2vec=t2v)


def _target_sources(scope: Scope, setup: InterventionSetup) -> dict[str, str]:
    """Target -> fingerprint of the partition its texts come from."""
    return {t: scope.upstream(*((BENCHMARK_EXAMPLES, {"benchmark": t.removeprefix(BENCHMARK)}) if t.startswith(BENCHMARK)
                                else (CORPUS_DOCUMENTS, {"corpus": t.removeprefix(HELDOUT)})))
            for t in setup.targets}


def build_targets(scope: Scope, setup: InterventionSetup) -> tuple[list[Target], set[str]]:
    """The targets' texts and the sha256 of every held-out text (removed from all training corpora)."""
    from simassets.core.finetune import heldout_split

    wh, profile, seed = scope.warehouse, scope.profile, scope.seed
    targets, held = [], set()
    for name in setup.targets:
        if name.startswith(BENCHMARK):
            ex = wh.read_partition(BENCHMARK_EXAMPLES, profile, {"benchmark": name.removeprefix(BENCHMARK)})
            targets.append(Target(name, tuple(benchmark_text(ex))))  # the texts benchmark_task2vec embeds
        else:
            docs = wh.read_partition(CORPUS_DOCUMENTS, profile, {"corpus": name.removeprefix(HELDOUT)})["text"].tolist()
            _, out = heldout_split(docs, setup.heldout_fraction, seed)
            held |= {sha256_text(t) for t in out}
            targets.append(Target(name, tuple(out), max_length=setup.heldout_max_length))
    return targets, held


def _finetune_inputs(scope: Scope, keys) -> dict:
    from simassets.core.models import model_fingerprint

    setup, probe = profile_setup(scope), probe_spec(scope)
    return {"setup": setup.as_dict(), "mode": training_mode(), "targets": _target_sources(scope, setup),
            "corpus": scope.upstream(CORPUS_DOCUMENTS, {"corpus": keys["corpus"]}),
            "model": model_fingerprint(scope.models[keys["model"]]), "probe": [probe.id, model_fingerprint(probe)],
            "versions": {p: version(p) for p in ("torch", "transformers")}}


@lru_cache(maxsize=64)
def _base_loss(spec, target: Target, batch_size: int, device: str, cache_dir: Path) -> tuple[float, int]:
    """A target's (loss, tokens) under an untouched registered model: once per process (every corpus run shares
    it), and once per content on disk (the model's fingerprint, the target's texts and length, the batch size,
    torch and transformers versions), so parallel workers and later runs do not compute it again."""
    from simassets.core.finetune import target_loss
    from simassets.core.models import load_causal_lm, model_fingerprint

    key = sha256_text(canonical_json({
        "model": model_fingerprint(spec), "target": target.name, "texts": [sha256_text(t) for t in target.texts],
        "max_length": target.max_length, "batch_size": batch_size, "device": device,
        "versions": {p: version(p) for p in ("torch", "transformers")}}))
    path = cache_dir / "finetune_base_loss" / f"{key[:32]}.json"
    if path.exists():
        got = json.loads(path.read_text())
        return float(got["loss"]), int(got["n_tokens"])
    loaded = load_causal_lm(spec, device=device)
    loss, n = target_loss(loaded.model, loaded.tokenizer, target, batch_size)
    atomic_write_text(path, json.dumps({"loss": loss, "n_tokens": n, "target": target.name, "model": spec.id}))
    return loss, n


def _alignment(scope: Scope, setup: InterventionSetup, probe, corpus_texts: list[str], target: Target) -> dict:
    from simassets.core.measures.compression import gzip_alignment
    from simassets.core.measures.task2vec import Task2VecCache, alignment_coefficient

    cache = Task2VecCache(scope.cache_dir / "task2vec")
    embs_c = cache.embeddings(probe.model, probe.tokenizer, corpus_texts, setup.task2vec, probe.fingerprint)
    embs_t = cache.embeddings(probe.model, probe.tokenizer, list(target.texts), setup.task2vec, probe.fingerprint)
    a = alignment_coefficient(embs_c, embs_t)
    g = gzip_alignment(list(target.texts), corpus_texts, n_pairs=setup.gzip_pairs, seed=setup.task2vec.seed)
    return {"task2vec_alignment": a.value, "task2vec_ci_low": a.ci_low, "task2vec_ci_high": a.ci_high,
            "gzip_alignment": g["gzip_alignment"]}


def _finetune(call: Call) -> Output:
    """Refuse the targets the corpus overlaps, fine-tune a fresh copy for the budget, measure every target."""
    from simassets.core.finetune import ContaminationError, finetune, overlap_guard
    from simassets.core.models import load_causal_lm

    scope, keys = call.scope, call.keys
    profile, wh = scope.profile, scope.warehouse
    model_id, corpus = keys["model"], keys["corpus"]
    setup, registry = profile_setup(scope), scope.models
    cfg, device = setup.finetune, setup.finetune.train.device
    targets, held = build_targets(scope, setup)
    texts = [t for t in wh.read_partition(CORPUS_DOCUMENTS, profile, {"corpus": corpus})["text"] if sha256_text(t) not in held]
    verdicts, refused = {}, {}
    for t in targets:
        try:
            verdicts[t.name] = overlap_guard(t, corpus, texts, positive_control=(corpus, t.name) in setup.positive_controls)
        except ContaminationError as exc:
            refused[t.name] = str(exc)
            call.log(str(exc))
    allowed = [t for t in targets if t.name not in refused]
    spec = registry[model_id]
    loaded = load_causal_lm(spec, device=device)
    base = {t.name: _base_loss(spec, t, cfg.eval_batch_size, device, scope.cache_dir) for t in allowed}
    before = {name: loss for name, (loss, _) in base.items()}
    res = finetune(loaded.model, loaded.tokenizer, texts, allowed, cfg, before=before) if allowed else None
    probe = load_causal_lm(probe_spec(scope), device=device)
    params = canonical_json({"setup": setup.as_dict(), "mode": training_mode(), "model_fingerprint": loaded.fingerprint,
                             "probe_fingerprint": probe.fingerprint, "heldout_removed": len(held)})
    rows = []
    for t in targets:
        ok = res is not None and t.name in before
        curve = res.target_curves[t.name] if ok else []
        b, a = (curve[0][1], curve[-1][1]) if ok else (math.nan, math.nan)
        v = verdicts.get(t.name)
        rows.append({"model": model_id, "corpus": corpus, "target": t.name, "status": "evaluated" if ok else "refused",
                     "positive_control": (corpus, t.name) in setup.positive_controls,
                     "contaminated_fraction_13": v.contaminated_fraction if v else math.nan,
                     "loss_before": b, "loss_after": a, "delta_loss": a - b, "ppl_before": math.exp(b), "ppl_after": math.exp(a),
                     "n_tokens": base[t.name][1] if ok else 0,
                     "curve_steps": [s for s, _ in curve], "curve_loss": [x for _, x in curve],
                     **_alignment(scope, setup, probe, texts, t), "probe": probe.spec.id, "note": refused.get(t.name, ""),
                     "params": params})
    ev = pd.DataFrame(rows)
    run = pd.DataFrame([{
        "model": model_id, "corpus": corpus, "status": "trained" if res else "refused", "targets": [t.name for t in targets],
        "refused_targets": sorted(refused), "steps": res.steps if res else 0, "tokens": res.tokens if res else 0,
        "blocks": res.blocks if res else 0, "epochs": res.steps * cfg.train.batch_size / res.blocks if res else 0.0,
        "train_seconds": res.train_seconds if res else 0.0, "seconds": res.seconds if res else 0.0,
        "tokens_per_second": res.tokens_per_second if res else math.nan,
        "trainable_parameters": res.trainable_parameters if res else 0, "train_loss": res.train_curve if res else [],
        "model_fingerprint": loaded.fingerprint, "params": params}])
    return Output({FINETUNE_RUNS: run, FINETUNE_EVAL: ev}, metadata={
        "status": run["status"].iloc[0], "steps": int(run["steps"].iloc[0]), "tokens": int(run["tokens"].iloc[0]),
        "tokens_per_second": round(float(run["tokens_per_second"].iloc[0]), 1),
        "run_seconds": round(float(run["seconds"].iloc[0]), 1), "refused": refused,
        "targets": table_md(ev[["target", "status", "contaminated_fraction_13", "loss_before", "loss_after", "delta_loss",
                                "task2vec_alignment", "gzip_alignment"]])})


FINETUNE_RUNS_STEP = Computation(
    name="finetune_runs", group="interventions", partitioning="model_x_corpus", writes=(FINETUNE_RUNS, FINETUNE_EVAL),
    description="Fine-tune a fresh copy of one model on one training corpus for the profile's token budget (seeded "
                "data order, the same budget for every corpus), after refusing targets the corpus overlaps (13-gram "
                "guard, unless a declared positive control); each target's loss before, during and after, and the "
                "corpus-target alignment (Task2Vec under the probe model, gzip).",
    inputs=_finetune_inputs, compute=_finetune,
    upstream=(Upstream("corpus_documents", "all"), Upstream("benchmark_examples", "all")),
    kinds=("pytorch", "parquet"), pool="model", code_version=CODE_VERSION)


def _analysis_inputs(scope: Scope, keys) -> dict:
    setup = SETUP[scope.profile]
    runs = {f"{m}|{c}": scope.warehouse.fingerprint(FINETUNE_EVAL, scope.profile, {"model": m, "corpus": c})
            for m in scope.values("model") for c in scope.values("corpus")}
    return {"runs": runs, "methods": setup.methods, "n_boot": setup.n_boot, "seed": scope.seed}


def _analysis(call: Call) -> Output:
    """Alignment against the loss after training, per model, target and pooled; the scatter plot."""
    from simassets.core.finetune import alignment_loss_table, alignment_scatter

    profile, wh, seed = call.profile, call.scope.warehouse, call.scope.seed
    ev = wh.query(f"select * from {FINETUNE_EVAL} where profile = ? and status = 'evaluated'", [profile])
    if ev.empty:
        raise NotMaterialized("no evaluated finetune_runs for this profile yet")
    setup = SETUP[profile]
    corr = alignment_loss_table(ev, setup.methods, setup.n_boot, seed)
    out = plots.plots_dir(call.scope.home, profile, "interventions")
    figures = [alignment_scatter(ev[ev["model"] == m], corr[corr["model"] == m],
                                 out / f"alignment_vs_loss_{plots.safe_name(m)}.png",
                                 f"{m}: target loss after training on a corpus vs corpus-target alignment")
               for m in sorted(ev["model"].unique())]
    params = canonical_json({"methods": setup.methods, "n_boot": setup.n_boot, "seed": seed})
    pooled = corr[(corr["target"] == "*") & (corr["subset"] == "clean")]
    return Output({ALIGNMENT_VS_LOSS: corr.assign(params=params)}, info={"plots": [str(f) for f in figures]}, metadata={
        "pairs": len(ev),
        "pooled": table_md(pooled[["model", "measure", "loss", "method", "n", "r", "r2", "p", "ci_low", "ci_high"]], 20),
        "plots": Markdown(plots.image_markdown(figures)), "plot_dir": FilePath(out)})


ALIGNMENT_VS_LOSS_STEP = Computation(
    name="alignment_vs_loss", group="interventions", partitioning=None, writes=(ALIGNMENT_VS_LOSS,),
    description="Across the fine-tuning runs of the profile: correlation (r, r², p, bootstrap CI, least-squares line) "
                "of corpus-target alignment (Task2Vec, gzip) with the target's loss after training and its change, per "
                "model, per target and pooled, with and without positive controls; scatter plot with fit lines.",
    inputs=_analysis_inputs, compute=_analysis, upstream=(Upstream("finetune_runs", "all"),),
    kinds=("scipy", "parquet"), code_version=ANALYSIS_CODE_VERSION, figures=True)

defs = dg.Definitions(assets=build(FINETUNE_RUNS_STEP, ALIGNMENT_VS_LOSS_STEP))
