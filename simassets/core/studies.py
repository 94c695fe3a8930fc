"""Studies: a question asked over a set of benchmarks x corpora x models x measures, and its statistics.

A study is declared in ``data/catalog.toml`` under ``[studies.NAME]`` (without any ``[studies.*]``
entry the three :data:`DEFAULT_STUDIES` apply):

* **selection** -- ``benchmarks`` (names) and/or the filters ``categories`` and ``languages``: a
  benchmark is in the study if it is named, or if it passes every filter that is given; with neither
  names nor filters every benchmark is. ``exclude`` removes names afterwards. Only benchmarks of the
  running profile count. ``corpora`` / ``corpus_languages`` select corpora the same way, ``models``
  and ``measures`` restrict models and measures (empty: all that are present).
* **statistics** -- ``scores`` (columns of ``benchmark_scores``), ``methods``, ``correction``,
  ``n_boot``, ``p_method`` (``auto``: exact / permutation, ``asymptotic``: scipy's, as the papers) and
  ``n_perm`` (first-stage Monte-Carlo pairings above n = 10; see :mod:`simassets.core.stats`).

The functions below load a study's rows from the warehouse and compute its three tables: the
correlation grid (measure vs score across benchmarks, per model and corpus), the measure-vs-measure
agreement matrix and the per-example analysis (similarity of correctly vs incorrectly answered
examples). Model-specific measure rows (``model != ''``) only ever meet that model's scores.
Corpus-free rows (``corpus == ''``: model-based measures such as input perplexity) form their own
``corpus = ''`` group in the correlations and per-example tables and are repeated for every corpus
in the agreement matrix; benchmark-free rows (``benchmark == ''``: corpus perplexity) describe no
benchmark and take no part in a study.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from simassets.core import stats
from simassets.core.catalog import CATEGORIES, NAME_RE, Catalog, CatalogError, _Fields
from simassets.core.hashing import canonical_json
from simassets.core.warehouse import Warehouse

SCORE_COLUMNS = ("normalized_score", "acc", "acc_norm")
POOLED = "*"  # the corpus label of agreement rows pooled over every corpus of the study
NO_CORPUS = ""  # the corpus of a corpus-free measure (model-based: perplexity of the benchmark itself)
XCOPA_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")

DEFAULT_STUDIES: dict[str, dict[str, Any]] = {
    "multilingual": {
        "description": "XCOPA's 11 languages and English COPA against the English corpora: does a language's "
                       "distance from the pretraining sample predict accuracy?",
        "benchmarks": ["copa"], "categories": ["multilingual"], "corpus_languages": ["en"],
    },
    "english": {"description": "The English benchmarks against every corpus.", "languages": ["en"]},
    "all": {"description": "Every benchmark of the profile against every corpus."},
}


@dataclass(frozen=True)
class StudySpec:
    """One study: what it selects and how its statistics are computed."""

    name: str
    description: str = ""
    benchmarks: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    corpora: tuple[str, ...] = ()
    corpus_languages: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    measures: tuple[str, ...] = ()
    scores: tuple[str, ...] = ("normalized_score",)
    methods: tuple[str, ...] = stats.METHODS
    correction: str = "by"
    n_boot: int = 1000
    n_perm: int = stats.MC_FIRST
    p_method: str = "auto"

    def select_benchmarks(self, catalog: Catalog, profile: str) -> list[str]:
        """The study's benchmarks among the profile's, in catalog order."""
        filtered = bool(self.categories or self.languages)
        out = []
        for b in catalog.benchmarks_for(profile):
            passes = filtered and (not self.categories or b.category in self.categories) and (
                not self.languages or b.language in self.languages)
            if (b.name in self.benchmarks or passes or not (filtered or self.benchmarks)) and b.name not in self.exclude:
                out.append(b.name)
        return out

    def select_corpora(self, catalog: Catalog, profile: str) -> list[str]:
        """The study's corpora among the profile's, in catalog order."""
        return [c.name for c in catalog.corpora_for(profile)
                if (not self.corpora or c.name in self.corpora)
                and (not self.corpus_languages or c.language in self.corpus_languages)]

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --------------------------------------------------------------------------- parsing
def _choices(f: _Fields, key: str, allowed: tuple[str, ...] | list[str], what: str, default=()) -> tuple[str, ...]:
    values = f.str_list(key, tuple(default))
    bad = [v for v in values if v not in allowed]
    if bad:
        raise f._err(key, f"has unknown {what} {bad}; known: {sorted(allowed)}")
    return values


def parse_study(catalog: Catalog, name: str, table: Any) -> StudySpec:
    """Validate one ``[studies.NAME]`` table; errors name the catalog file, the entry and the field."""
    file = catalog.source_file
    if not NAME_RE.fullmatch(name):
        raise CatalogError(f"{file}: [studies.{name}] name must match {NAME_RE.pattern} (lower-case letters, digits, _ . -)")
    f = _Fields(file, f"studies.{name}", table)
    spec = StudySpec(
        name=name,
        description=f.get("description", str, ""),
        benchmarks=_choices(f, "benchmarks", list(catalog.benchmarks), "benchmark(s)"),
        categories=_choices(f, "categories", CATEGORIES, "category(ies)"),
        languages=f.str_list("languages"),
        exclude=_choices(f, "exclude", list(catalog.benchmarks), "benchmark(s)"),
        corpora=_choices(f, "corpora", list(catalog.corpora), "corpus(ora)"),
        corpus_languages=f.str_list("corpus_languages"),
        models=f.str_list("models"),
        measures=f.str_list("measures"),
        scores=_choices(f, "scores", SCORE_COLUMNS, "score column(s)", ("normalized_score",)),
        methods=_choices(f, "methods", stats.METHODS, "method(s)", stats.METHODS),
        correction=f.get("correction", str, "by", choices=stats.CORRECTIONS),
        n_boot=f.get("n_boot", int, 1000, minimum=0),
        n_perm=f.get("n_perm", int, stats.MC_FIRST, minimum=0),
        p_method=f.get("p_method", str, "auto", choices=stats.P_METHODS),
    )
    f.finish()
    for key in ("scores", "methods"):
        if not getattr(spec, key):
            raise f._err(key, "must not be empty")
    if spec.n_perm < 1 and spec.p_method == "auto":
        raise f._err("n_perm", "must be >= 1 for permutation p-values (or set p_method = \"asymptotic\")")
    return spec


def load_studies(catalog: Catalog) -> dict[str, StudySpec]:
    """The catalog's ``[studies.*]`` entries, or :data:`DEFAULT_STUDIES` when it declares none."""
    raw = catalog.raw.get("studies")
    if raw is None:  # the defaults name benchmarks (copa) that a small catalog may lack
        raw = {n: {**t, "benchmarks": [b for b in t.get("benchmarks", []) if b in catalog.benchmarks]}
               for n, t in DEFAULT_STUDIES.items()}
    if not isinstance(raw, dict):
        raise CatalogError(f"{catalog.source_file}: [studies] must be a table of [studies.NAME] entries")
    return {name: parse_study(catalog, name, table) for name, table in raw.items()}


