"""A static HTML report of a profile's studies, built from the warehouse tables; it leads with the answer.

``index.html`` answers first: the models' accuracy against chance (Wilson intervals), then per study one
sentence generated from the correlations (how many survive the correction, the strongest with its CI, p and
n) and one heatmap of the oriented correlations (measure x corpus, a panel per model), with the caveats that
change its reading beside it; then contamination, attribution and interventions where present, and the
published Yauney et al. tables next to this project's figures. The evidence is on linked pages:
``study-<name>.html`` (every correlation, the informative scatter plots -- a scatter whose measure or score is
constant is left out with a line saying so --, agreement, per-example distributions) and ``setup.html``.
Figures the report draws are cached by the content of their data (``plots.cached_figure``); those the study
assets drew (``info["plots"]``) are copied next to the HTML (``img/<study>/``). Links are relative and nothing
is fetched from the network, so the folder opens from ``file://`` and can be moved or zipped as a whole.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from simassets.core import plots, stats
from simassets.core.catalog import Catalog
from simassets.core.measures.registry import MEASURES
from simassets.core.studies import NO_CORPUS, POOLED, StudySpec, load_studies, load_study
from simassets.core.warehouse import Warehouse

SMALL_N = 10
STUDY_TABLES = ("correlations", "measure_agreement", "per_example_analysis")
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0;font-size:12px}th,td{border:1px solid #ddd;padding:2px 6px;
text-align:right}
th{background:#f3f3f3;text-align:left}td.t{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.caveat{background:#fff7e0;border-left:4px solid #e0a800;padding:.5em 1em}.muted{color:#777}details{margin:.5em 0}
.answer{font-size:1.15em;background:#eef4fb;border-left:4px solid #1f4e8c;padding:.6em 1em}
.pair{display:flex;gap:1em;align-items:flex-start;flex-wrap:wrap}.pair figure{flex:3 1 600px;margin:0}
.pair .caveat{flex:1 1 260px;font-size:13px}nav a{margin-right:1em}
"""


@dataclass
class Report:
    """What :func:`build_report` wrote: the page, the copied figures and the caveats it listed."""

    path: Path
    images: list[Path] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    index_figures: list[Path] = field(default_factory=list)


def _esc(x: object) -> str:
    return html.escape(str(x))


def _fmt(x: object) -> str:
    if isinstance(x, (float, np.floating)):
        return "–" if pd.isna(x) else (f"{x:.2e}" if 0 < abs(x) < 1e-3 else f"{x:.3f}")
    return "–" if x is None else str(x)


