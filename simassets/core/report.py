"""A static one-page HTML report of a profile's studies, built from the warehouse tables.

The page holds the setup (catalog, profile, corpora, models, measures, sample sizes), per study the
correlation, agreement and per-example tables with their figures, and the caveats. Figures are the
PNGs the study assets recorded (``info["plots"]`` of each partition); they are copied next to the
HTML (``img/<study>/``) and linked relatively, so the folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from simassets.core import stats
from simassets.core.catalog import Catalog
from simassets.core.measures.registry import MEASURES
from simassets.core.studies import NO_CORPUS, POOLED, StudySpec, load_studies
from simassets.core.warehouse import Warehouse

SMALL_N = 10
STUDY_TABLES = ("correlations", "measure_agreement", "per_example_analysis")
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0;font-size:12px}th,td{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f3f3f3;text-align:left}td.t{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
.caveat{background:#fff7e0;border-left:4px solid #e0a800;padding:.5em 1em}.muted{color:#777}details{margin:.5em 0}
"""


@dataclass
class Report:
    """What :func:`build_report` wrote: the page, the copied figures and the caveats it listed."""

    path: Path
    images: list[Path] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


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
    body = "".join("<tr>" + "".join(f"<td{'' if _numeric(v) else ' class=t'}>{_esc(_fmt(v))}</td>" for v in row)
                   + "</tr>" for row in show.itertuples(index=False))
    more = f'<p class="muted">{len(df) - len(show)} more rows in the warehouse</p>' if len(show) < len(df) else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{_esc(summary)}</summary>{body}</details>"


def _query(wh: Warehouse, table: str, profile: str) -> pd.DataFrame:
    return wh.query(f"select * exclude (created_at) from {table} where profile = ?", [profile])


