"""Training interventions (after Chawla et al.): does the alignment of a training corpus with a target
predict the target's loss after training on that corpus?

**Experiment.** For a model and a set of targets (a benchmark's rendered input + gold continuation
texts, or a held-out split of a corpus sample), a fresh copy of the model is fine-tuned on each
training corpus for the *same token budget* (``steps = ceil(token_budget / (batch_size * seq_len))``
optimizer steps of full blocks, so every run sees exactly ``steps * batch_size * seq_len`` tokens;
small corpora are repeated epoch by epoch in seeded order) with :class:`simassets.core.training.Trainer`
(descent). Each target's cross-entropy (token-weighted nats/token over its texts, via
:func:`simassets.core.measures.model.sequence_nll`; perplexity = exp) is measured before, at
``eval_points`` evenly spaced steps during, and after training.

**Alignment** (x-axis): Task2Vec alignment coefficient of (training corpus, target) under the probe
model (:mod:`simassets.core.measures.task2vec`) and gzip alignment (1 - mean NCD,
:func:`simassets.core.measures.compression.gzip_alignment`). **Loss** (y-axis): the target's loss after
training and its change. :func:`alignment_loss_table` correlates them (``stats.correlate``: r, r^2,
analytic p, percentile bootstrap CI) per model, per target (across training corpora) and pooled
over targets (``target = '*'``); Chawla et al.'s hypothesis is r < 0 (more aligned => lower loss).

**Contamination guard** (:func:`overlap_guard`): training data must not contain the target. A pair
whose contaminated fraction at 13-grams (:func:`simassets.core.measures.overlap.overlap_measures`:
share of target texts with at least one 13-gram in the corpus) exceeds ``MAX_CONTAMINATED_FRACTION``
(2 %) is refused with :class:`ContaminationError`, unless the pair is declared a deliberate positive
control. Held-out corpus targets are removed (by text) from every training corpus before the guard.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simassets.core import stats
from simassets.core.hashing import seeded_hash64, sha256_text
from simassets.core.training import BatchStream, TrainConfig, Trainer, fresh_copy, pack_texts

MAX_CONTAMINATED_FRACTION = 0.02
GUARD_N = 13
ALIGNMENT_MEASURES = ("task2vec_alignment", "gzip_alignment")
LOSS_COLUMNS = ("loss_after", "delta_loss")


class ContaminationError(ValueError):
    """A training corpus contains (part of) the target it is meant to be evaluated on."""


@dataclass(frozen=True)
class Target:
    """A target: its name (``benchmark:NAME`` or ``heldout:CORPUS``) and the texts whose loss is measured."""

    name: str
    texts: tuple[str, ...]
    max_length: int = 512  # tokens kept per text when its loss is measured

    def __post_init__(self) -> None:
        if not any(t.strip() for t in self.texts):
            raise ValueError(f"target {self.name!r} has no non-empty text")


@dataclass(frozen=True)
class GuardVerdict:
    corpus: str
    target: str
    n: int
    contaminated_fraction: float
    threshold: float
    positive_control: bool
    evidence: str

    @property
    def contaminated(self) -> bool:
        return self.contaminated_fraction > self.threshold


def overlap_guard(target: Target, corpus: str, corpus_texts: Sequence[str], positive_control: bool = False,
                  threshold: float = MAX_CONTAMINATED_FRACTION, n: int = GUARD_N) -> GuardVerdict:
    """Refuse (``ContaminationError``) a training corpus whose ``n``-gram contaminated fraction of the target
    exceeds ``threshold``, unless the pair is a declared positive control; else return the verdict."""
    from simassets.core.measures.overlap import overlap_measures

    ov = overlap_measures(list(target.texts), list(corpus_texts), ns=(n,))[n]
    hits = [i for i, f in enumerate(ov["flagged"]) if f]
    evidence = (f"{ov['evidence_ngram'][hits[0]]!r} (document {ov['evidence_doc_id'][hits[0]]})" if hits else "")
    verdict = GuardVerdict(corpus, target.name, n, float(ov["contaminated_fraction"]), threshold, positive_control, evidence)
    if verdict.contaminated and not positive_control:
        raise ContaminationError(
            f"training corpus {corpus!r} overlaps target {target.name!r}: {verdict.contaminated_fraction:.1%} of its "
            f"{len(target.texts)} texts share a {n}-gram with the corpus (threshold {threshold:.1%}), e.g. {evidence}; "
            "the pair is refused unless it is declared a deliberate positive control")
    return verdict


def heldout_split(texts: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(kept, held out): the held-out texts are the ``round(fraction * n)`` smallest seeded hashes."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must lie in (0, 1), got {fraction}")
    ranked = sorted(range(len(texts)), key=lambda i: (seeded_hash64(seed, "heldout/" + sha256_text(texts[i])), i))
    held = set(ranked[: max(1, round(fraction * len(texts)))])
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


@dataclass(frozen=True)
class FinetuneConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, seq_len=128, batch_size=8))
    token_budget: int = 16_384
    eval_points: int = 2  # target-loss measurements during training, besides before and after
    eval_batch_size: int = 8

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.eval_points < 0:
            raise ValueError(f"FinetuneConfig: token_budget must be >= 1 and eval_points >= 0, got "
                             f"{self.token_budget} and {self.eval_points}")

    @property
    def steps(self) -> int:
        return math.ceil(self.token_budget / self.train.tokens_per_step)

    @property
    def tokens(self) -> int:
        """Tokens every run trains on: whole optimizer steps of full blocks."""
        return self.steps * self.train.tokens_per_step

    def eval_steps(self) -> list[int]:
        return sorted({int(round(x)) for x in np.linspace(0, self.steps, self.eval_points + 2)})

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train": self.train.as_dict(), "steps": self.steps, "tokens": self.tokens}


@dataclass
class FinetuneResult:
    model: Any
    steps: int
    tokens: int
    blocks: int  # distinct training blocks (epochs = steps * batch_size / blocks)
    seconds: float
    train_seconds: float
    trainable_parameters: int
    train_curve: list[float]  # training-batch loss per step
    target_curves: dict[str, list[tuple[int, float]]]  # target -> (step, loss) at the eval steps

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds > 0 else float("nan")

    def before(self, target: str) -> float:
        return self.target_curves[target][0][1]

    def after(self, target: str) -> float:
        return self.target_curves[target][-1][1]


def target_loss(model: Any, tokenizer: Any, target: Target, batch_size: int = 8) -> tuple[float, int]:
    """Token-weighted cross-entropy (nats/token) of the target's texts and the number of tokens scored."""
    from simassets.core.measures.model import sequence_nll

    nll = sequence_nll(model, tokenizer, [t for t in target.texts if t.strip()], max_length=target.max_length,
                       batch_size=batch_size)
    n = sum(r.n_tokens for r in nll)
    if n == 0:
        raise ValueError(f"target {target.name!r}: no token to score")
    return math.fsum(r.nll_sum for r in nll) / n, n