def get_study(catalog: Catalog, name: str) -> StudySpec:
    studies = load_studies(catalog)
    if name not in studies:
        raise CatalogError(f"{catalog.source_file}: unknown study {name!r}; declared: {sorted(studies)}")
    return studies[name]


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class StudyData:
    """A study's rows: ``dataset`` (long: model, corpus, benchmark, measure, value + score columns;
    ``model`` is the scored model), ``similarity`` (dataset-level rows without scores, for the
    agreement matrix; ``model`` '' or a model id) and ``examples`` (model, corpus, benchmark,
    measure, example_id, value, correct)."""

    spec: StudySpec
    benchmarks: tuple[str, ...]
    corpora: tuple[str, ...]
    dataset: pd.DataFrame
    similarity: pd.DataFrame
    examples: pd.DataFrame

    def digest(self, part: str) -> str:
        """A stable hash of one part's rows (independent of row order)."""
        return frame_digest(getattr(self, part))


def frame_digest(df: pd.DataFrame) -> str:
    """sha256 over the rows of ``df`` sorted by every column: equal tables give equal digests."""
    if df.empty:
        return hashlib.sha256(canonical_json(list(df.columns)).encode()).hexdigest()
    df = df.sort_values(list(df.columns), kind="stable").reset_index(drop=True)
    h = hashlib.sha256(canonical_json(list(df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _restrict(df: pd.DataFrame, spec: StudySpec, benchmarks: list[str], corpora: list[str]) -> pd.DataFrame:
    """The rows of the study's benchmarks, corpora (corpus-free rows included), measures and models."""
    keep = df["benchmark"].isin(benchmarks) & (df["corpus"].isin(corpora) | (df["corpus"] == NO_CORPUS))
    if spec.measures:
        keep &= df["measure"].isin(spec.measures)
    if spec.models:
        keep &= df["model"].isin(spec.models) | (df["model"] == "")
    return df[keep].reset_index(drop=True)


def _check_unique(df: pd.DataFrame, keys: list[str], table: str) -> None:
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        first = df.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"{table}: {int(dup.sum())} rows share a key; first {first} -- two assets wrote the same measure?")


def load_study(wh: Warehouse, catalog: Catalog, profile: str, spec: StudySpec) -> StudyData:
    """Read a study's rows from the warehouse (nothing materialized yet gives empty frames)."""
    benchmarks, corpora = spec.select_benchmarks(catalog, profile), spec.select_corpora(catalog, profile)
    scores = ", ".join(f"s.{c}" for c in spec.scores)  # validated names from SCORE_COLUMNS
    # how each score was estimated (examples, rates, chance level): the two-level bootstrap re-estimates it
    noise = ", ".join(f"s.{c} as {NOISE_PREFIX}{c}" for c in ("n", "acc", "acc_norm", "primary_metric",
                                                                  "random_baseline"))
    dataset = wh.query(
        f"""select s.model, d.corpus, d.benchmark, d.measure, d.value, {scores}, {noise}
        from dataset_similarity d join benchmark_scores s
          on s.profile = d.profile and s.benchmark = d.benchmark and (d.model = '' or d.model = s.model)
        where d.profile = ?""", [profile])
    dataset = _restrict(dataset, spec, benchmarks, corpora)
    _check_unique(dataset, ["model", "corpus", "benchmark", "measure"], "dataset_similarity")
    similarity = wh.query("select corpus, benchmark, model, measure, value from dataset_similarity where profile = ?",
                          [profile])
    similarity = _restrict(similarity, spec, benchmarks, corpora)
    examples = wh.query(
        """select r.model, e.corpus, e.benchmark, e.measure, e.example_id, e.value, r.correct
        from example_similarity e join example_results r
          on r.profile = e.profile and r.benchmark = e.benchmark and r.example_id = e.example_id
         and (e.model = '' or e.model = r.model)
        where e.profile = ? and list_contains(?, e.benchmark)""", [profile, benchmarks])
    examples = _restrict(examples, spec, benchmarks, corpora)
    return StudyData(spec, tuple(benchmarks), tuple(corpora), dataset, similarity, examples)


# --------------------------------------------------------------------------- statistics
NOISE_PREFIX = "_score_"  # benchmark_scores columns carried for the two-level bootstrap


def score_noise_columns(wide: pd.DataFrame, scores: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Add, for each score column, the :class:`stats.ScoreNoise` fields as columns of ``wide`` (in place) and
    return the ``noise`` mapping of :func:`stats.correlation_grid`. ``acc`` / ``acc_norm`` are binomial rates;
    ``normalized_score`` = 100 (primary - r) / (1 - r) is that rate's affine image, r (chance) held fixed."""
    p = NOISE_PREFIX
    if f"{p}n" not in wide:
        return {}
    primary = np.where(wide[f"{p}primary_metric"] == "acc_norm", wide[f"{p}acc_norm"], wide[f"{p}acc"])
    r = wide[f"{p}random_baseline"].astype(float).fillna(0.0)
    rates = {"acc": wide[f"{p}acc"], "acc_norm": wide[f"{p}acc_norm"], "normalized_score": primary}
    out = {}
    for score in scores:
        wide[f"{p}{score}_rate"] = pd.to_numeric(rates[score], errors="coerce").astype(float)
        norm = score == "normalized_score"
        wide[f"{p}{score}_offset"] = -100 * r / (1 - r) if norm else 0.0
        wide[f"{p}{score}_scale"] = 100 / (1 - r) if norm else 1.0
        out[score] = {"n_examples": f"{p}n", "rate": f"{p}{score}_rate", "offset": f"{p}{score}_offset",
                      "scale": f"{p}{score}_scale"}
    return out


def study_wide(dataset: pd.DataFrame, scores: tuple[str, ...]) -> pd.DataFrame:
    """One row per (model, corpus, benchmark): every measure as a column, then the score columns (and the
    ``_score_*`` columns describing how each score was estimated, when the dataset carries them)."""
    wide = dataset.pivot(index=["model", "corpus", "benchmark"], columns="measure", values="value")
    wide.columns.name = None
    extra = [c for c in dataset.columns if c.startswith(NOISE_PREFIX)]
    score_rows = dataset.drop_duplicates(["model", "benchmark"]).set_index(["model", "benchmark"])[
        list(scores) + extra]
    return wide.reset_index().join(score_rows, on=["model", "benchmark"])


def correlation_table(data: StudyData, seed: int) -> pd.DataFrame:
    """Every (model, corpus, measure, score, method) correlation across the study's benchmarks.

    Columns: ``model, corpus`` + :data:`stats.GRID_COLUMNS` + ``study``. ``p_adj`` is corrected
    (``spec.correction``) across the study's whole grid, separately for each method. ``ci2_*`` is the
    two-level interval (benchmarks and, within each, examples resampled).
    """
    spec = data.spec
    if data.dataset.empty:
        return pd.DataFrame(columns=["model", "corpus", *stats.GRID_COLUMNS, "study"])
    wide = study_wide(data.dataset, spec.scores)
    noise = score_noise_columns(wide, spec.scores)
    measures = sorted(data.dataset["measure"].unique())
    present = pd.MultiIndex.from_frame(data.dataset[["model", "corpus", "measure"]].drop_duplicates())
    frames = []
    for method in spec.methods:
        grid = stats.correlation_grid(wide, measures, spec.scores, method=method, correction="none",
                                      n_boot=spec.n_boot, p_method=spec.p_method, n_perm=spec.n_perm, seed=seed,
                                      group_by=["model", "corpus"], noise=noise)
        # a model-specific measure has no cells for the other models
        grid = grid[pd.MultiIndex.from_frame(grid[["model", "corpus", "measure"]]).isin(present)].reset_index(drop=True)
        grid["p_adj"] = stats.adjust_pvalues(grid["p"], spec.correction)
        frames.append(grid)
    return pd.concat(frames, ignore_index=True).assign(study=spec.name)


def agreement_table(data: StudyData, method: str = "spearman") -> pd.DataFrame:
    """Measure x measure agreement (``stats.agreement_matrix``, oriented) over (corpus, benchmark)
    pairs pooled (``corpus = '*'``) and over benchmarks within each corpus. Corpus-free measures are
    repeated for every corpus (so in the pooled matrix their n counts each benchmark once per corpus).

    One group per model with model-specific measures (its rows plus the model-free ones), or a
    single group ``model = ''`` when every measure is model-free. Long form: ``model, corpus,
    method, measure_a, measure_b, n, r`` for every ordered pair (diagonal included)."""
    sim = data.similarity
    cols = ["model", "corpus", "method", "measure_a", "measure_b", "n", "r"]
    if sim.empty:
        return pd.DataFrame(columns=cols)
    _check_unique(sim, ["corpus", "benchmark", "model", "measure"], "dataset_similarity")
    free = sim[sim["corpus"] == NO_CORPUS]  # corpus-free measures: the same value against every corpus
    sim = pd.concat([sim[sim["corpus"] != NO_CORPUS]] + [free.assign(corpus=c) for c in data.corpora], ignore_index=True)
    rows = []
    for model in sorted(set(sim["model"]) - {""}) or [""]:
        sub = sim[sim["model"].isin(["", model])]
        wide = sub.pivot(index=["corpus", "benchmark"], columns="measure", values="value")
        measures = sorted(wide.columns)
        parts = [(POOLED, wide)] + [(c, wide.xs(c, level="corpus")) for c in sorted(sub["corpus"].unique())]
        for corpus, w in parts:
            r = stats.agreement_matrix(w, measures, method)
            present = w[measures].notna().astype(int)
            n = present.T @ present
            for a in measures:
                for b in measures:
                    rows.append({"model": model, "corpus": corpus, "method": method, "measure_a": a,
                                 "measure_b": b, "n": int(n.loc[a, b]), "r": float(r.loc[a, b])})
    return pd.DataFrame(rows, columns=cols)


PER_EXAMPLE_COLUMNS = ["direction", "n", "n_correct", "n_incorrect", "auroc", "mannwhitney_u", "p", "p_adj",
                       "mean_similarity_correct", "mean_similarity_incorrect", "acc_q1", "acc_q2", "acc_q3",
                       "acc_q4", "quartiles", "note"]


def per_example_table(data: StudyData, correction: str | None = None) -> pd.DataFrame:
    """``stats.per_example_analysis`` per (model, corpus, benchmark, measure) on the *oriented*
    similarity (value x direction), so ``auroc`` > 0.5 always means "correct examples are more
    similar" and quartile 1 is always the least similar quarter. ``p_adj`` corrects the
    Mann-Whitney p across the study's grid; ``mean_similarity_*`` are in the measure's own units."""
    ex = data.examples
    keys = ["model", "corpus", "benchmark", "measure"]
    if ex.empty:
        return pd.DataFrame(columns=[*keys, *PER_EXAMPLE_COLUMNS])
    dirs = stats.resolve_directions(sorted(ex["measure"].unique()))
    rows = []
    for key, g in ex.groupby(keys, sort=True):
        d, dnote = dirs[key[3]]
        res = stats.per_example_analysis(g["value"].to_numpy(dtype=float) * d, g["correct"].astype(float))
        q = res["quartiles"]
        rows.append({
            **dict(zip(keys, key)), "direction": d, "n": res["n"], "n_correct": res["n_correct"],
            "n_incorrect": res["n_incorrect"], "auroc": res["auroc"], "mannwhitney_u": res["mannwhitney_u"],
            "p": res["p_mannwhitney"],
            "mean_similarity_correct": res["mean_similarity_correct"] * d,
            "mean_similarity_incorrect": res["mean_similarity_incorrect"] * d,
            **{f"acc_q{i + 1}": q[i]["accuracy"] for i in range(4)},
            "quartiles": json.dumps([_quartile_json(x, d) for x in q]),
            "note": "; ".join(s for s in (res["note"], dnote) if s),
        })
    out = pd.DataFrame(rows)
    out["p_adj"] = stats.adjust_pvalues(out["p"], correction or data.spec.correction)
    return out[[*keys, *PER_EXAMPLE_COLUMNS]]


def _quartile_json(q: dict[str, Any], d: int) -> dict[str, Any]:
    """A quartile with its similarity range back in the measure's units; NaN -> null."""
    lo, hi = q["similarity_min"] * d, q["similarity_max"] * d
    q = {**q, "similarity_min": min(lo, hi), "similarity_max": max(lo, hi)}
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in q.items()}


def study_params(spec: StudySpec, seed: int, **extra: Any) -> str:
    """The ``params`` JSON of a study's rows."""
    return canonical_json({"study": spec.as_dict(), "seed": seed, **extra})

