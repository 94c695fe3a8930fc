"""Studies: correlations between dataset-level similarity and model scores across benchmarks."""


import dagster as dg
import pandas as pd

from simassets.core.hashing import canonical_json
from simassets.core.measures import registry
from simassets.defs.common import Freshness, partition_fingerprint, skipped, table_md
from simassets.defs.evaluation import benchmark_evaluation
from simassets.defs.resources import StudyResource
from simassets.defs.similarity import embedding_similarity

CODE_VERSION = "1"
SCORE = "normalized_score"
METHODS = ("spearman", "pearson")
N_BOOT = 1000


def study_table(wh, profile: str) -> pd.DataFrame:
    """One row per (model, corpus, benchmark): every dataset-level measure as a column, plus the score."""
    return wh.query(
        """
        with sim as (
            select corpus, benchmark, model, measure, value from dataset_similarity where profile = ?
        )
        select s.model, sim.corpus, s.benchmark, sim.measure, sim.value, s.normalized_score
        from benchmark_scores s join sim
          on sim.benchmark = s.benchmark and (sim.model = '' or sim.model = s.model)
        where s.profile = ?
        """,
        [profile, profile],
    )


def correlate_study(long: pd.DataFrame, seed: int, n_boot: int) -> pd.DataFrame:
    """Spearman and Pearson of each measure against the normalised score, per (model, corpus)."""
    from simassets.core.stats import correlation_grid

    if long.empty:
        return pd.DataFrame()
    wide = long.pivot_table(index=["model", "corpus", "benchmark", SCORE], columns="measure", values="value").reset_index()
    measures = sorted(long["measure"].unique())
    directions = {m: registry.direction(m) for m in measures}
    frames = [
        correlation_grid(wide, measures=measures, scores=[SCORE], method=method, correction="by", n_boot=n_boot,
                         seed=seed, directions=directions, group_by=["model", "corpus"])
        for method in METHODS
    ]
    return pd.concat(frames, ignore_index=True)


def correlations_freshness(study: StudyResource, partition_key: str | None = None) -> Freshness:
    long = study_table(study.warehouse(), study.profile_name)
    data = int(pd.util.hash_pandas_object(long, index=False).sum()) if not long.empty else 0
    fp = partition_fingerprint("correlations", CODE_VERSION, data=data, rows=len(long), seed=study.profile_spec().seed,
                               n_boot=N_BOOT, methods=METHODS)
    return Freshness(("correlations",), {"study": "all"}, fp)


def measure_registry_freshness(study: StudyResource, partition_key: str | None = None) -> Freshness:
    return Freshness(("measures",), {}, partition_fingerprint("measures", CODE_VERSION, rows=_measure_rows().to_dict("records")))


def _measure_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"name": m.name, "family": m.family, "level": level, "direction": m.direction, "needs_model": m.needs_model,
         "description": m.description, "formula": m.formula, "params": canonical_json(m.params)}
        for m in registry.MEASURES.values() for level in m.levels
    ])


@dg.asset(
    deps=[embedding_similarity, benchmark_evaluation],
    group_name="studies",
    kinds={"scipy", "parquet"},
    code_version=CODE_VERSION,
    automation_condition=dg.AutomationCondition.eager(),
)
def correlations(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Spearman and Pearson correlation (n, p, bootstrap CI, Benjamini–Yekutieli-corrected p) between each dataset-level similarity measure and each model's normalised score across benchmarks, per corpus."""
    profile, wh, prof = study.profile_name, study.warehouse(), study.profile_spec()
    fresh = correlations_freshness(study)
    fp = fresh.fingerprint
    if fresh.fresh(wh, profile):
        return skipped(context, wh, "correlations", profile, fresh.keys, fp)
    long = study_table(wh, profile)
    grid = correlate_study(long, seed=prof.seed, n_boot=N_BOOT)
    if grid.empty:
        raise dg.Failure("no (benchmark score, similarity) pairs yet: materialize benchmark_evaluation and embedding_similarity first")
    rows = grid.rename(columns={}).assign(study="all", params=canonical_json({"n_boot": N_BOOT, "seed": prof.seed, "correction": "by"}))
    cols = [c for c, _, _ in wh.table("correlations").columns if c not in ("profile", "created_at")]
    wh.write_partition("correlations", profile, {"study": "all"}, rows[cols], fp)
    top = rows.sort_values("p").loc[:, ["model", "corpus", "measure", "method", "n", "r", "p", "p_adj"]]
    return dg.MaterializeResult(
        metadata={"rows": len(rows), "benchmarks": int(long["benchmark"].nunique()),
                  "significant_after_by": int((rows["p_adj"] < 0.05).sum()), "strongest": table_md(top, max_rows=10)},
        data_version=dg.DataVersion(fp),
    )


@dg.asset(group_name="studies", kinds={"python", "parquet"}, code_version=CODE_VERSION)
def measure_registry(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """The measure registry as a table: name, family, level, direction (+1 higher = more similar), description, formula, parameters."""
    rows, fresh, wh = _measure_rows(), measure_registry_freshness(study), study.warehouse()
    fp = fresh.fingerprint
    if fresh.fresh(wh, None):
        return skipped(context, wh, "measures", None, {}, fp)
    wh.write_partition("measures", None, {}, rows, fp)
    return dg.MaterializeResult(metadata={"measures": len(registry.MEASURES), "table": table_md(rows[["name", "family", "level", "direction"]], 50)},
                                data_version=dg.DataVersion(fp))
