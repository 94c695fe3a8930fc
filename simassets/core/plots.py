"""A study's figures (matplotlib, Agg backend, PNG) and their embedding as markdown images.

* ``headline_<score>.png`` -- the answer at a glance: oriented correlation of every measure (rows) with the score
  against every corpus (columns), one panel per model, a star where p_adj < 0.05, n in the caption.
* ``accuracy.png`` -- each model's accuracy per benchmark with its Wilson 95% interval, against chance.

* ``scatter_<score>_<measure>.png`` -- one panel per corpus: the score of each benchmark against the
  measure, one colour per model, a least-squares line and Spearman's rho (p_adj, n) in the legend.
* ``agreement[_<model>].png`` -- the oriented measure x measure Spearman matrix pooled over
  (corpus, benchmark) pairs: +1 means two measures rank the pairs identically.
* ``examples_<model>_<measure>.png`` -- per corpus, the similarity of correctly vs incorrectly
  answered examples (standardised within each benchmark, oriented so right = more similar) and the
  mean accuracy per similarity quartile across benchmarks.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simassets.core import stats
from simassets.core.studies import NO_CORPUS, POOLED, StudyData

DPI = 90
MAX_LABELLED = 15  # label points with benchmark names up to this many benchmarks per panel
MIN_FONT = 9  # points: readable at 100 % zoom


def diverging_cmap():
    """Crameri's *vik*: perceptually uniform, light at 0, readable with every common colour-vision deficiency
    (matplotlib's RdBu is not uniform in lightness); coolwarm when cmcrameri is absent."""
    try:
        from cmcrameri import cm

        return cm.vik
    except ImportError:  # pragma: no cover - cmcrameri is a dependency
        return "coolwarm"


def informative(x: Iterable[float], y: Iterable[float]) -> str:
    """``""`` when a scatter of ``x`` against ``y`` can show anything; else why not (a constant axis, < 3 points)."""
    xa, ya = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if xa.size < 3:
        return f"{xa.size} point(s)"
    if np.ptp(xa) == 0:
        return f"the measure is {xa[0]:g} for every benchmark"
    if np.ptp(ya) == 0:
        return f"the score is {ya[0]:g} for every benchmark"
    return ""


def cached_figure(path: Path, key: object, draw) -> Path:
    """Render ``draw(path)`` only when ``key`` (the figure's data and parameters) changed since the file was
    written: the key's hash sits beside the PNG (``.<name>.key``)."""
    from simassets.core.hashing import canonical_json, sha256_text

    digest = sha256_text(canonical_json(key))
    stamp = path.with_name(f".{path.name}.key")
    if path.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return path
    draw(path)
    stamp.write_text(digest)
    return path


def headline_heatmap(corr: pd.DataFrame, path: Path, study: str, score: str, method: str = "spearman") -> Path | None:
    """Oriented ``method`` correlation of every measure with ``score`` against every corpus, a panel per model;
    ``*`` marks p_adj < 0.05, ``·`` p < 0.05 before correction; blank = undefined or absent."""
    sub = corr[(corr["method"] == method) & (corr["score"] == score)]
    sub = sub[sub.groupby("measure")["r_oriented"].transform(lambda r: r.notna().any())]  # no all-blank rows
    if sub.empty:
        return None
    models = sorted(sub["model"].unique())
    measures = sorted(sub["measure"].unique())
    corpora = [c for c in sorted(sub["corpus"].unique()) if c != NO_CORPUS] + (
        [NO_CORPUS] if NO_CORPUS in set(sub["corpus"]) else [])
    key = {"rows": sub[["model", "corpus", "measure", "r_oriented", "p", "p_adj", "n"]].round(6).astype(str)
           .to_numpy().tolist(), "study": study, "score": score, "method": method, "v": 3}

    def draw(out: Path) -> None:
        plt = _pyplot()
        w = 1.6 + 0.95 * len(corpora)
        fig, axes = plt.subplots(1, len(models), figsize=(max(5.5, w * len(models) + 2.2), 1.6 + 0.42 * len(measures)),
                                 squeeze=False, layout="constrained")  # room for long measure names
        im = None
        for ax, model in zip(axes.flat, models):
            m = sub[sub["model"] == model].set_index(["measure", "corpus"])
            grid = np.full((len(measures), len(corpora)), np.nan)
            for i, meas in enumerate(measures):
                for j, c in enumerate(corpora):
                    if (meas, c) in m.index:
                        row = m.loc[(meas, c)]
                        grid[i, j] = row["r_oriented"]
                        mark = "*" if row["p_adj"] < 0.05 else ("·" if row["p"] < 0.05 else "")
                        if np.isfinite(row["r_oriented"]):
                            ax.text(j, i, f"{row['r_oriented']:+.2f}{mark}", ha="center", va="center",
                                    fontsize=MIN_FONT, color="white" if abs(row["r_oriented"]) > 0.55 else "black")
            im = ax.imshow(grid, cmap=diverging_cmap(), vmin=-1, vmax=1, aspect="auto")
            ax.set_xticks(range(len(corpora)), [c or "(model-based)" for c in corpora], rotation=30, ha="right",
                          fontsize=MIN_FONT)
            ax.set_yticks(range(len(measures)), measures, fontsize=MIN_FONT)
            ax.set_xlabel("corpus", fontsize=MIN_FONT)
            ns = sub.loc[(sub["model"] == model) & sub["r_oriented"].notna(), "n"]
            ax.set_title(f"{model or 'every model'}: n = {int(ns.min())}–{int(ns.max())} benchmarks", fontsize=10)
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9,
                     label=f"oriented {method} r (+: more similar ⇒ better)")
        fig.suptitle(
            f"study {study}: does similarity predict {score}?  * p_adj < 0.05   · p < 0.05 uncorrected", fontsize=10
        )
        _save(fig, out)

    return cached_figure(path, key, draw)


