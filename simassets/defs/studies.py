"""Studies: per-study correlations, measure agreement and per-example analysis, with their figures; and the
measure registry as a table.

Every study asset is partitioned by ``study`` (the profile's dynamic partition, synced from the catalog's
``[studies.*]``) and depends on *all* partitions of the measure families and the evaluation, so a change to any
input partition refreshes every study (by its automation condition). A partition recomputes only when the rows
it reads (hashed) or its parameters changed.
"""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from simassets.core import plots
from simassets.core.computation import Call, Computation, FilePath, Markdown, Output, Scope, Upstream, table_md
from simassets.core.hashing import canonical_json
from simassets.core.measures import registry
from simassets.core.schema import CORRELATIONS, MEASURE_AGREEMENT, MEASURES, PER_EXAMPLE_ANALYSIS, columns
from simassets.core.studies import (StudyData, agreement_table, correlation_table, get_study, load_study,
                                    per_example_table, study_params)
from simassets.defs.factory import build

CODE_VERSION = "6"  # 3: exact / permutation p, two-level intervals; 4: headline heatmap, answer; 5: ci2 de-attenuated;
# 6: per-example similarities within 1e-6 rank as ties
AGREEMENT_METHOD = "spearman"


def study_data(scope: Scope, name: str) -> StudyData:
    """The study's rows, loaded once per scope (its fingerprint and its computation read the same rows)."""
    key = ("study", name)
    if key not in scope.memo:
        scope.memo[key] = load_study(scope.warehouse, scope.catalog, scope.profile, get_study(scope.catalog, name))
    return scope.memo[key]


@dataclass(frozen=True)
class _Kind:
    """What a study asset reads (a :class:`StudyData` part), computes, draws (file prefix) and reports."""

    table: str
    part: str
    compute: Callable[[StudyData, int], pd.DataFrame]
    prefix: str | tuple[str, ...]
    draw: Callable
    summary: Callable[[StudyData, pd.DataFrame], dict]
    needs_scores: bool = True


def _correlation_figures(data: StudyData, rows: pd.DataFrame, out) -> list:
    """The headline heatmap (the answer at a glance) first, then the informative scatter plots."""
    heat = plots.headline_heatmap(rows, out / f"headline_{plots.safe_name(data.spec.scores[0])}.png", data.spec.name,
                                  data.spec.scores[0])
    return ([heat] if heat else []) + plots.scatter_figures(data, rows, out)


def _correlation_summary(data: StudyData, rows: pd.DataFrame) -> dict:
    from simassets.core.report import headline

    top = rows.assign(abs_r=rows["r"].abs()).sort_values(["p", "abs_r"], ascending=[True, False], na_position="last")
    return {"answer": Markdown(headline(rows, data.spec)),
            "models": int(rows["model"].nunique()),
            "significant_after_correction": int((rows["p_adj"] < 0.05).sum()),
            "correlations_undefined": int(rows["r"].isna().sum()),  # constant input: r has no value
            "strongest": table_md(top[["model", "corpus", "measure", "method", "n", "r", "r_oriented", "p", "p_method",
                                       "p_adj", "ci2_low", "ci2_high"]], 12)}


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


KINDS = {
    "correlations": _Kind(CORRELATIONS, "dataset", correlation_table, ("headline_", "scatter_"),
                          _correlation_figures, _correlation_summary),
    "measure_agreement": _Kind(MEASURE_AGREEMENT, "similarity", lambda d, seed: agreement_table(d, AGREEMENT_METHOD),
                               "agreement", lambda d, rows, out: plots.agreement_figures(rows, out, d.spec.name),
                               _agreement_summary, needs_scores=False),
    "per_example_analysis": _Kind(PER_EXAMPLE_ANALYSIS, "examples", lambda d, seed: per_example_table(d), "examples_",
                                  plots.example_figures, _per_example_summary),
}


def _study_inputs(asset: str):
    def inputs(scope: Scope, keys) -> dict:
        data = study_data(scope, keys["study"])
        part = getattr(data, KINDS[asset].part)
        measures = sorted(set(part["measure"])) if not part.empty else []
        return {"data": data.digest(KINDS[asset].part), "spec": data.spec.as_dict(), "seed": scope.seed,
                "benchmarks": data.benchmarks, "corpora": data.corpora,
                "directions": {m: registry.MEASURES[m].direction for m in measures if m in registry.MEASURES}}

    return inputs


