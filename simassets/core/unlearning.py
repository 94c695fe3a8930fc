"""Causal attribution by unlearning (after Zhao et al. 2024): unlearn one corpus, see which capabilities fall.

**Method** (:func:`unlearn`). Gradient *ascent* on the LM loss of the target corpus sample (packed
blocks, :mod:`simassets.core.training`), one step at a time. After every ascent step the loss on a
fixed set of *retain* blocks (samples of the other corpora, minus any document of the target) is
measured; while it exceeds ``retain_bound = base_retain_loss * (1 + retain_tolerance)`` (the base
model's retain loss plus a relative tolerance, default 2 %), *descent* steps on retain batches are
taken, at most ``max_retain_steps`` per ascent step.

**Stopping rules**, checked after each ascent step (and its repair), first match wins:

* ``retain_unrecoverable`` -- the retain loss is still above its bound after ``max_retain_steps``
  repair steps (the model is damaged beyond the tolerance; its scores are still reported);
* ``shuffled_reference`` -- the target's loss exceeds the loss of the *same* documents with their
  words cut into consecutive chunks of 5-15 words and the chunks shuffled (:func:`shuffle_chunks`,
  seeded per document), both measured under the current model on the same number of blocks: the
  model "no longer knows this text" better than a scrambled version of it;
* ``step_budget`` -- ``max_steps`` ascent steps were taken.

``unknown_at_start`` means the base model already scores the text no better than its shuffle: no step
is taken and the "unlearned" model is the base model.

**Attribution** (:func:`benchmark_delta`, :func:`category_deltas`): the unlearned model is scored on
the same benchmark examples as the base model; Delta = unlearned - base in normalised-score points
(``100 (acc - r) / (1 - r)``, r = chance accuracy), with the paired standard error of the
per-example differences. A category's Delta is the mean of its benchmarks' Deltas (standard error
``sqrt(sum se_i^2) / k``).

**Relationships between corpora** (:func:`corpus_relationships`): the *impact vector* of a corpus is
its Delta per benchmark; two corpora are ``correlated`` when the Pearson r of their impact vectors is
>= +0.4 (unlearning either moves the same benchmarks the same way), ``complementary`` when r <= -0.4
(where one matters the other matters less), ``orthogonal`` when |r| <= 0.2, ``weak`` in between and
``undefined`` when r is (a constant impact vector, fewer than 3 benchmarks).

**High-impact corpora** (:func:`high_impact`): per capability category, corpora ranked by Delta; a
corpus is high-impact when its Delta <= -5 points *and* the drop exceeds 2 standard errors.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simassets.core import stats
from simassets.core.hashing import seeded_hash64, sha256_text
from simassets.core.training import BatchStream, TrainConfig, Trainer, fresh_copy, pack_texts, seeded_order

STOP_SHUFFLED = "shuffled_reference"
STOP_BUDGET = "step_budget"
STOP_RETAIN = "retain_unrecoverable"
STOP_AT_START = "unknown_at_start"
STOP_RULES = (STOP_SHUFFLED, STOP_BUDGET, STOP_RETAIN, STOP_AT_START)
_WORD = re.compile(r"\S+\s*")

CORRELATED_R = 0.4
COMPLEMENTARY_R = -0.4
ORTHOGONAL_R = 0.2
HIGH_IMPACT_POINTS = 5.0
HIGH_IMPACT_SE = 2.0


@dataclass(frozen=True)
class UnlearnConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, seq_len=128, batch_size=8))
    max_steps: int = 20  # ascent steps: the step budget
    retain_tolerance: float = 0.02  # relative: retain_bound = base retain loss * (1 + tolerance)
    max_retain_steps: int = 5  # repair (descent) steps on retain data per ascent step
    eval_blocks: int = 8  # blocks per loss measurement of target, shuffled reference and retain
    chunk_words: tuple[int, int] = (5, 15)
    target_blocks: int | None = None  # cap on the target blocks used for ascent (None: all)
    retain_blocks: int | None = 64  # cap on the retain blocks (descent data and the retain measurement)

    def __post_init__(self) -> None:
        lo, hi = self.chunk_words
        if not 1 <= lo <= hi:
            raise ValueError(f"UnlearnConfig.chunk_words must be 1 <= min <= max, got {self.chunk_words}")
        if self.max_steps < 0 or self.max_retain_steps < 0 or self.eval_blocks < 1 or self.retain_tolerance < 0:
            raise ValueError("UnlearnConfig: max_steps, max_retain_steps, retain_tolerance must be >= 0 and eval_blocks >= 1")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.as_dict()
        return d


@dataclass
class UnlearnResult:
    model: Any  # the unlearned model (plain transformers, eval mode)
    stop_rule: str
    ascent_steps: int
    retain_steps: int
    curve: list[dict[str, float]]  # per ascent step: step, target_loss, shuffled_loss, retain_loss, retain_steps, seconds
    retain_bound: float
    tokens: int
    seconds: float
    train_seconds: float
    trainable_parameters: int
    target_blocks: int
    retain_blocks: int

    @property
    def seconds_per_step(self) -> float:
        steps = self.ascent_steps + self.retain_steps
        return self.train_seconds / steps if steps else float("nan")

    def summary(self) -> dict[str, Any]:
        first, last = self.curve[0], self.curve[-1]
        return {"stop_rule": self.stop_rule, "ascent_steps": self.ascent_steps, "retain_steps": self.retain_steps,
                "base_target_loss": first["target_loss"], "base_shuffled_loss": first["shuffled_loss"],
                "base_retain_loss": first["retain_loss"], "retain_bound": self.retain_bound,
                "final_target_loss": last["target_loss"], "final_shuffled_loss": last["shuffled_loss"],
                "final_retain_loss": last["retain_loss"], "tokens": self.tokens, "seconds": self.seconds,
                "seconds_per_step": self.seconds_per_step, "trainable_parameters": self.trainable_parameters}


def shuffle_chunks(text: str, seed: int, chunk_words: tuple[int, int] = (5, 15)) -> str:
    """``text``'s words (each with the whitespace after it, so line breaks and spacing survive) cut into
    consecutive chunks of ``chunk_words`` words (lengths drawn uniformly) and the chunks put in a random
    order (never the original one); seeded by ``(seed, sha256(text))``. The result has the same words and
    whitespace, reordered."""
    units = _WORD.findall(text)
    if not units:
        return text
    appended = not units[-1][-1].isspace()
    if appended:
        units[-1] += " "  # the last word may land mid-text: keep it apart from the next one
    rng = np.random.default_rng(seeded_hash64(seed, "shuffle/" + sha256_text(text)))
    chunks, i = [], 0
    while i < len(units):
        n = int(rng.integers(chunk_words[0], chunk_words[1] + 1))
        chunks.append(units[i : i + n])
        i += n
    order = rng.permutation(len(chunks))
    if len(chunks) > 1 and (order == np.arange(len(chunks))).all():
        order = np.roll(order, 1)  # never the original order
    out = text[: len(text) - len(text.lstrip())] + "".join(u for k in order for u in chunks[k])
    return out[:-1] if appended and order[-1] == len(chunks) - 1 else out


def unlearn(model: Any, tokenizer: Any, target_texts: Sequence[str], retain_texts: Sequence[str],
            cfg: UnlearnConfig) -> UnlearnResult:
    """Unlearn ``target_texts`` from a copy of ``model`` (see the module docstring); ``model`` is not changed.

    Retain documents equal to a target document are dropped first.
    """
    start = time.perf_counter()
    seed, seq = cfg.train.seed, cfg.train.seq_len
    ordered = [target_texts[i] for i in seeded_order(target_texts, seed)]
    target = pack_texts(tokenizer, ordered, seq, seed=None, max_blocks=cfg.target_blocks, what="target corpus")
    shuffled = pack_texts(tokenizer, [shuffle_chunks(t, seed, cfg.chunk_words) for t in ordered], seq, seed=None,
                          max_blocks=cfg.eval_blocks, what="shuffled target")
    known = {sha256_text(t) for t in target_texts}
    retain = pack_texts(tokenizer, [t for t in retain_texts if sha256_text(t) not in known], seq, seed=seed,
                        max_blocks=cfg.retain_blocks, what="retain corpora")
    n_eval = min(cfg.eval_blocks, target.shape[0], shuffled.shape[0])
    t_eval, s_eval, r_eval = target[:n_eval], shuffled[:n_eval], retain[: cfg.eval_blocks]
    trainer = Trainer(fresh_copy(model), cfg.train)
    t_stream = BatchStream(target.shape[0], cfg.train.batch_size, seed)
    r_stream = BatchStream(retain.shape[0], cfg.train.batch_size, seed + 1)

    def point(step: int, repairs: int, retain_loss: float) -> dict[str, float]:
        return {"step": step, "target_loss": trainer.loss(t_eval), "shuffled_loss": trainer.loss(s_eval),
                "retain_loss": retain_loss, "retain_steps": repairs, "seconds": time.perf_counter() - start}

    curve = [point(0, 0, trainer.loss(r_eval))]
    bound = curve[0]["retain_loss"] * (1.0 + cfg.retain_tolerance)
    stop = STOP_AT_START if curve[0]["target_loss"] > curve[0]["shuffled_loss"] else STOP_BUDGET
    for step in range(1, (cfg.max_steps if stop == STOP_BUDGET else 0) + 1):
        trainer.step(target[t_stream.next()], direction=-1)
        r_loss, repairs = trainer.loss(r_eval), 0
        while r_loss > bound and repairs < cfg.max_retain_steps:
            trainer.step(retain[r_stream.next()], direction=1)
            r_loss, repairs = trainer.loss(r_eval), repairs + 1
        curve.append(point(step, repairs, r_loss))
        if r_loss > bound:
            stop = STOP_RETAIN
            break
        if curve[-1]["target_loss"] > curve[-1]["shuffled_loss"]:
            stop = STOP_SHUFFLED
            break
    st = trainer.stats
    return UnlearnResult(
        model=trainer.finished_model(), stop_rule=stop, ascent_steps=st.steps[-1], retain_steps=st.steps[1],
        curve=curve, retain_bound=bound, tokens=st.tokens, seconds=time.perf_counter() - start,
        train_seconds=st.seconds, trainable_parameters=trainer.trainable_parameters,
        target_blocks=int(target.shape[0]), retain_blocks=int(retain.shape[0]))


# ------------------------------------------------------------------ attribution


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")


def benchmark_delta(base_correct: Sequence[bool], unlearned_correct: Sequence[bool], random_baseline: float) -> dict[str, float]:
    """Base and unlearned accuracy / normalised score (with standard errors) on the same examples, in the
    same order, and their paired difference ``delta`` = unlearned - base (normalised points)."""
    b = np.asarray(base_correct, dtype=float)
    u = np.asarray(unlearned_correct, dtype=float)
    if b.shape != u.shape or b.size == 0:
        raise ValueError(f"base and unlearned results must be non-empty and paired, got {b.size} and {u.size}")
    if not 0.0 <= random_baseline < 1.0:
        raise ValueError(f"random_baseline must lie in [0, 1), got {random_baseline}")
    scale = 100.0 / (1.0 - random_baseline)
    base, unl = scale * (b.mean() - random_baseline), scale * (u.mean() - random_baseline)
    return {"n": int(b.size), "base_acc": float(b.mean()), "unlearned_acc": float(u.mean()),
            "base_score": float(base), "base_stderr": scale * _se(b), "unlearned_score": float(unl),
            "unlearned_stderr": scale * _se(u), "delta": float(unl - base), "delta_stderr": scale * _se(u - b)}


def category_deltas(rows: pd.DataFrame) -> pd.DataFrame:
    """Per category: mean base/unlearned score and Delta over its benchmarks, standard errors combined as
    ``sqrt(sum se^2) / k`` (benchmarks independent), examples summed."""
    def comb(se: pd.Series) -> float:
        return float(np.sqrt((se.astype(float) ** 2).sum()) / len(se))

    out = rows.groupby("category", sort=True).agg(
        n=("n", "sum"), n_benchmarks=("benchmark", "count"), base_acc=("base_acc", "mean"),
        unlearned_acc=("unlearned_acc", "mean"), base_score=("base_score", "mean"), base_stderr=("base_stderr", comb),
        unlearned_score=("unlearned_score", "mean"), unlearned_stderr=("unlearned_stderr", comb),
        delta=("delta", "mean"), delta_stderr=("delta_stderr", comb))
    return out.reset_index()


def relation_of(r: float) -> str:
    """The relationship label of two impact vectors with correlation ``r`` (thresholds in the module docstring)."""
    if not np.isfinite(r):
        return "undefined"
    if r >= CORRELATED_R:
        return "correlated"
    if r <= COMPLEMENTARY_R:
        return "complementary"
    return "orthogonal" if abs(r) <= ORTHOGONAL_R else "weak"


def corpus_relationships(impact: pd.DataFrame, method: str = "pearson") -> pd.DataFrame:
    """Every pair of corpora (columns of ``impact``: Delta per benchmark, one row per benchmark): n, r, p, relation."""
    rows = []
    cols = list(impact.columns)
    for i, a in enumerate(cols):
        for b in cols[i + 1:]:
            res = stats.correlate(impact[a], impact[b], method)
            rows.append({"corpus_a": a, "corpus_b": b, "method": method, "n": res.n, "r": res.r, "p": res.p,
                         "p_method": res.p_method, "relation": relation_of(res.r), "note": res.note})
    return pd.DataFrame(rows, columns=["corpus_a", "corpus_b", "method", "n", "r", "p", "p_method", "relation", "note"])


def high_impact(categories: pd.DataFrame) -> pd.DataFrame:
    """Per category (rows: corpus, category, delta, delta_stderr): corpora ranked by Delta (1 = largest drop)
    and flagged high-impact when Delta <= -5 points and the drop exceeds 2 standard errors."""
    df = categories[["corpus", "category", "delta", "delta_stderr"]].copy()
    df["rank"] = df.groupby("category")["delta"].rank(method="min").astype(int)
    se = df["delta_stderr"].fillna(np.inf)
    df["high_impact"] = (df["delta"] <= -HIGH_IMPACT_POINTS) & (-df["delta"] > HIGH_IMPACT_SE * se)
    return df.sort_values(["category", "rank", "corpus"]).reset_index(drop=True)


def attribution_similarity_table(attr: pd.DataFrame, sim: pd.DataFrame, methods: Sequence[str] = ("spearman", "pearson"),
                                 n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Does a corpus's similarity to a benchmark predict the benchmark's drop when the corpus is unlearned?

    ``attr``: model, corpus, benchmark, delta. ``sim``: corpus, benchmark, model ('' = any model), measure,
    value. The score is ``drop = -delta``; correlations (``stats.correlation_grid``) per model over all
    (corpus, benchmark) pairs (``scope = '*'``) and per corpus over benchmarks (``scope`` = the corpus).
    ``r_oriented > 0`` means "more similar => larger drop".
    """
    cols = ["model", "scope", *stats.GRID_COLUMNS]
    if attr.empty or sim.empty:
        return pd.DataFrame(columns=cols)
    sim = sim[sim["benchmark"] != ""]
    generic = sim[sim["model"] == ""].drop(columns="model").merge(attr[["model"]].drop_duplicates(), how="cross")
    joined = pd.concat([generic, sim[sim["model"] != ""]], ignore_index=True)
    wide = joined.pivot_table(index=["model", "corpus", "benchmark"], columns="measure", values="value", aggfunc="mean")
    df = attr[["model", "corpus", "benchmark", "delta"]].merge(wide.reset_index(), on=["model", "corpus", "benchmark"])
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["drop"] = -df["delta"]
    measures = sorted(c for c in wide.columns)
    parts = []
    for method in methods:
        pooled = stats.correlation_grid(df, measures, ["drop"], method, n_boot=n_boot, seed=seed, group_by="model")
        per = stats.correlation_grid(df, measures, ["drop"], method, n_boot=n_boot, seed=seed, group_by=["model", "corpus"])
        parts += [pooled.assign(scope="*"), per.rename(columns={"corpus": "scope"})]
    return pd.concat(parts, ignore_index=True)[cols]


