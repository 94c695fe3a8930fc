"""Studies: per-study correlations, measure agreement and per-example analysis, with their figures.

Every study asset is partitioned by ``study`` (a dynamic partition synced from the catalog's
``[studies.*]``) and depends on *all* partitions of the similarity and evaluation assets, so a change
to any input partition refreshes every study. A partition recomputes only when the rows it reads
(hashed) or its parameters changed; otherwise it reports ``skipped``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from simassets.core import plots
from simassets.core.hashing import canonical_json
from simassets.core.measures import registry
from simassets.core.studies import StudyData, get_study, load_study, study_params
from simassets.core.studies import agreement_table, correlation_table, per_example_table
from simassets.defs.common import Freshness, partition_fingerprint, skipped, table_md
from simassets.defs.evaluation import benchmark_evaluation
from simassets.defs.model_similarity import model_similarity
from simassets.defs.resources import StudyResource
from simassets.defs.similarity import embedding_similarity
from simassets.defs.task2vec import task2vec_alignment
from simassets.defs.text_similarity import text_similarity

CODE_VERSION = "2"
REGISTRY_CODE_VERSION = "1"
AGREEMENT_METHOD = "spearman"

study_partitions = dg.DynamicPartitionsDefinition(name="study")

# Every asset that writes benchmark rows of dataset_similarity / example_similarity belongs here
# (corpus_perplexity writes benchmark-free rows, which no study reads).
SIMILARITY_ASSETS = [embedding_similarity, text_similarity, model_similarity, task2vec_alignment]

# ``eager()`` without its "no upstream partition missing" guard: an upstream partition that is never
# materialized (a benchmark only in the other profile, a failed evaluation) must not block a study
# forever; the study correlates over the partitions that exist and says so (n, notes).
STUDY_AUTOMATION = (dg.AutomationCondition.eager()
                    .without(~dg.AutomationCondition.any_deps_missing())
                    .with_label("eager (missing upstream partitions allowed)"))


def _all(*assets) -> list[dg.AssetDep]:
    return [dg.AssetDep(a, partition_mapping=dg.AllPartitionMapping()) for a in assets]


def study_table(wh, profile: str) -> pd.DataFrame:
    """One row per (model, corpus, benchmark, measure) of every dataset-level measure with the score
    it meets (model-specific measures only meet their model's scores)."""
    return wh.query(
        """select s.model, d.corpus, d.benchmark, d.measure, d.value, s.normalized_score
        from benchmark_scores s join dataset_similarity d
          on d.profile = s.profile and d.benchmark = s.benchmark and (d.model = '' or d.model = s.model)
        where s.profile = ?""", [profile])


# --------------------------------------------------------------------------- freshness
def _load(study: StudyResource, partition_key: str | None) -> StudyData:
    catalog = study.catalog()
    try:
        spec = get_study(catalog, partition_key or "all")
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    return load_study(study.warehouse(), catalog, study.profile_name, spec)


@dataclass(frozen=True)
class StudyFreshness(Freshness):
    """Fresh when the stored fingerprint matches *and* the figures the partition recorded still exist."""

    def fresh(self, wh, profile: str) -> bool:
        stored = wh.stored(self.tables[0], profile, self.keys)
        return super().fresh(wh, profile) and stored is not None and plots.existing(stored.info.get("plots", []))


def _freshness(asset: str, study: StudyResource, data: StudyData) -> StudyFreshness:
    part = KINDS[asset].part
    measures = sorted(set(getattr(data, part)["measure"])) if not getattr(data, part).empty else []
    fp = partition_fingerprint(
        asset, CODE_VERSION, data=data.digest(part), spec=data.spec.as_dict(), seed=study.profile_spec().seed,
        benchmarks=data.benchmarks, corpora=data.corpora,
        directions={m: registry.MEASURES[m].direction for m in measures if m in registry.MEASURES})
    return StudyFreshness((asset,), {"study": data.spec.name}, fp)


def correlations_freshness(study: StudyResource, partition_key: str | None = None) -> Freshness:
    return _freshness("correlations", study, _load(study, partition_key))


def measure_agreement_freshness(study: StudyResource, partition_key: str | None = None) -> Freshness:
    return _freshness("measure_agreement", study, _load(study, partition_key))


def per_example_analysis_freshness(study: StudyResource, partition_key: str | None = None) -> Freshness:
    return _freshness("per_example_analysis", study, _load(study, partition_key))


def measure_registry_freshness(study: StudyResource, partition_key: str | None = None) -> Freshness:
    return Freshness(("measures",), {}, partition_fingerprint("measures", REGISTRY_CODE_VERSION, rows=_measure_rows().to_dict("records")))


# --------------------------------------------------------------------------- shared body
def _run_study_asset(context: dg.AssetExecutionContext, study: StudyResource, asset: str) -> dg.MaterializeResult:
    """Load the study, skip if its rows and figures are current, else compute, write, draw, describe.

    The asset writes the warehouse table of the same name, partition ``{"study": NAME}``."""
    kind, data = KINDS[asset], _load(study, context.partition_key)
    fresh = _freshness(asset, study, data)
    wh, profile, seed = study.warehouse(), study.profile_name, study.profile_spec().seed
    out = plots.plots_dir(study.home_path, profile, data.spec.name)
    if fresh.fresh(wh, profile):  # the latest materialization shows the (unchanged) figures too
        figures = wh.stored(asset, profile, fresh.keys).info.get("plots", [])
        return skipped(context, wh, asset, profile, fresh.keys, fresh.fingerprint, plot_dir=dg.MetadataValue.path(str(out)),
                       plots=dg.MetadataValue.md(plots.image_markdown(figures)))
    selects_nothing = not (data.benchmarks and data.corpora)
    if getattr(data, kind.part).empty and not selects_nothing:
        need = "benchmark_evaluation and " if kind.part != "similarity" else ""
        raise dg.Failure(f"study {data.spec.name!r}: no rows for its {len(data.benchmarks)} benchmarks x "
                         f"{len(data.corpora)} corpora yet; materialize {need}the similarity assets first")
    rows = kind.compute(data, seed)  # empty when the study selects nothing in this profile: an empty partition
    cols = [c for c, _, _ in wh.table(asset).columns if c not in ("profile", "created_at")]
    rows = rows.assign(study=data.spec.name, params=study_params(data.spec, seed, code_version=CODE_VERSION))
    plots.clear(out, kind.prefix)
    figures = [str(p) for p in kind.draw(data, rows, out)] if len(rows) else []
    wh.write_partition(asset, profile, fresh.keys, rows[cols], fresh.fingerprint, info={"plots": figures})
    described = kind.summary(data, rows) if len(rows) else {"empty": f"the study selects nothing in profile {profile}"}
    return dg.MaterializeResult(
        metadata={"rows": len(rows), "benchmarks": len(data.benchmarks), "corpora": len(data.corpora), **described,
                  "plot_dir": dg.MetadataValue.path(str(out)), "plots": dg.MetadataValue.md(plots.image_markdown(figures)),
                  "fingerprint": fresh.fingerprint[:16]},
        data_version=dg.DataVersion(fresh.fingerprint),
    )


def _correlation_summary(data: StudyData, rows: pd.DataFrame) -> dict:
    top = rows.assign(abs_r=rows["r"].abs()).sort_values(["p", "abs_r"], ascending=[True, False], na_position="last")
    return {"models": int(rows["model"].nunique()),
            "significant_after_correction": int((rows["p_adj"] < 0.05).sum()),
            "undefined": int(rows["r"].isna().sum()),
            "strongest": table_md(top[["model", "corpus", "measure", "method", "n", "r", "r_oriented", "p", "p_adj"]], 12)}


def _agreement_summary(data: StudyData, rows: pd.DataFrame) -> dict:
    pooled = rows[(rows["corpus"] == "*") & (rows["measure_a"] < rows["measure_b"])]
    return {"measures": int(rows["measure_a"].nunique()),
            "median_pairwise_r": float(pooled["r"].median()) if len(pooled) else float("nan"),
            "pooled_pairs": table_md(pooled[["model", "measure_a", "measure_b", "n", "r"]].sort_values("r"), 20)}


def _per_example_summary(data: StudyData, rows: pd.DataFrame) -> dict:
    med = rows.groupby(["model", "corpus", "measure"], as_index=False).agg(
        benchmarks=("auroc", "count"), median_auroc=("auroc", "median"),
        significant=("p_adj", lambda p: int((p < 0.05).sum())))
    return {"examples": int(data.examples.groupby(["model", "benchmark", "example_id"]).ngroups),
            "significant_after_correction": int((rows["p_adj"] < 0.05).sum()),
            "median_auroc": table_md(med, 20)}


@dataclass(frozen=True)
class _Kind:
    """What a study asset reads (a :class:`StudyData` part), computes, draws (file prefix) and reports."""

    part: str
    compute: Callable[[StudyData, int], pd.DataFrame]
    prefix: str
    draw: Callable[[StudyData, pd.DataFrame, Path], list[Path]]
    summary: Callable[[StudyData, pd.DataFrame], dict]


KINDS = {
    "correlations": _Kind("dataset", correlation_table, "scatter_", plots.scatter_figures, _correlation_summary),
    "measure_agreement": _Kind("similarity", lambda d, seed: agreement_table(d, AGREEMENT_METHOD), "agreement",
                               lambda d, rows, out: plots.agreement_figures(rows, out, d.spec.name), _agreement_summary),
    "per_example_analysis": _Kind("examples", lambda d, seed: per_example_table(d), "examples_",
                                  plots.example_figures, _per_example_summary),
}
STUDY_ASSETS = tuple(KINDS)  # materialized together, one runner step per study


# --------------------------------------------------------------------------- assets
STUDY_ASSET_ARGS = dict(partitions_def=study_partitions, group_name="studies", code_version=CODE_VERSION,
                        automation_condition=STUDY_AUTOMATION)


@dg.asset(deps=_all(*SIMILARITY_ASSETS, benchmark_evaluation), kinds={"scipy", "parquet"}, **STUDY_ASSET_ARGS)
def correlations(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Per study: Spearman, Pearson and Kendall correlation of every dataset-level similarity measure with each score across the study's benchmarks, per model and corpus (n, analytic and permutation p, bootstrap CI, Benjamini-Yekutieli p_adj over the study's grid, r oriented so + means 'more similar => better'); scatter plots."""
    return _run_study_asset(context, study, "correlations")


@dg.asset(deps=_all(*SIMILARITY_ASSETS), kinds={"scipy", "parquet"}, **STUDY_ASSET_ARGS)
def measure_agreement(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Per study: do the similarity measures agree? Spearman correlation of every pair of oriented dataset-level measures over (corpus, benchmark) pairs (corpus '*') and over benchmarks within each corpus; heatmap."""
    return _run_study_asset(context, study, "measure_agreement")


@dg.asset(deps=_all(*SIMILARITY_ASSETS, benchmark_evaluation), kinds={"scipy", "parquet"}, **STUDY_ASSET_ARGS)
def per_example_analysis(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Per study, model, corpus, benchmark and example-level measure: are correctly answered examples more similar to the corpus? AUROC, Mann-Whitney test (p_adj over the study), accuracy by similarity quartile; distribution plots."""
    return _run_study_asset(context, study, "per_example_analysis")


# --------------------------------------------------------------------------- measure registry
def _measure_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"name": m.name, "family": m.family, "level": level, "direction": m.direction, "needs_model": m.needs_model,
         "description": m.description, "formula": m.formula, "params": canonical_json(m.params)}
        for m in registry.MEASURES.values() for level in m.levels
    ])


@dg.asset(group_name="studies", kinds={"python", "parquet"}, code_version=REGISTRY_CODE_VERSION)
def measure_registry(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """The measure registry as a table: name, family, level, direction (+1 higher = more similar), description, formula, parameters."""
    rows, fresh, wh = _measure_rows(), measure_registry_freshness(study), study.warehouse()
    fp = fresh.fingerprint
    if fresh.fresh(wh, None):
        return skipped(context, wh, "measures", None, {}, fp)
    wh.write_partition("measures", None, {}, rows, fp)
    return dg.MaterializeResult(metadata={"measures": len(registry.MEASURES), "table": table_md(rows[["name", "family", "level", "direction"]], 50)},
                                data_version=dg.DataVersion(fp))
