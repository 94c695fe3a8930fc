"""The measure registry: every similarity notion with its family, level, direction and parameters.

``direction`` is +1 when a higher value means *more similar* (cosine, MAUVE, alignment) and -1 when a
higher value means *less similar* (KL, JS, perplexity, NCD). Correlations orient by it, so that
"more similar => better" has the same sign for every measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["embedding", "token", "model", "compression", "task2vec", "overlap"]
Level = Literal["example", "dataset"]


@dataclass(frozen=True)
class MeasureSpec:
    name: str
    family: Family
    levels: tuple[Level, ...]
    direction: int
    description: str
    formula: str = ""
    needs_model: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"measure {self.name}: direction must be +1 or -1")


MEASURES: dict[str, MeasureSpec] = {}


def register(spec: MeasureSpec) -> MeasureSpec:
    if spec.name in MEASURES and MEASURES[spec.name] != spec:
        raise ValueError(f"measure {spec.name!r} registered twice with different specs")
    MEASURES[spec.name] = spec
    return spec


def get(name: str) -> MeasureSpec:
    try:
        return MEASURES[name]
    except KeyError:
        raise KeyError(f"unknown measure {name!r}; known: {sorted(MEASURES)}") from None


def direction(name: str) -> int:
    return get(name).direction


# ------------------------------------------------------------------ embedding family (foundation)
register(MeasureSpec(
    name="max_cosine", family="embedding", levels=("example", "dataset"), direction=1,
    description="Cosine similarity of an example's embedding to its nearest corpus document; the dataset value is the mean over examples.",
    formula="max_d cos(e_x, e_d)", params={"embedding_model": "all-MiniLM-L6-v2"},
))
register(MeasureSpec(
    name="topk_cosine", family="embedding", levels=("example", "dataset"), direction=1,
    description="Mean cosine similarity of an example's embedding to its k nearest corpus documents; the dataset value is the mean over examples.",
    formula="mean_{d in top-k(x)} cos(e_x, e_d)", params={"embedding_model": "all-MiniLM-L6-v2", "k": "profile.embedding_top_k"},
))
register(MeasureSpec(
    name="centroid_cosine", family="embedding", levels=("dataset",), direction=1,
    description="Cosine similarity between the mean embedding of the benchmark examples and the mean embedding of the corpus sample.",
    formula="cos(mean_x e_x, mean_d e_d)", params={"embedding_model": "all-MiniLM-L6-v2"},
))
