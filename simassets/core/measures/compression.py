"""Compression similarity: gzip normalized compression distance (NCD) between benchmark examples and corpus docs.

``C(s) = len(gzip.compress(s.encode("utf-8"), compresslevel=9, mtime=0))`` (gzip's default level, a fixed
header timestamp so sizes are deterministic). The concatenation is ``x + " " + y`` (one space separator).

    NCD(x, y) = (C(x + " " + y) - min(C(x), C(y))) / max(C(x), C(y))

NCD is near 0 for identical texts and near 1 (it can slightly exceed 1) for unrelated ones. gzip's window
is 32 KiB, so texts longer than that cannot "see" each other and NCD saturates; corpus documents are
usually far shorter. ``gzip_alignment`` = 1 - mean NCD(doc, example) over sampled pairs, higher = more similar.

The corpus document comes first in the concatenation, so the deflate state after the document can be
kept and copied (``zlib.compressobj().copy()``): each document is compressed once per call, and each
pair only adds the short example. Deflate's output does not depend on how its input is split into
``compress`` calls, so the sizes are byte-for-byte those of ``gzip.compress(doc + " " + example)``
(tested against it).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from simassets.core.measures.registry import MeasureSpec, register

COMPRESSLEVEL = 9
SEPARATOR = " "
DEFAULT_N_PAIRS = 1000


class GzipSizer:
    """C(text) with a per-text cache (keyed by the text itself)."""

    def __init__(self, compresslevel: int = COMPRESSLEVEL):
        self.compresslevel = compresslevel
        self._cache: dict[str, int] = {}

    def size(self, text: str) -> int:
        return len(gzip.compress(text.encode("utf-8"), compresslevel=self.compresslevel, mtime=0))

    def __call__(self, text: str) -> int:
        c = self._cache.get(text)
        if c is None:
            c = self._cache[text] = self.size(text)
        return c

    def ncd(self, x: str, y: str) -> float:
        """Normalized compression distance of two texts (C(x), C(y) cached, C(x + sep + y) not)."""
        cx, cy = self(x), self(y)
        return (self.size(x + SEPARATOR + y) - min(cx, cy)) / max(cx, cy)


class _PrefixCompressor:
    """gzip sizes of ``prefix + suffix`` for many suffixes: the prefix is deflated once, its state copied."""

    _GZIP_FRAME = 18  # 10-byte header (mtime=0, no name) + CRC32 + ISIZE

    def __init__(self, prefix: str, compresslevel: int):
        self._obj = zlib.compressobj(compresslevel, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate, gzip's settings
        self._head = len(self._obj.compress(prefix.encode("utf-8")))

    def size(self, suffix: str = "") -> int:
        obj = self._obj.copy()
        body = len(obj.compress(suffix.encode("utf-8"))) if suffix else 0
        return self._GZIP_FRAME + self._head + body + len(obj.flush())


def ncd(x: str, y: str, compresslevel: int = COMPRESSLEVEL) -> float:
    """NCD(x, y) with gzip (see the module docstring)."""
    return GzipSizer(compresslevel).ncd(x, y)


def gzip_alignment(bench_texts: Sequence[str], corpus_texts: Sequence[str], n_pairs: int = DEFAULT_N_PAIRS,
                   seed: int = 0, compresslevel: int = COMPRESSLEVEL) -> dict[str, Any]:
    """1 - mean NCD(doc, example) over seeded (example, doc) pairs.

    Every example is paired with the same number m = ceil(n_pairs / n_examples) of corpus documents, drawn
    without replacement (with replacement only if m exceeds the corpus size) from ``default_rng(seed)`` in
    example order; so the number of pairs is n_examples * m >= n_pairs. Returns the dataset value, the
    per-example mean NCD, the sample size and the parameters. Each document is deflated once (see the
    module docstring), so the cost grows with the documents' length plus the pairs' example length.
    """
    if not bench_texts or not corpus_texts:
        raise ValueError(f"gzip_alignment needs examples and documents, got {len(bench_texts)} and {len(corpus_texts)}")
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    m = math.ceil(n_pairs / len(bench_texts))
    rng = np.random.default_rng(seed)
    sizer = GzipSizer(compresslevel)
    pairs = np.stack([rng.choice(len(corpus_texts), size=m, replace=m > len(corpus_texts)) for _ in bench_texts])
    dist = np.empty(pairs.shape)
    for d in np.unique(pairs).tolist():  # pairs grouped by document: one deflate of each document
        doc = corpus_texts[d]
        prefix = _PrefixCompressor(doc, compresslevel)
        c_doc = sizer._cache.setdefault(doc, prefix.size())
        for i, j in zip(*np.nonzero(pairs == d)):
            c_x = sizer(bench_texts[i])
            dist[i, j] = (prefix.size(SEPARATOR + bench_texts[i]) - min(c_doc, c_x)) / max(c_doc, c_x)
    per_example = dist.mean(axis=1)
    return {
        "gzip_alignment": float(1.0 - per_example.mean()), "per_example_ncd": per_example,
        "n_pairs": m * len(bench_texts), "docs_per_example": m, "n_pairs_requested": n_pairs, "seed": seed,
        "compresslevel": compresslevel, "separator": SEPARATOR, "order": "doc + separator + example",
    }


# ------------------------------------------------------------------ registered measures
register(MeasureSpec(
    name="gzip_alignment", range=(-0.5, 1.0), family="compression", levels=("example", "dataset"), direction=1,
    description="1 - mean gzip normalized compression distance between benchmark examples and seeded random corpus documents (example: 1 - its mean NCD over m docs).",
    formula="1 - mean_(x,d) [C(d+' '+x) - min(C(x),C(d))] / max(C(x),C(d)),  C = len(gzip(utf8, level 9, mtime=0))",
    params={"compresslevel": 9, "separator": " ", "order": "doc first (its deflate state is reused)", "n_pairs": 1000},
))