def finetune(model: Any, tokenizer: Any, train_texts: Sequence[str], targets: Sequence[Target], cfg: FinetuneConfig,
             before: Mapping[str, float] | None = None) -> FinetuneResult:
    """Fine-tune a copy of ``model`` on ``train_texts`` for ``cfg.tokens`` tokens and follow each target's loss.

    ``before`` (target -> loss of the untouched model) skips the step-0 measurement where given.
    """
    start = time.perf_counter()
    blocks = pack_texts(tokenizer, train_texts, cfg.train.seq_len, seed=cfg.train.seed, what="training corpus")
    trainer = Trainer(fresh_copy(model), cfg.train)
    stream = BatchStream(blocks.shape[0], cfg.train.batch_size, cfg.train.seed)
    eval_at = set(cfg.eval_steps())
    curves: dict[str, list[tuple[int, float]]] = {t.name: [] for t in targets}

    def measure(step: int) -> None:
        for t in targets:
            loss = before[t.name] if step == 0 and before and t.name in before else \
                target_loss(trainer.model, tokenizer, t, cfg.eval_batch_size)[0]
            curves[t.name].append((step, loss))

    measure(0)
    train_curve = []
    for step in range(1, cfg.steps + 1):
        train_curve.append(trainer.step(blocks[stream.next()], direction=1))
        if step in eval_at:
            measure(step)
    return FinetuneResult(
        model=trainer.finished_model(), steps=cfg.steps, tokens=trainer.stats.tokens, blocks=int(blocks.shape[0]),
        seconds=time.perf_counter() - start, train_seconds=trainer.stats.seconds,
        trainable_parameters=trainer.trainable_parameters, train_curve=train_curve, target_curves=curves)


# ------------------------------------------------------------------ probe and alignment


def parameter_count(spec: Any) -> float:
    """Parameters of a registered model read from its weight files' headers (no model is loaded);
    ``inf`` for a hub model (unknown without downloading)."""
    from simassets.core.models import resolve_weights

    w = resolve_weights(spec)
    files = [w.gguf_file] if w.gguf_file is not None else sorted(Path(w.directory).glob("*.safetensors")) if w.directory else []
    if not files:
        return math.inf
    # parsing a GGUF header reads its whole vocabulary (seconds for Gemma's 262k): once per file version
    stats = [(str(f), f.stat()) for f in files]
    return float(sum(_file_parameters(name, st.st_size, st.st_mtime_ns) for name, st in stats))


@lru_cache(maxsize=128)
def _file_parameters(path: str, size: int, mtime_ns: int) -> int:
    """Parameters in one GGUF or safetensors file, from its header (``size``/``mtime_ns`` key the cache)."""
    if path.endswith(".gguf"):
        from gguf import GGUFReader

        return sum(int(t.n_elements) for t in GGUFReader(path).tensors)
    from safetensors import safe_open

    with safe_open(path, framework="pt") as fh:
        return sum(int(np.prod(fh.get_slice(k).get_shape())) for k in fh.keys())