# ------------------------------------------------------------------ figures


def pyplot():
    """matplotlib's pyplot on the Agg backend (PNG files, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def delta_heatmap(categories: pd.DataFrame, path: Path, title: str) -> Path:
    """Corpus x capability heatmap of Delta (red = the capability falls when the corpus is unlearned),
    each cell annotated ``Delta +- se``."""
    plt = pyplot()
    grid = categories.pivot(index="corpus", columns="category", values="delta")
    se = categories.pivot(index="corpus", columns="category", values="delta_stderr").reindex_like(grid)
    lim = max(float(np.nanmax(np.abs(grid.to_numpy()))) if grid.size else 1.0, 1.0)
    fig, ax = plt.subplots(figsize=(1.6 * grid.shape[1] + 2.5, 0.6 * grid.shape[0] + 1.8))
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [c.replace("_", "\n") for c in grid.columns], fontsize=7)
    ax.set_yticks(range(grid.shape[0]), list(grid.index), fontsize=8)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v, s = grid.iat[i, j], se.iat[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.1f}\n±{s:.1f}" if np.isfinite(s) else f"{v:+.1f}", ha="center", va="center",
                        fontsize=7, color="white" if abs(v) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, label="Δ normalised score (unlearned - base)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def loss_curves(runs: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """One panel per run (``corpus``, ``curve``, ``retain_bound``, ``stop_rule``): target, shuffled-reference
    and retain loss per ascent step, the retain bound dashed."""
    plt = pyplot()
    ncols = min(len(runs), 3) or 1
    nrows = math.ceil(len(runs) / ncols) or 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        c = pd.DataFrame(run["curve"])
        for col, colour in (("target_loss", "tab:red"), ("shuffled_loss", "tab:purple"), ("retain_loss", "tab:blue")):
            ax.plot(c["step"], c[col], marker=".", color=colour, label=col.removesuffix("_loss"))
        ax.axhline(run["retain_bound"], color="tab:blue", ls="--", lw=0.8, label="retain bound")
        ax.set_title(f"{run['corpus']}: {run['stop_rule']}", fontsize=8)
        ax.set_xlabel("ascent step", fontsize=7)
        ax.set_ylabel("loss (nats/token)", fontsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    pyplot().close(fig)
    return path