def _study_compute(asset: str):
    def compute(call: Call) -> Output:
        kind, data = KINDS[asset], study_data(call.scope, call.keys["study"])
        profile, seed = call.profile, call.scope.seed
        out = plots.plots_dir(call.scope.home, profile, data.spec.name)
        selects_nothing = not (data.benchmarks and data.corpora)
        if getattr(data, kind.part).empty and not selects_nothing:
            need = "benchmark_evaluation and " if kind.needs_scores else ""
            raise ValueError(f"study {data.spec.name!r}: no rows for its {len(data.benchmarks)} benchmarks x "
                             f"{len(data.corpora)} corpora yet; materialize {need}the similarity assets first")
        rows = kind.compute(data, seed)  # empty when the study selects nothing in this profile: an empty partition
        rows = rows.assign(study=data.spec.name, params=study_params(data.spec, seed, code_version=CODE_VERSION))
        for prefix in (kind.prefix,) if isinstance(kind.prefix, str) else kind.prefix:
            plots.clear(out, prefix)
        figures = [str(p) for p in kind.draw(data, rows, out)] if len(rows) else []
        described = kind.summary(data, rows) if len(rows) else {"empty": f"the study selects nothing in profile {profile}"}
        return Output({kind.table: rows[columns(kind.table)]}, info={"plots": figures}, metadata={
            "benchmarks": len(data.benchmarks), "corpora": len(data.corpora), **described,
            "plot_dir": FilePath(out), "plots": Markdown(plots.image_markdown(figures))})

    return compute


def _study_step(asset: str, description: str) -> Computation:
    # the families that describe benchmarks (corpus perplexity describes a corpus only: no study reads it)
    families = [Upstream(f.name, "all") for f in registry.FAMILIES.values() if "benchmark" in f.dimensions]
    scores = [Upstream("benchmark_evaluation", "all")] if KINDS[asset].needs_scores else []
    return Computation(
        name=asset, group="studies", partitioning="study", description=description, writes=(KINDS[asset].table,),
        inputs=_study_inputs(asset), compute=_study_compute(asset), upstream=(*families, *scores),
        kinds=("scipy", "parquet"), code_version=CODE_VERSION, figures=True, refresh_after_upstream=True,
        partitions_per_run=2)  # two runs for the three default studies: the run queue runs them side by side


CORRELATIONS_STEP = _study_step(
    "correlations", "Per study: Spearman, Pearson and Kendall correlation of every dataset-level similarity measure "
                    "with each score across the study's benchmarks, per model and corpus (n; exact p up to n = 10, "
                    "else permutation, with the asymptotic p beside it; bootstrap CI over benchmarks and the two-level "
                    "CI that also re-estimates each score from its examples; Benjamini-Yekutieli p_adj over the "
                    "study's grid; r oriented so + means 'more similar => better'); scatter plots.")
MEASURE_AGREEMENT_STEP = _study_step(
    "measure_agreement", "Per study: do the similarity measures agree? Spearman correlation of every pair of oriented "
                         "dataset-level measures over (corpus, benchmark) pairs (corpus '*') and over benchmarks within "
                         "each corpus; heatmap.")
PER_EXAMPLE_ANALYSIS_STEP = _study_step(
    "per_example_analysis", "Per study, model, corpus, benchmark and example-level measure: are correctly answered "
                            "examples more similar to the corpus? AUROC, Mann-Whitney test (p_adj over the study), "
                            "accuracy by similarity quartile; distribution plots.")


# --------------------------------------------------------------------------- measure registry
def measure_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"name": m.name, "family": m.family, "level": level, "direction": m.direction, "needs_model": m.needs_model,
         "description": m.description, "formula": m.formula, "params": canonical_json(m.params)}
        for m in registry.ordered() for level in m.levels
    ])


def _registry(call: Call) -> Output:
    rows = measure_rows()
    return Output({MEASURES: rows}, metadata={"measures": len(registry.MEASURES),
                                              "table": table_md(rows[["name", "family", "level", "direction"]], 50)})


MEASURE_REGISTRY_STEP = Computation(
    name="measure_registry", group="studies", partitioning=None, writes=(MEASURES,),
    description="The measure registry as a table: name, family, level, direction (+1 higher = more similar), "
                "description, formula, parameters.",
    inputs=lambda scope, keys: {"rows": measure_rows().to_dict("records"),
                                "ranges": {m.name: list(m.range) for m in registry.ordered()}},
    compute=_registry, profile_free=True)

defs = dg.Definitions(assets=build(CORRELATIONS_STEP, MEASURE_AGREEMENT_STEP, PER_EXAMPLE_ANALYSIS_STEP,
                                   MEASURE_REGISTRY_STEP))