def smallest_model(specs: Sequence[Any]) -> Any:
    """The Task2Vec probe: the spec with the fewest parameters (ties: the first in registry order)."""
    if not specs:
        raise ValueError("no registered model to use as the Task2Vec probe")
    return min(specs, key=parameter_count)


def alignment_loss_table(rows: pd.DataFrame, methods: Sequence[str] = ("pearson", "spearman"), n_boot: int = 1000,
                         seed: int = 0) -> pd.DataFrame:
    """Alignment (x) against loss (y) per model, subset, target scope, measure, loss column and method.

    ``rows``: model, corpus, target, positive_control, the :data:`ALIGNMENT_MEASURES` and
    :data:`LOSS_COLUMNS`. ``subset`` is ``clean`` (positive controls left out) or ``all``; ``target`` is
    one target (across training corpora) or ``'*'`` (pooled). Adds r^2 and the least-squares line.
    """
    out = []
    for model, mdf in rows.groupby("model", sort=True):
        for subset, sdf in (("clean", mdf[~mdf["positive_control"].astype(bool)]), ("all", mdf)):
            if subset == "all" and not mdf["positive_control"].any():
                continue
            scopes = [("*", sdf)] + [(str(t), g) for t, g in sdf.groupby("target", sort=True)]
            for target, tdf in scopes:
                for x in ALIGNMENT_MEASURES:
                    for y in LOSS_COLUMNS:
                        for method in methods:
                            cell = seeded_hash64(seed, f"{model}/{subset}/{target}/{x}/{y}/{method}")
                            res = stats.correlate(tdf[x], tdf[y], method, n_boot=n_boot, seed=cell)
                            slope = icpt = float("nan")
                            if res.defined:
                                ok = np.isfinite(tdf[x].to_numpy(float)) & np.isfinite(tdf[y].to_numpy(float))
                                slope, icpt = np.polyfit(tdf[x].to_numpy(float)[ok], tdf[y].to_numpy(float)[ok], 1)
                            out.append({"model": model, "subset": subset, "target": target, "measure": x, "loss": y,
                                        "method": method, "n": res.n, "r": res.r, "r2": res.r ** 2, "p": res.p,
                                        "p_method": res.p_method, "ci_low": res.ci_low, "ci_high": res.ci_high,
                                        "slope": float(slope),
                                        "intercept": float(icpt), "note": res.note})
    return pd.DataFrame(out, columns=["model", "subset", "target", "measure", "loss", "method", "n", "r", "r2", "p",
                                      "p_method", "ci_low", "ci_high", "slope", "intercept", "note"])


def alignment_scatter(rows: pd.DataFrame, corr: pd.DataFrame, path: Path, title: str) -> Path:
    """Loss after training and its change (rows) against each alignment measure (columns): one colour per
    target with its least-squares line, positive controls hollow, the pooled clean fit in black."""
    from simassets.core.unlearning import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(len(LOSS_COLUMNS), len(ALIGNMENT_MEASURES), figsize=(5.2 * len(ALIGNMENT_MEASURES), 4.0 * len(LOSS_COLUMNS)),
                             squeeze=False)
    colours = dict(zip(sorted(rows["target"].unique()), plt.get_cmap("tab10").colors))
    pear = corr[(corr["method"] == "pearson") & (corr["subset"] == "clean")].set_index(["target", "measure", "loss"])
    for i, y in enumerate(LOSS_COLUMNS):
        for j, x in enumerate(ALIGNMENT_MEASURES):
            ax = axes[i, j]
            for target, g in rows.groupby("target", sort=True):
                c = colours[target]
                ctrl = g["positive_control"].astype(bool)
                label = str(target)
                if (target, x, y) in pear.index and np.isfinite(pear.loc[(target, x, y), "r"]):
                    r = pear.loc[(target, x, y), "r"]
                    label += f": r={r:+.2f}, r²={r * r:.2f}"
                ax.scatter(g.loc[~ctrl, x], g.loc[~ctrl, y], color=c, s=28, label=label)
                ax.scatter(g.loc[ctrl, x], g.loc[ctrl, y], facecolors="none", edgecolors=c, s=40)
                clean = g[~ctrl].dropna(subset=[x, y])
                if clean[x].nunique() > 1:
                    k, b = np.polyfit(clean[x], clean[y], 1)
                    xs = np.linspace(clean[x].min(), clean[x].max(), 10)
                    ax.plot(xs, k * xs + b, color=c, lw=0.8)
            if ("*", x, y) in pear.index and np.isfinite(pear.loc[("*", x, y), "r"]):
                row = pear.loc[("*", x, y)]
                xs = np.linspace(rows[x].min(), rows[x].max(), 10)
                ax.plot(xs, row["slope"] * xs + row["intercept"], color="black", lw=1.2,
                        label=f"pooled: r={row['r']:+.2f}, r²={row['r2']:.2f}, n={row['n']}")
            ax.set_xlabel(x + " (higher = more aligned)", fontsize=8)
            ax.set_ylabel(f"{y} (nats/token)", fontsize=8)
            ax.legend(fontsize=6)
    fig.suptitle(title + " (hollow: positive controls)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