def _numeric(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def html_table(df: pd.DataFrame, max_rows: int | None = None) -> str:
    """An escaped HTML table (floats to 3 decimals, NaN as '–')."""
    if df.empty:
        return '<p class="muted">(no rows)</p>'
    show = df if max_rows is None else df.head(max_rows)
    head = "".join(f"<th>{_esc(c)}</th>" for c in show.columns)
    body = "".join(
        "<tr>" + "".join(f"<td{'' if _numeric(v) else ' class=t'}>{_esc(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in show.itertuples(index=False)
    )
    more = f'<p class="muted">{len(df) - len(show)} more rows in the warehouse</p>' if len(show) < len(df) else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{_esc(summary)}</summary>{body}</details>"


def _query(wh: Warehouse, table: str, profile: str) -> pd.DataFrame:
    return wh.query(f"select * exclude (created_at) from {table} where profile = ?", [profile])


# --------------------------------------------------------------------------- sections
def _setup(wh: Warehouse, catalog: Catalog, profile: str) -> str:
    prof = catalog.profile(profile)
    docs = wh.query(
        "select corpus, count(*) as documents from corpus_documents where profile = ? group by 1", [profile]
    )
    docs = dict(zip(docs["corpus"], docs["documents"]))
    corpora = pd.DataFrame(
        [
            {
                "corpus": c.name,
                "domain": c.domain,
                "language": c.language,
                "documents sampled": docs.get(c.name, 0),
                "description": c.description,
            }
            for c in catalog.corpora_for(profile)
        ]
    )
    models = wh.query(
        """select model, count(*) as benchmarks, sum(n)::bigint as examples, avg(acc) as mean_acc,
                         avg(normalized_score) as mean_normalized_score,
                          any_value(left(model_fingerprint, 12)) as weights_sha256
                         from benchmark_scores where profile = ? group by 1 order by 1""",
        [profile],
    )
    measures = wh.query(
        """select measure, count(distinct corpus || '/' || benchmark) as pairs, 'dataset' as level
                           from dataset_similarity where profile = ? group by 1
                           union all select measure, count(distinct corpus || '/' || benchmark), 'example'
                           from example_similarity where profile = ? group by 1 order by 1, 3""",
        [profile, profile],
    )
    measures["family"] = measures["measure"].map(lambda m: MEASURES[m].family if m in MEASURES else "?")
    measures["direction"] = measures["measure"].map(lambda m: stats.resolve_directions([m])[m][0])
    scores = wh.query(
        """select benchmark, category, language, model, n, acc, acc_norm, primary_metric, random_baseline,
                         normalized_score from benchmark_scores where profile = ? order by benchmark, model""",
        [profile],
    )
    # Wilson 95% intervals from n and the rates (rows stored before the columns existed get them too)
    for col in ("acc", "acc_norm"):
        lo, hi = stats.wilson_interval(scores[col].astype(float) * scores["n"], scores["n"])
        scores.insert(
            scores.columns.get_loc(col) + 1,
            f"{col} 95% (Wilson)",
            [f"{a:.2f}–{b:.2f}" if np.isfinite(a) else "" for a, b in zip(lo, hi)],
        )
    return (
        "<h2>Setup</h2>"
        f"<p>Catalog <code>{_esc(catalog.source_file)}</code>, warehouse <code>{_esc(wh.home)}</code>. Profile "
        f"<b>{_esc(profile)}</b>: {prof.corpus_sample_size} documents per corpus, "
        f"{prof.benchmark_limit or 'all'} examples per benchmark, seed {prof.seed}, "
        f"embedding top-k {prof.embedding_top_k}; "
        f"{len(catalog.benchmarks_for(profile))} benchmarks in the profile, {scores['benchmark'].nunique()} scored.</p>"
        "<h3>Corpora</h3>"
        + html_table(corpora)
        + "<h3>Models</h3>"
        + html_table(models)
        + "<h3>Measures present</h3><p>direction +1: higher = more similar; −1: higher = less similar.</p>"
        + html_table(measures[["measure", "family", "level", "direction", "pairs"]])
        + _details(f"Benchmark scores ({len(scores)} rows)", html_table(scores))
    )


def _stars(p: float) -> str:
    return "" if pd.isna(p) else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _correlation_section(corr: pd.DataFrame) -> str:
    if corr.empty:
        return '<p class="muted">correlations not materialized for this study</p>'
    method = "spearman" if "spearman" in set(corr["method"]) else corr["method"].iloc[0]
    parts = [
        f"<p>{_esc(method)} correlation across the study's benchmarks, <b>oriented</b> (r × direction: positive = "
        "'more similar ⇒ higher score'); * p_adj &lt; 0.05, ** p_adj &lt; 0.01 (correction over the study's grid); "
        "n benchmarks in brackets.</p>"
    ]
    sub = corr[corr["method"] == method]
    for (model, score), g in sub.groupby(["model", "score"], sort=True):
        cell = g.assign(cell=[f"{_fmt(r)}{_stars(p)} ({n})" for r, p, n in zip(g["r_oriented"], g["p_adj"], g["n"])])
        piv = cell.pivot(index="measure", columns="corpus", values="cell")
        piv = piv[sorted(piv.columns, key=lambda c: (c == NO_CORPUS, c))].reset_index()  # corpus-free column last
        piv = piv.rename(columns={NO_CORPUS: "(no corpus: model-based)"}).fillna("")
        parts.append(f"<h4>{_esc(model)} — {_esc(score)}</h4>" + html_table(piv))
    cols = [
        c
        for c in (
            "model",
            "corpus",
            "measure",
            "score",
            "method",
            "n",
            "r",
            "direction",
            "r_oriented",
            "p",
            "p_method",
            "p_asymptotic",
            "p_adj",
            "ci_low",
            "ci_high",
            "ci2_low",
            "ci2_high",
            "note",
        )
        if c in corr.columns
    ]
    full = corr[cols].assign(expected_sign=corr["direction"].map({1: "+", -1: "−"}))
    return "".join(parts) + _details(
        f"All correlations ({len(corr)} rows; expected_sign = sign of raw r if 'more similar ⇒ better')",
        html_table(full.sort_values(["method", "p"])),
    )


def _agreement_section(agree: pd.DataFrame) -> str:
    if agree.empty:
        return '<p class="muted">measure agreement not materialized for this study</p>'
    parts = [
        "<p>Spearman ρ between oriented measures over all (corpus, benchmark) pairs: +1 = the two measures rank "
        "the pairs identically, 0 = unrelated, negative = they disagree about what is similar.</p>"
    ]
    for model, g in agree[agree["corpus"] == POOLED].groupby("model", sort=True):
        piv = (
            g.pivot(index="measure_a", columns="measure_b", values="r")
            .reset_index()
            .rename(columns={"measure_a": "measure"})
        )
        parts.append((f"<h4>{_esc(model)}</h4>" if model else "") + html_table(piv))
    per_corpus = agree[(agree["corpus"] != POOLED) & (agree["measure_a"] < agree["measure_b"])]
    return "".join(parts) + _details(
        f"Per corpus, across benchmarks ({len(per_corpus)} pairs)",
        html_table(per_corpus[["model", "corpus", "measure_a", "measure_b", "n", "r"]]),
    )


def _per_example_section(pe: pd.DataFrame) -> str:
    if pe.empty:
        return '<p class="muted">per-example analysis not materialized for this study</p>'
    summary = pe.groupby(["model", "corpus", "measure"], as_index=False).agg(
        benchmarks=("auroc", "count"),
        median_auroc=("auroc", "median"),
        auroc_above_half=("auroc", lambda a: int((a > 0.5).sum())),
        significant=("p_adj", lambda p: int((p < 0.05).sum())),
        acc_q1_least_similar=("acc_q1", "mean"),
        acc_q4_most_similar=("acc_q4", "mean"),
    )
    cols = [
        "model",
        "corpus",
        "benchmark",
        "measure",
        "n",
        "n_correct",
        "auroc",
        "p",
        "p_adj",
        "mean_similarity_correct",
        "mean_similarity_incorrect",
        "acc_q1",
        "acc_q2",
        "acc_q3",
        "acc_q4",
        "note",
    ]
    return (
        "<p>AUROC = probability that a correctly answered example is more similar to the corpus than an incorrectly "
        "answered one (oriented; 0.5 = no separation), per benchmark; summarised here by its median over "
        "benchmarks. 'significant' counts benchmarks with Mann–Whitney p_adj &lt; 0.05.</p>"
        + html_table(summary)
        + _details(f"Per benchmark ({len(pe)} rows)", html_table(pe[cols]))
    )


def _images(wh: Warehouse, profile: str, study: str, out: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Copy each study table's recorded figures to ``out/img/<study>``; return relative paths by table."""
    found: dict[str, list[Path]] = {}
    missing: list[str] = []
    for table in STUDY_TABLES:
        stored = wh.stored(table, profile, {"study": study})
        found[table] = []
        for src in stored.info.get("plots", []) if stored else []:
            src = Path(src)
            if not src.is_file():
                missing.append(f"{study}: figure {src} recorded by {table} is missing (re-materialize {table})")
                continue
            dst = out / "img" / study / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            found[table].append(dst.relative_to(out))
    return found, missing


def _img_tags(paths: list[Path]) -> str:
    return "".join(
        f'<figure><img src="{_esc(p.as_posix())}" alt="{_esc(p.stem)}"><figcaption class="muted">'
        f"{_esc(p.name)}</figcaption></figure>"
        for p in paths
    )


def _family_sections(paths: list[Path]) -> str:
    """Correlation figures grouped by measure family (the headline first): ``scatter_<score>_<measure>.png``."""
    by_name = sorted(MEASURES, key=len, reverse=True)  # the longest measure name that ends the file name wins
    groups: dict[str, list[Path]] = {}
    for p in paths:
        if not p.stem.startswith("scatter_"):
            groups.setdefault("", []).append(p)
            continue
        measure = next((m for m in by_name if p.stem.endswith("_" + plots.safe_name(m))), None)
        groups.setdefault(MEASURES[measure].family if measure else "other measures", []).append(p)
    return _img_tags(groups.pop("", [])) + "".join(
        f"<h3>{_esc(family)}</h3>{_img_tags(ps)}" for family, ps in sorted(groups.items())
    )


# --------------------------------------------------------------------------- caveats
def _caveats(
    wh: Warehouse, profile: str, tables: dict[str, pd.DataFrame], studies: Sequence[StudySpec], catalog: Catalog
) -> list[str]:
    out = []
    warn = wh.query(
        """select measure, count(*) as rows, any_value(warning) as example from dataset_similarity
                       where profile = ? and coalesce(warning, '') <> '' group by 1 order by 1""",
        [profile],
    )
    out += [
        f"{r.measure}: {r.rows} (corpus, benchmark) value(s) carry a warning, e.g. “{r.example}” — such values "
        "(e.g. MAUVE at its floor) do not rank benchmarks"
        for r in warn.itertuples()
    ]
    scored = set(wh.query("select distinct benchmark from benchmark_scores where profile = ?", [profile])["benchmark"])
    for spec in studies:
        sel = spec.select_benchmarks(catalog, profile)
        lacking = [b for b in sel if b not in scored]
        if lacking:
            out.append(
                f"study {spec.name}: {len(lacking)} of {len(sel)} selected benchmarks have no score yet "
                f"({', '.join(lacking[:8])}{' …' if len(lacking) > 8 else ''})"
            )
    corr, pe = tables["correlations"], tables["per_example_analysis"]
    if not corr.empty:
        for study, g in corr.groupby("study", sort=True):
            small = g[g["n"] < SMALL_N]
            if len(small):
                out.append(
                    f"study {study}: {len(small)} of {len(g)} correlations rest on fewer than {SMALL_N} "
                    f"benchmarks (n = {int(small['n'].min())}–{int(small['n'].max())}): very wide CIs"
                )
            undef = g[g["r"].isna()]
            if len(undef):
                notes = sorted(set(n.split(";")[0] for n in undef["note"] if n))
                out.append(f"study {study}: {len(undef)} correlations undefined ({'; '.join(notes[:3])})")
            assumed = sorted(set(g.loc[g["note"].str.contains("assumed", na=False), "measure"]))
            if assumed:
                out.append(f"study {study}: direction not registered, assumed +1 for {', '.join(assumed)}")
    if not pe.empty and "target_perplexity" in set(pe["measure"]):
        out.append(
            "target_perplexity is computed from the gold log-likelihoods that also decide correctness: its "
            "per-example separation of correct from incorrect examples is partly by construction"
        )
    if not pe.empty:
        degenerate = pe[pe["auroc"].isna()]
        if len(degenerate):
            out.append(
                f"per-example analysis: {len(degenerate)} (model, corpus, benchmark, measure) cells have only "
                "correct or only incorrect examples: AUROC undefined"
            )
    out.append(
        "Correlations across benchmarks compare different tasks: a benchmark's difficulty, format and chance "
        "level vary with its similarity, so a correlation is not an effect of similarity."
    )
    return out


# --------------------------------------------------------------------------- the answer
CORRECTION_NAMES = {"by": "Benjamini–Yekutieli", "bh": "Benjamini–Hochberg", "holm": "Holm",
                    "none": "no correction"}


def _oriented_ci(row: pd.Series, low: str, high: str) -> tuple[float, float]:
    a, b = row[low] * row["direction"], row[high] * row["direction"]
    return (min(a, b), max(a, b))


def headline(corr: pd.DataFrame, spec: StudySpec) -> str:
    """One sentence from the study's correlations: how many survive the correction, and the strongest one."""
    method = "spearman" if "spearman" in set(corr.get("method", [])) else (corr["method"].iloc[0] if len(corr) else "")
    score = spec.scores[0]
    sub = corr[(corr["method"] == method) & (corr["score"] == score)] if len(corr) else corr
    tested = sub[sub["p"].notna()] if len(sub) else sub
    if tested.empty:
        return (
            f"No {method or 'correlation'} of a measure with {score} could be tested in this study yet "
            f"({len(sub)} cells, none with n ≥ {stats.MIN_N_P} benchmarks and both sides varying)."
        )
    k = int((tested["p_adj"] < 0.05).sum())
    ns = tested["n"].astype(int)
    pos = int((tested["r_oriented"] > 0).sum())
    best = tested.assign(a=tested["r"].abs()).sort_values(["p", "a"], ascending=[True, False]).iloc[0]
    lo2, hi2 = _oriented_ci(best, "ci2_low", "ci2_high")
    lo, hi = _oriented_ci(best, "ci_low", "ci_high")
    sym = {"spearman": "ρ", "kendall": "τ", "pearson": "r"}.get(method, "r")
    ci = (
        f"two-level 95% CI for the true scores {lo2:+.2f}…{hi2:+.2f}, benchmarks only {lo:+.2f}…{hi:+.2f}"
        if np.isfinite(lo2)
        else f"95% CI {lo:+.2f}…{hi:+.2f}"
        if np.isfinite(lo)
        else "no CI"
    )
    where = f"to {best['corpus']}" if best["corpus"] else "(model-based, no corpus)"
    verdict = (
        "No correlation survives" if k == 0 else f"{k} correlation{'s' if k > 1 else ''} survive{'s' if k == 1 else ''}"
    )
    return (
        f"{verdict} {CORRECTION_NAMES.get(spec.correction, spec.correction)} at 0.05: {k} of {len(tested)} "
        f"{method} correlations of a measure with {score} (n = {ns.min()}–{ns.max()} benchmarks); {pos} of "
        f"{len(tested)} point the hypothesised way (more similar ⇒ higher score). The strongest is "
        f"{best['measure']} {where} for {best['model'] or 'every model'}: oriented {sym} = "
        f"{best['r_oriented']:+.2f} ({ci}), p = {best['p']:.3g} ({best['p_method']}), p_adj = {best['p_adj']:.3g}, "
        f"n = {int(best['n'])}."
    )


def accuracy_summary(scores: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """A sentence per model (mean accuracy, benchmarks whose Wilson interval lies above chance) and the table."""
    if scores.empty:
        return "No benchmark has been scored yet.", scores
    df = scores.copy()
    df["primary"] = np.where(df["primary_metric"] == "acc_norm", df["acc_norm"], df["acc"]).astype(float)
    df["ci_low"], df["ci_high"] = stats.wilson_interval(df["primary"] * df["n"], df["n"])
    df["above_chance"] = df["ci_low"] > df["random_baseline"]
    parts = []
    for model, g in df.groupby("model", sort=True):
        parts.append(
            f"{model}: mean accuracy {g['primary'].mean():.2f} against a mean chance level of "
            f"{g['random_baseline'].mean():.2f} over {len(g)} benchmarks ({int(g['n'].median())} examples "
            f"each); the 95% Wilson interval lies above chance on {int(g['above_chance'].sum())} of them"
        )
    return "; ".join(parts) + ".", df


def unread_benchmarks(wh: Warehouse, profile: str) -> dict[str, float]:
    """Benchmark -> share of unknown word pieces, where the embedding model cannot read the benchmark (the
    ``embedder_reads_text`` check of ``benchmark_embeddings``, recomputed from the stored examples)."""
    from simassets.core.embeddings import UNKNOWN_SHARE_LIMIT, get_embedder
    from simassets.core.tasks import benchmark_text

    examples = wh.query("select benchmark, input_text, target_text from benchmark_examples where profile = ?",
                        [profile])
    if examples.empty:
        return {}
    embedder = get_embedder()
    shares = {str(b): embedder.unknown_share(benchmark_text(g))[0] for b, g in examples.groupby("benchmark")}
    return {b: s for b, s in sorted(shares.items()) if s > UNKNOWN_SHARE_LIMIT}


def _study_caveats(
    spec: StudySpec, corr: pd.DataFrame, acc: pd.DataFrame, floor: pd.DataFrame, sel: list[str],
    unread: dict[str, float] | None = None,
) -> list[str]:
    out = []
    blind = {b: s for b, s in (unread or {}).items() if b in sel}
    if blind:
        from simassets.core.measures import registry

        names = ", ".join(sorted(m.name for m in registry.MEASURES.values() if m.family == "embedding"))
        out.append(
            f"The embedding model cannot read {len(blind)} of the study's benchmarks (unknown word pieces: "
            + ", ".join(f"{b} {s:.0%}" for b, s in blind.items())
            + f"): their embedding measures ({names}) describe the model's vocabulary, not their text."
        )
    if len(corr):
        small = corr[corr["n"] < SMALL_N]
        if len(small):
            out.append(
                f"{len(small)} of {len(corr)} correlations rest on fewer than {SMALL_N} benchmarks: their "
                "intervals are wide and one benchmark can flip them."
            )
        undef = int(corr["r"].isna().sum())
        if undef:
            out.append(f"{undef} correlations are undefined (too few benchmarks or a constant side).")
        wide = corr.dropna(subset=["ci2_low", "ci_low"])
        if len(wide):
            grow = ((wide["ci2_high"] - wide["ci2_low"]) / (wide["ci_high"] - wide["ci_low"])).median()
            rel = wide["reliability"] if "reliability" in wide else pd.Series(dtype=float)
            out.append(
                f"Score noise: re-estimating each benchmark's score from its examples, and correcting the "
                f"attenuation that noise causes, widens the interval by a median factor of {grow:.2f} (two-level "
                f"vs benchmark-only CI). The scores' reliability (the share of their spread that is not noise) is "
                + (lo_rel if (lo_rel := f"{rel.min():.2f}") == (hi_rel := f"{rel.max():.2f}") else f"{lo_rel} to {hi_rel}")
                + ("; where it is near or below 0 the scores differ no more than their noise, and no correlation "
                   "with them can be read." if rel.min() < 0.2 else ".")
                if rel.notna().any() else
                f"Score noise: the two-level interval is wider than the benchmark-only one by a median factor of "
                f"{grow:.2f}."
            )
    a = acc[acc["benchmark"].isin(sel)] if len(acc) else acc
    if len(a):
        at_chance = int((~a["above_chance"]).sum())
        if at_chance > len(a) / 2:
            out.append(
                f"The model is at chance on {at_chance} of {len(a)} of the study's (model, benchmark) scores "
                "(Wilson interval includes chance): there is little accuracy for similarity to explain."
            )
    f = floor[floor["benchmark"].isin(sel)] if len(floor) else floor
    if len(f):
        out.append(
            f"MAUVE sits at its floor for {len(f)} (corpus, benchmark) pairs of this study: it does not rank "
            "those benchmarks."
        )
    return out


def _contamination_section(wh: Warehouse, profile: str) -> str:
    """Whole-corpus contamination per benchmark and corpus (contaminated at 8/13/25/50 words), the negative
    control, and per model the gain (accuracy on contaminated minus clean examples) where a side is not empty."""
    rows = wh.query(
        """select benchmark, corpus, measure, value, params from dataset_similarity where profile = ? and model = ''
           and measure like 'contaminated_fraction_%' order by benchmark, corpus""",
        [profile],
    )
    head = "<h2 id='contamination'>Contamination against the whole corpora</h2>"
    if rows.empty:
        return head + "<p class='muted'>text_similarity not materialized.</p>"
    wide = rows.pivot_table(index=["benchmark", "corpus"], columns="measure", values="value").reset_index()
    cols = [f"contaminated_fraction_{n}" for n in (8, 13, 25, 50) if f"contaminated_fraction_{n}" in wide]
    hit = wide[(wide[cols] > 0).any(axis=1)].sort_values(cols[::-1], ascending=False) if cols else wide.iloc[:0]
    control = [json.loads(p).get("shuffled_control_fraction_13") if p else None for p in rows["params"]]
    control = [c for c in control if c is not None]
    gains = wh.query(
        """select model, benchmark, corpus, value as gain_13, ci_low, ci_high, n, warning from dataset_similarity
           where profile = ? and measure = 'contamination_gain_13' and value = value order by abs(value) desc""",
        [profile],
    )
    text = (f"{len(hit)} of {len(wide)} (benchmark, corpus) pairs have an example whose longest match in the whole "
            "corpus reaches 8 words or more" + (f"; the word-shuffled negative control reaches 13 words in at most "
                                              f"{max(control):.1%} of a benchmark's examples" if control else "")
            + ". Evidence per example in <code>example_similarity</code> (measure <code>longest_match</code>).")
    out = head + f"<p>{_esc(text)}</p>" + html_table(hit[["benchmark", "corpus", *cols]], 20)
    if len(gains):
        out += ("<p>Does contamination change accuracy? Accuracy on examples with a >= 13-word match minus the "
                "others, with a 95% bootstrap interval (pairs with examples on both sides):</p>"
                + html_table(gains, 20))
    return out


def _interventions_section(wh: Warehouse, profile: str) -> str:
    parts = []
    hi = wh.query(
        "select * exclude (created_at, params, profile) from high_impact_corpora where profile = ? "
        "and high_impact order by category, rank",
        [profile],
    )
    att = wh.query("select model, count(*) cells from attribution where profile = ? group by 1", [profile])
    if len(att):
        parts.append(
            f"<p>Unlearning attribution: {int(att['cells'].sum())} (corpus, benchmark) deltas.</p>"
            + (html_table(hi, 15) if len(hi) else "<p>No corpus is high-impact for any capability.</p>")
        )
    avl = wh.query(
        """select model, target, measure, loss, n, r, r2, p, p_method from alignment_vs_loss
                      where profile = ? and subset = 'clean' and method = 'pearson' and target = '*'""",
        [profile],
    )
    if len(avl):
        parts.append(
            "<p>Training interventions (pooled over targets, positive controls left out): does alignment "
            "predict the loss after training?</p>" + html_table(avl)
        )
    if not parts:
        return ""
    return "<h2 id='interventions'>Attribution and interventions</h2>" + "".join(parts)


def _reproduction_section() -> str:
    from simassets.core.reproduction import yauney_tables

    t = yauney_tables()
    if t.empty:
        return (
            "<h2 id='reproduced'>Reproduced from the papers</h2><p class='muted'>The published Yauney et al. "
            "results are not under the data root.</p>"
        )
    agree_r = int(((t["r"] - t["r_published"]).abs() <= 0.005 + 1e-9).sum())
    agree_p = int(((t["p_asymptotic"] - t["p_published"]).abs() <= 0.0005 + 1e-9).sum())
    show = t[
        ["table", "measure", "model", "r_published", "r", "p_published", "p_asymptotic", "p", "p_method", "p_adj"]
    ].rename(columns={"p_asymptotic": "p (asymptotic, theirs)", "p": "p (ours)"})
    return (
        "<h2 id='reproduced'>Reproduced from the papers</h2><p>Yauney, Reif &amp; Mimno (2023), Tables 1 (Spearman) "
        "and 3 (Pearson): 16 BIG-bench Lite tasks, each measure against each model's normalised score, recomputed "
        f"by this project's engine from the authors' released CSV. {agree_r} of {len(t)} r and {agree_p} of "
        f"{len(t)} asymptotic p agree with the published cells to the printed digits; with this project's "
        f"permutation p and Benjamini–Yekutieli over each table, {int((t['p_adj'] < 0.05).sum())} survive, "
        "as in the paper.</p>" + _details(f"All {len(t)} cells", html_table(show))
    )


# --------------------------------------------------------------------------- page
def _page(title: str, body: str, nav: str = "") -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<style>{CSS}</style></head><body>{nav}{body}</body></html>"
    )


def _figure(path: Path | None, out: Path, caption: str) -> str:
    if path is None:
        return ""
    rel = path.relative_to(out).as_posix()
    return (f'<figure><img src="{_esc(rel)}" alt="{_esc(caption)}">'
            f'<figcaption class="muted">{_esc(caption)}</figcaption></figure>')


def build_report(
    wh: Warehouse, catalog: Catalog, profile: str, out: Path, study_names: Sequence[str] | None = None
) -> Report:
    """Write ``out/index.html`` (the answer), ``out/study-<name>.html`` (the evidence), ``out/setup.html`` and
    their figures for the profile's studies (default: all declared)."""
    specs = load_studies(catalog)
    unknown = [s for s in study_names or [] if s not in specs]
    if unknown:
        raise ValueError(f"unknown study(ies) {unknown}; declared in {catalog.source_file}: {sorted(specs)}")
    studies = [specs[s] for s in (study_names or specs)]
    out = Path(out)
    if (out / "img").exists():
        shutil.rmtree(out / "img")
    (out / "fig").mkdir(parents=True, exist_ok=True)
    tables = {t: _query(wh, t, profile) for t in STUDY_TABLES}
    report = Report(out / "index.html")
    scores = wh.query(
        """select model, benchmark, n, acc, acc_norm, primary_metric, random_baseline
                         from benchmark_scores where profile = ? order by model, benchmark""",
        [profile],
    )
    sentence, acc = accuracy_summary(scores)
    floor = wh.query(
        """select corpus, benchmark from dataset_similarity where profile = ? and measure = 'mauve'
                        and coalesce(warning, '') <> ''""",
        [profile],
    )
    nav = (
        "<nav class='muted'><a href='index.html'>answer</a>"
        + "".join(f"<a href='study-{_esc(s.name)}.html'>study {_esc(s.name)}</a>" for s in studies)
        + "<a href='setup.html'>setup</a></nav>"
    )
    acc_fig = plots.accuracy_figure(
        acc, out / "fig" / "accuracy.png", f"profile {profile}: accuracy per benchmark against chance"
    )
    index = [
        f"<h1>Does a benchmark get easier when its data is more like the pretraining data?</h1>"
        f"<p class='muted'>simassets report, profile <b>{_esc(profile)}</b>, generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}.</p>",
        f"<h2 id='models'>The models</h2><p class='answer'>{_esc(sentence)}</p>"
        + _figure(
            acc_fig, out, "accuracy (primary metric) per benchmark with its Wilson 95% interval; the dash is chance"
        ),
    ]
    heats: list[Path | None] = []
    unread = unread_benchmarks(wh, profile)
    for spec in studies:
        part = {t: df[df["study"] == spec.name] if not df.empty else df for t, df in tables.items()}
        corr = part["correlations"]
        sel = spec.select_benchmarks(catalog, profile)
        heat = (
            plots.headline_heatmap(
                corr, out / "fig" / f"headline_{plots.safe_name(spec.name)}.png", spec.name, spec.scores[0]
            )
            if len(corr)
            else None
        )
        heats.append(heat)
        cav = _study_caveats(spec, corr, acc, floor, sel, unread)
        report.caveats += [f"study {spec.name}: {c}" for c in cav]
        side = (
            ("<div class='caveat'><b>Read with</b><ul>" + "".join(f"<li>{_esc(c)}</li>" for c in cav) + "</ul></div>")
            if cav
            else ""
        )
        caption = (
            f"oriented Spearman correlation with {spec.scores[0]} across the study's benchmarks (n in each "
            "panel's title); * p_adj < 0.05, · p < 0.05 before correction; blank = undefined; a measure undefined "
            "for every corpus is left out (see the caveats)"
        )
        index.append(
            f"<h2 id='study-{_esc(spec.name)}'>Study “{_esc(spec.name)}”</h2><p>{_esc(spec.description)}</p>"
            + (
                f"<p class='answer'>{_esc(headline(corr, spec))}</p>"
                if len(corr)
                else "<p class='muted'>correlations not materialized for this study</p>"
            )
            + f"<div class='pair'>{_figure(heat, out, caption)}{side}</div>"
            + f"<p><a href='study-{_esc(spec.name)}.html'>The evidence: every correlation, the scatter plots, "
            "measure agreement and the per-example analysis →</a></p>"
        )
        imgs, missing = _images(wh, profile, spec.name, out)
        report.caveats += missing
        report.images += [out / p for ps in imgs.values() for p in ps]
        left_out = plots.uninformative_scatters(load_study(wh, catalog, profile, spec)) if len(corr) else []
        (out / f"study-{spec.name}.html").write_text(
            _page(
                f"study {spec.name} — simassets report",
                (
                    f"<h1>Study “{_esc(spec.name)}”: the evidence</h1><p>{_esc(spec.description)}</p>"
                    f"<p class='muted'>{len(sel)} benchmarks: {_esc(', '.join(sel))}. Corpora: "
                    f"{_esc(', '.join(spec.select_corpora(catalog, profile)))}. "
                    f"Scores: {_esc(', '.join(spec.scores))}; "
                    f"{_esc(spec.correction)} correction, {spec.n_boot} bootstrap resamples (ci2: benchmarks and their "
                    f"examples resampled, corrected for the attenuation score noise causes), "
                    f"p-values {_esc(spec.p_method)} (exact up to n = 10, else permutation).</p>"
                    "<h2>Does similarity predict the score?</h2>"
                    + _correlation_section(corr)
                    + _family_sections(imgs["correlations"])
                    + (
                        _details(
                            f"{len(left_out)} scatter panels left out: an axis is constant",
                            "<ul>" + "".join(f"<li>{_esc(x)}</li>" for x in left_out) + "</ul>",
                        )
                        if left_out
                        else ""
                    )
                    + "<h2>Do the measures agree?</h2>"
                    + _agreement_section(part["measure_agreement"])
                    + _img_tags(imgs["measure_agreement"])
                    + "<h2>Are correctly answered examples more similar?</h2>"
                    + _per_example_section(part["per_example_analysis"])
                    + _img_tags(imgs["per_example_analysis"])
                ),
                nav,
            ),
            encoding="utf-8",
        )
    index += [_contamination_section(wh, profile), _interventions_section(wh, profile), _reproduction_section()]
    report.caveats = _caveats(wh, profile, tables, studies, catalog) + report.caveats
    index.append(
        "<h2 id='caveats'>Caveats</h2><div class='caveat'><ul>"
        + "".join(f"<li>{_esc(c)}</li>" for c in report.caveats)
        + "</ul></div>"
    )
    (out / "setup.html").write_text(
        _page(f"setup — simassets report {profile}", _setup(wh, catalog, profile), nav), encoding="utf-8"
    )
    report.index_figures = [p for p in [acc_fig, *heats] if p]
    report.images += report.index_figures
    report.path.write_text(_page(f"simassets report — {profile}", "".join(index), nav), encoding="utf-8")
    return report