def accuracy_figure(scores: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Per model, the primary accuracy of each benchmark with its Wilson 95% interval, and the chance level."""
    if scores.empty:
        return None
    df = scores.copy()
    df["primary"] = np.where(df["primary_metric"] == "acc_norm", df["acc_norm"], df["acc"]).astype(float)
    df = df.sort_values(["model", "primary"])
    key = {
        "rows": df[["model", "benchmark", "n", "primary", "random_baseline"]].round(6).astype(str).to_numpy().tolist(),
        "title": title,
        "v": 1,
    }

    def draw(out: Path) -> None:
        plt = _pyplot()
        models = sorted(df["model"].unique())
        nb = df.groupby("model").size().max()
        fig, axes = plt.subplots(1, len(models), figsize=(max(6.0, 0.24 * nb + 2.5) * len(models), 4.4), squeeze=False,
                                 layout="constrained")
        for ax, model in zip(axes.flat, models):
            g = df[df["model"] == model].reset_index(drop=True)
            lo, hi = stats.wilson_interval(g["primary"] * g["n"], g["n"])
            above = lo > g["random_baseline"].to_numpy(float)
            x = np.arange(len(g))
            ax.errorbar(
                x,
                g["primary"],
                yerr=[g["primary"] - lo, hi - g["primary"]],
                fmt="o",
                ms=4,
                lw=1,
                color="#1f4e8c",
                ecolor="#7a9cc6",
                label="accuracy, Wilson 95%",
            )
            ax.scatter(
                x[above],
                g["primary"][above],
                s=40,
                facecolors="none",
                edgecolors="#b35806",
                label="interval above chance",
                zorder=3,
            )
            ax.plot(x, g["random_baseline"], "_", ms=10, mew=2, color="#444", label="chance")
            ax.set_xticks(x, g["benchmark"], rotation=90, fontsize=MIN_FONT - 1 if len(g) > 30 else MIN_FONT)
            ax.set_ylim(0, 1)
            ax.set_ylabel("accuracy (primary metric)", fontsize=MIN_FONT)
            ax.set_title(f"{model}: {int(above.sum())} of {len(g)} benchmarks above chance", fontsize=10)
            ax.legend(fontsize=MIN_FONT - 1, loc="upper left", frameon=False)
        fig.suptitle(title, fontsize=10)
        _save(fig, out)

    return cached_figure(path, key, draw)


def plots_dir(home: Path, profile: str, study: str) -> Path:
    """Where a study's figures live: ``<home>/plots/<profile>/<study>``."""
    return Path(home) / "plots" / profile / study


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


def clear(out: Path, prefix: str) -> None:
    """Delete a previous run's figures with this prefix (so none outlive their measure)."""
    for old in out.glob(f"{prefix}*.png"):
        old.unlink()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a 256-colour palette PNG (about a third of the RGBA size: light UI metadata).

    The figure is drawn once into its RGBA buffer and quantized from there (no PNG written and read back). Median cut
    keeps colour maps smooth (the fast octree, 3x quicker, banded the colour bars); PNG's ``optimize`` pass cost a
    third of the quantizing for 6 % smaller files."""
    from PIL import Image

    fig.set_dpi(DPI)
    fig.canvas.draw()  # laid out by its builder; bbox_inches="tight" would render twice
    rgba = np.asarray(fig.canvas.buffer_rgba())
    _pyplot().close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(rgba[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(path, format="PNG")
    return path


def _direction_label(measure: str) -> str:
    d, note = stats.resolve_directions([measure])[measure]
    return f"{measure} ({'higher = more similar' if d > 0 else 'higher = less similar'}{'?' if note else ''})"


def _panel_corpora(data: StudyData, present: Iterable[str]) -> list[str]:
    """The study's corpora that have rows, then the corpus-free group (model-based measures) if it has."""
    have = set(present)
    return [c for c in (*data.corpora, NO_CORPUS) if c in have]


def _title(corpus: str) -> str:
    return corpus or "(no corpus: model-based)"


def _panels(n: int, ncols_max: int = 5, size: tuple[float, float] = (3.6, 3.2), rows: int = 1):
    plt = _pyplot()
    ncols = max(1, min(n, ncols_max))
    nrows = rows * int(np.ceil(n / ncols))
    # constrained layout is computed within the one draw; tight_layout measured every text in an extra pass
    # (with it the quick studies' figures took 1.14x as long, benchmarks/study_figures.py)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                             layout="constrained")
    return fig, axes


def scatter_figures(data: StudyData, corr: pd.DataFrame, out: Path) -> list[Path]:
    """One figure per (score, measure): score vs measure across benchmarks, a panel per corpus."""
    ds = data.dataset
    if ds.empty:
        return []
    method = "spearman" if "spearman" in set(corr["method"]) else str(corr["method"].iloc[0])
    rho = corr[corr["method"] == method].set_index(["model", "corpus", "measure", "score"])
    models = sorted(ds["model"].unique())
    colours = dict(zip(models, _pyplot().get_cmap("tab10").colors))
    paths = []
    for score in data.spec.scores:
        for measure, mdf in ds.groupby("measure", sort=True):
            corpora = [
                c
                for c in _panel_corpora(data, mdf["corpus"])
                if not informative(mdf.loc[mdf["corpus"] == c, "value"], mdf.loc[mdf["corpus"] == c, score])
            ]
            if not corpora:
                continue  # no panel where both axes vary: see uninformative_scatters
            fig, axes = _panels(len(corpora), ncols_max=3, size=(4.2, 3.8))
            for ax, corpus in zip(axes.flat, corpora):
                for model in models:
                    pts = mdf[(mdf["corpus"] == corpus) & (mdf["model"] == model)].dropna(subset=["value", score])
                    if pts.empty:
                        continue
                    x, y = pts["value"].to_numpy(float), pts[score].to_numpy(float)
                    key = (model, corpus, measure, score)
                    label = model
                    if key in rho.index:
                        row = rho.loc[key]
                        name = "ρ" if method == "spearman" else method
                        label += (
                            f": {name} undefined, n = {row['n']}"
                            if pd.isna(row["r"])
                            else f": {name} = {row['r']:+.2f} (p_adj {row['p_adj']:.2g}), n = {row['n']}"
                        )
                    ax.scatter(x, y, s=18, color=colours[model], label=label, alpha=0.85)
                    if len(np.unique(x)) > 1:
                        slope, icpt = np.polyfit(x, y, 1)
                        xs = np.linspace(x.min(), x.max(), 20)
                        ax.plot(xs, slope * xs + icpt, color=colours[model], lw=1)
                    if len(pts) <= MAX_LABELLED:
                        for xi, yi, b in zip(x, y, pts["benchmark"]):
                            ax.annotate(
                                str(b),
                                (xi, yi),
                                fontsize=MIN_FONT,
                                alpha=0.7,
                                xytext=(2, 2),
                                textcoords="offset points",
                            )
                ax.set_title(_title(corpus), fontsize=9)
                ax.set_xlabel(_direction_label(str(measure)), fontsize=MIN_FONT)
                ax.set_ylabel(score, fontsize=MIN_FONT)
                ax.legend(fontsize=MIN_FONT, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
            for ax in list(axes.flat)[len(corpora) :]:
                ax.axis("off")
            sep = ": " if len(corpora) > 1 else ":\n"  # one panel is too narrow for the title on one line
            fig.suptitle(f"study {data.spec.name}{sep}{score} vs {measure} across benchmarks", fontsize=10)
            paths.append(_save(fig, out / f"scatter_{safe_name(score)}_{safe_name(str(measure))}.png"))
    return paths


def uninformative_scatters(data: StudyData) -> list[str]:
    """The (score, measure, corpus) scatters left out because an axis is constant, and why."""
    out = []
    for score in data.spec.scores:
        for (measure, corpus), g in data.dataset.groupby(["measure", "corpus"], sort=True):
            why = informative(g["value"], g[score])
            if why:
                out.append(f"{score} vs {measure} ({_title(corpus)}): {why}")
    return out


def agreement_figures(agree: pd.DataFrame, out: Path, study: str) -> list[Path]:
    """A heatmap of the pooled (corpus '*') agreement matrix per model group."""
    plt = _pyplot()
    paths = []
    for model, g in agree[agree["corpus"] == POOLED].groupby("model", sort=True):
        r = g.pivot(index="measure_a", columns="measure_b", values="r")
        n = g.pivot(index="measure_a", columns="measure_b", values="n")
        k = len(r)
        fig, ax = plt.subplots(figsize=(1.2 + 0.75 * k, 0.9 + 0.65 * k), layout="constrained")
        im = ax.imshow(r.to_numpy(float), cmap=diverging_cmap(), vmin=-1, vmax=1)
        ax.set_xticks(range(k), r.columns, rotation=45, ha="right", fontsize=MIN_FONT)
        ax.set_yticks(range(k), r.index, fontsize=MIN_FONT)
        for i in range(k):
            for j in range(k):
                v = r.iat[i, j]
                ax.text(
                    j,
                    i,
                    "n/a" if pd.isna(v) else f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=MIN_FONT,
                    color="white" if not pd.isna(v) and abs(v) > 0.6 else "black",
                )
        fig.colorbar(im, ax=ax, shrink=0.8, label="Spearman ρ (oriented)")
        ax.set_title(
            f"study {study}: measure agreement{f' ({model})' if model else ''}\n"
            f"over (corpus, benchmark) pairs, n ≤ {int(n.to_numpy().max())}",
            fontsize=9,
        )
        paths.append(_save(fig, out / (f"agreement_{safe_name(model)}.png" if model else "agreement.png")))
    return paths


def _standardised(g: pd.DataFrame) -> pd.Series:
    sd = g["oriented"].std(ddof=0)
    return (g["oriented"] - g["oriented"].mean()) / sd if sd > 0 else g["oriented"] * 0.0


def example_figures(data: StudyData, pe: pd.DataFrame, out: Path) -> list[Path]:
    """Per (model, measure): correct vs incorrect similarity and accuracy by quartile, a column per corpus."""
    ex = data.examples
    if ex.empty:
        return []
    dirs = stats.resolve_directions(sorted(ex["measure"].unique()))
    ex = ex.assign(oriented=ex["value"] * ex["measure"].map(lambda m: dirs[m][0]))
    ex["z"] = ex.groupby(["model", "corpus", "benchmark", "measure"], group_keys=False)[["oriented"]].apply(
        _standardised
    )
    paths = []
    for (model, measure), g in ex.groupby(["model", "measure"], sort=True):
        corpora = _panel_corpora(data, g["corpus"])
        fig, axes = _panels(len(corpora), size=(3.4, 2.8), rows=2)
        ncols = axes.shape[1]
        for i, corpus in enumerate(corpora):
            top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
            c = g[g["corpus"] == corpus]
            bins = np.linspace(-3, 3, 25)
            for correct, colour, name in ((True, "tab:green", "correct"), (False, "tab:red", "incorrect")):
                z = c.loc[c["correct"] == correct, "z"].clip(-3, 3)
                top.hist(
                    z, bins=bins, density=True, histtype="step", lw=1.5, color=colour, label=f"{name} (n = {len(z)})"
                )
            rows = pe[(pe["model"] == model) & (pe["measure"] == measure) & (pe["corpus"] == corpus)]
            au = rows["auroc"].dropna()
            top.set_title(
                f"{_title(corpus)}\nmedian AUROC {au.median():.2f} over {len(au)} benchmarks"  # 2 lines: one overran
                if len(au)
                else f"{_title(corpus)}\nAUROC undefined",
                fontsize=MIN_FONT,
            )
            top.set_xlabel("similarity, z within benchmark\n(right = more similar)", fontsize=MIN_FONT)
            top.legend(fontsize=MIN_FONT)
            acc = rows[[f"acc_q{q}" for q in range(1, 5)]].mean()
            bottom.bar(range(1, 5), acc.to_numpy(float), color="tab:blue", alpha=0.8)
            bottom.set_xticks(range(1, 5), ["Q1\nleast", "Q2", "Q3", "Q4\nmost"], fontsize=MIN_FONT)
            bottom.set_ylim(0, 1)
            bottom.set_ylabel("mean accuracy", fontsize=MIN_FONT)
        for ax in [a for i, a in enumerate(axes.flat) if (i % ncols) + ncols * (i // (2 * ncols)) >= len(corpora)]:
            ax.axis("off")
        fig.suptitle(
            f"study {data.spec.name}: {measure} of correctly vs incorrectly answered examples ({model})", fontsize=10
        )
        paths.append(_save(fig, out / f"examples_{safe_name(model)}_{safe_name(str(measure))}.png"))
    return paths


def image_markdown(paths: Sequence[Path], max_images: int = 4) -> str:
    """Markdown embedding up to ``max_images`` PNGs as base64 data URIs, then the rest by path."""
    parts = []
    for i, p in enumerate(paths):
        if i < max_images:
            b64 = base64.b64encode(Path(p).read_bytes()).decode("ascii")
            parts.append(f"**{Path(p).name}**\n\n![{Path(p).stem}](data:image/png;base64,{b64})")
        else:
            parts.append(f"- `{p}`")
    return "\n\n".join(parts) if parts else "_(no figures)_"


def existing(paths: Iterable[str | Path]) -> bool:
    """True when every listed figure exists and is non-empty."""
    return all(Path(p).is_file() and Path(p).stat().st_size > 0 for p in paths)