# --------------------------------------------------------------------------- sections
def _setup(wh: Warehouse, catalog: Catalog, profile: str) -> str:
    prof = catalog.profile(profile)
    docs = wh.query("select corpus, count(*) as documents from corpus_documents where profile = ? group by 1", [profile])
    docs = dict(zip(docs["corpus"], docs["documents"]))
    corpora = pd.DataFrame([{"corpus": c.name, "domain": c.domain, "language": c.language, "documents sampled": docs.get(c.name, 0),
                             "description": c.description} for c in catalog.corpora_for(profile)])
    models = wh.query("""select model, count(*) as benchmarks, sum(n)::bigint as examples, avg(acc) as mean_acc,
                         avg(normalized_score) as mean_normalized_score, any_value(left(model_fingerprint, 12)) as weights_sha256
                         from benchmark_scores where profile = ? group by 1 order by 1""", [profile])
    measures = wh.query("""select measure, count(distinct corpus || '/' || benchmark) as pairs, 'dataset' as level
                           from dataset_similarity where profile = ? group by 1
                           union all select measure, count(distinct corpus || '/' || benchmark), 'example'
                           from example_similarity where profile = ? group by 1 order by 1, 3""", [profile, profile])
    measures["family"] = measures["measure"].map(lambda m: MEASURES[m].family if m in MEASURES else "?")
    measures["direction"] = measures["measure"].map(lambda m: stats.resolve_directions([m])[m][0])
    scores = wh.query("""select benchmark, category, language, model, n, acc, acc_norm, primary_metric, random_baseline,
                         normalized_score from benchmark_scores where profile = ? order by benchmark, model""", [profile])
    # Wilson 95% intervals from n and the rates (rows stored before the columns existed get them too)
    for col in ("acc", "acc_norm"):
        lo, hi = stats.wilson_interval(scores[col].astype(float) * scores["n"], scores["n"])
        scores.insert(scores.columns.get_loc(col) + 1, f"{col} 95% (Wilson)",
                      [f"{a:.2f}–{b:.2f}" if np.isfinite(a) else "" for a, b in zip(lo, hi)])
    return (
        "<h2>Setup</h2>"
        f"<p>Catalog <code>{_esc(catalog.source_file)}</code>, warehouse <code>{_esc(wh.home)}</code>. Profile "
        f"<b>{_esc(profile)}</b>: {prof.corpus_sample_size} documents per corpus, "
        f"{prof.benchmark_limit or 'all'} examples per benchmark, seed {prof.seed}, embedding top-k {prof.embedding_top_k}; "
        f"{len(catalog.benchmarks_for(profile))} benchmarks in the profile, {scores['benchmark'].nunique()} scored.</p>"
        "<h3>Corpora</h3>" + html_table(corpora) + "<h3>Models</h3>" + html_table(models)
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
    parts = [f"<p>{_esc(method)} correlation across the study's benchmarks, <b>oriented</b> (r × direction: positive = "
             "'more similar ⇒ higher score'); * p_adj &lt; 0.05, ** p_adj &lt; 0.01 (correction over the study's grid); "
             "n benchmarks in brackets.</p>"]
    sub = corr[corr["method"] == method]
    for (model, score), g in sub.groupby(["model", "score"], sort=True):
        cell = g.assign(cell=[f"{_fmt(r)}{_stars(p)} ({n})" for r, p, n in zip(g["r_oriented"], g["p_adj"], g["n"])])
        piv = cell.pivot(index="measure", columns="corpus", values="cell")
        piv = piv[sorted(piv.columns, key=lambda c: (c == NO_CORPUS, c))].reset_index()  # corpus-free column last
        piv = piv.rename(columns={NO_CORPUS: "(no corpus: model-based)"}).fillna("")
        parts.append(f"<h4>{_esc(model)} — {_esc(score)}</h4>" + html_table(piv))
    cols = [c for c in ("model", "corpus", "measure", "score", "method", "n", "r", "direction", "r_oriented", "p",
                        "p_method", "p_asymptotic", "p_adj", "ci_low", "ci_high", "ci2_low", "ci2_high", "note")
            if c in corr.columns]
    full = corr[cols].assign(expected_sign=corr["direction"].map({1: "+", -1: "−"}))
    return "".join(parts) + _details(f"All correlations ({len(corr)} rows; expected_sign = sign of raw r if 'more "
                                     "similar ⇒ better')", html_table(full.sort_values(["method", "p"])))


def _agreement_section(agree: pd.DataFrame) -> str:
    if agree.empty:
        return '<p class="muted">measure agreement not materialized for this study</p>'
    parts = ["<p>Spearman ρ between oriented measures over all (corpus, benchmark) pairs: +1 = the two measures rank "
             "the pairs identically, 0 = unrelated, negative = they disagree about what is similar.</p>"]
    for model, g in agree[agree["corpus"] == POOLED].groupby("model", sort=True):
        piv = g.pivot(index="measure_a", columns="measure_b", values="r").reset_index().rename(columns={"measure_a": "measure"})
        parts.append((f"<h4>{_esc(model)}</h4>" if model else "") + html_table(piv))
    per_corpus = agree[(agree["corpus"] != POOLED) & (agree["measure_a"] < agree["measure_b"])]
    return "".join(parts) + _details(f"Per corpus, across benchmarks ({len(per_corpus)} pairs)",
                                     html_table(per_corpus[["model", "corpus", "measure_a", "measure_b", "n", "r"]]))


def _per_example_section(pe: pd.DataFrame) -> str:
    if pe.empty:
        return '<p class="muted">per-example analysis not materialized for this study</p>'
    summary = pe.groupby(["model", "corpus", "measure"], as_index=False).agg(
        benchmarks=("auroc", "count"), median_auroc=("auroc", "median"),
        auroc_above_half=("auroc", lambda a: int((a > 0.5).sum())),
        significant=("p_adj", lambda p: int((p < 0.05).sum())),
        acc_q1_least_similar=("acc_q1", "mean"), acc_q4_most_similar=("acc_q4", "mean"))
    cols = ["model", "corpus", "benchmark", "measure", "n", "n_correct", "auroc", "p", "p_adj",
            "mean_similarity_correct", "mean_similarity_incorrect", "acc_q1", "acc_q2", "acc_q3", "acc_q4", "note"]
    return ("<p>AUROC = probability that a correctly answered example is more similar to the corpus than an incorrectly "
            "answered one (oriented; 0.5 = no separation), per benchmark; summarised here by its median over "
            "benchmarks. 'significant' counts benchmarks with Mann–Whitney p_adj &lt; 0.05.</p>"
            + html_table(summary) + _details(f"Per benchmark ({len(pe)} rows)", html_table(pe[cols])))


def _images(wh: Warehouse, profile: str, study: str, out: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Copy each study table's recorded figures to ``out/img/<study>``; return relative paths by table."""
    found: dict[str, list[Path]] = {}
    missing: list[str] = []
    for table in STUDY_TABLES:
        stored = wh.stored(table, profile, {"study": study})
        found[table] = []
        for src in (stored.info.get("plots", []) if stored else []):
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
    return "".join(f'<figure><img src="{_esc(p.as_posix())}" alt="{_esc(p.stem)}"><figcaption class="muted">'
                   f"{_esc(p.name)}</figcaption></figure>" for p in paths)


# --------------------------------------------------------------------------- caveats
def _caveats(wh: Warehouse, profile: str, tables: dict[str, pd.DataFrame], studies: Sequence[StudySpec],
             catalog: Catalog) -> list[str]:
    out = []
    warn = wh.query("""select measure, count(*) as rows, any_value(warning) as example from dataset_similarity
                       where profile = ? and coalesce(warning, '') <> '' group by 1 order by 1""", [profile])
    out += [f"{r.measure}: {r.rows} (corpus, benchmark) value(s) carry a warning, e.g. “{r.example}” — such values "
            "(e.g. MAUVE at its floor) do not rank benchmarks" for r in warn.itertuples()]
    scored = set(wh.query("select distinct benchmark from benchmark_scores where profile = ?", [profile])["benchmark"])
    for spec in studies:
        sel = spec.select_benchmarks(catalog, profile)
        lacking = [b for b in sel if b not in scored]
        if lacking:
            out.append(f"study {spec.name}: {len(lacking)} of {len(sel)} selected benchmarks have no score yet "
                       f"({', '.join(lacking[:8])}{' …' if len(lacking) > 8 else ''})")
    corr, pe = tables["correlations"], tables["per_example_analysis"]
    if not corr.empty:
        for study, g in corr.groupby("study", sort=True):
            small = g[g["n"] < SMALL_N]
            if len(small):
                out.append(f"study {study}: {len(small)} of {len(g)} correlations rest on fewer than {SMALL_N} "
                           f"benchmarks (n = {int(small['n'].min())}–{int(small['n'].max())}): very wide CIs")
            undef = g[g["r"].isna()]
            if len(undef):
                notes = sorted(set(n.split(";")[0] for n in undef["note"] if n))
                out.append(f"study {study}: {len(undef)} correlations undefined ({'; '.join(notes[:3])})")
            assumed = sorted(set(g.loc[g["note"].str.contains("assumed", na=False), "measure"]))
            if assumed:
                out.append(f"study {study}: direction not registered, assumed +1 for {', '.join(assumed)}")
    if not pe.empty and "target_perplexity" in set(pe["measure"]):
        out.append("target_perplexity is computed from the gold log-likelihoods that also decide correctness: its "
                   "per-example separation of correct from incorrect examples is partly by construction")
    if not pe.empty:
        degenerate = pe[pe["auroc"].isna()]
        if len(degenerate):
            out.append(f"per-example analysis: {len(degenerate)} (model, corpus, benchmark, measure) cells have only "
                       "correct or only incorrect examples: AUROC undefined")
    out.append("Correlations across benchmarks compare different tasks: a benchmark's difficulty, format and chance "
               "level vary with its similarity, so a correlation is not an effect of similarity.")
    return out


# --------------------------------------------------------------------------- page
def build_report(wh: Warehouse, catalog: Catalog, profile: str, out: Path,
                 study_names: Sequence[str] | None = None) -> Report:
    """Write ``out/index.html`` (and ``out/img/...``) for the profile's studies (default: all declared)."""
    specs = load_studies(catalog)
    unknown = [s for s in study_names or [] if s not in specs]
    if unknown:
        raise ValueError(f"unknown study(ies) {unknown}; declared in {catalog.source_file}: {sorted(specs)}")
    studies = [specs[s] for s in (study_names or specs)]
    out = Path(out)
    if (out / "img").exists():
        shutil.rmtree(out / "img")
    out.mkdir(parents=True, exist_ok=True)
    tables = {t: _query(wh, t, profile) for t in STUDY_TABLES}
    report = Report(out / "index.html")
    body = [_setup(wh, catalog, profile)]
    for spec in studies:
        part = {t: df[df["study"] == spec.name] if not df.empty else df for t, df in tables.items()}
        imgs, missing = _images(wh, profile, spec.name, out)
        report.caveats += missing
        report.images += [out / p for ps in imgs.values() for p in ps]
        sel = spec.select_benchmarks(catalog, profile)
        body.append(
            f'<h2 id="study-{_esc(spec.name)}">Study “{_esc(spec.name)}”</h2><p>{_esc(spec.description)}</p>'
            f"<p class='muted'>{len(sel)} benchmarks: {_esc(', '.join(sel))}. Corpora: "
            f"{_esc(', '.join(spec.select_corpora(catalog, profile)))}. Scores: {_esc(', '.join(spec.scores))}; "
            f"{_esc(spec.correction)} correction, {spec.n_boot} bootstrap resamples (ci2: benchmarks and their "
            f"examples resampled), p-values {_esc(spec.p_method)} (exact up to n = 10, else permutation).</p>"
            "<h3>Does similarity predict the score?</h3>" + _correlation_section(part["correlations"])
            + _img_tags(imgs["correlations"])
            + "<h3>Do the measures agree?</h3>" + _agreement_section(part["measure_agreement"])
            + _img_tags(imgs["measure_agreement"])
            + "<h3>Are correctly answered examples more similar?</h3>" + _per_example_section(part["per_example_analysis"])
            + _img_tags(imgs["per_example_analysis"]))
    report.caveats = _caveats(wh, profile, tables, studies, catalog) + report.caveats
    caveats = "<h2>Caveats</h2><div class='caveat'><ul>" + "".join(f"<li>{_esc(c)}</li>" for c in report.caveats) + "</ul></div>"
    toc = " · ".join(f'<a href="#study-{_esc(s.name)}">{_esc(s.name)}</a>' for s in studies)
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>simassets report — {_esc(profile)}</title>"
            f"<style>{CSS}</style></head><body><h1>Does a benchmark get easier when its data is more like the "
            f"pretraining data?</h1><p class='muted'>simassets report, profile {_esc(profile)}, generated "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}. Studies: {toc} · <a href='#caveats'>caveats</a></p>"
            + body[0] + f"<div id='caveats'>{caveats}</div>" + "".join(body[1:]) + "</body></html>")
    report.path.write_text(page, encoding="utf-8")
    return report
