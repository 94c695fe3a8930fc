"""Contamination against whole corpora: a suffix-array index per corpus (infini-gram), per-example longest match
and match coverage, and the estimated performance gain (accuracy on contaminated minus clean examples).

Units are normalized words (the normalization of :func:`simassets.core.measures.overlap.normalize_words`:
lower-case, punctuation deleted, whitespace collapsed). The index is built byte-level over each document as
``" " + " ".join(words) + " "``, so a byte match that starts at a space and ends at a space is exactly a run of
whole words: no tokenizer is needed, any script works, and infini-gram's byte (u8) engine answers the queries
(its u32 indexer cannot build on this machine: it allocates 32 GB for the token alphabet). Per example, the
longest match from every word is found by matching statistics over ``find`` lookups (:meth:`CorpusIndex.match_lengths`).

Per example (the rendered input + gold continuation, what lm-eval scores), with ``L[w]`` the number of words of
the longest corpus match starting at word ``w``:

* ``longest_match`` = max_w L[w] (words), with its count in the corpus and one document holding it (evidence);
* ``match_coverage_n`` = share of the example's words inside some match of >= n words;
* contaminated at n = ``longest_match >= n`` (ConTAM's longest-match criterion, Singh et al. 2024).

Per benchmark x corpus: ``contaminated_fraction_n`` over examples; per model the gain
``acc(contaminated) - acc(clean)`` with a percentile bootstrap CI (examples resampled within each side).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from simassets.core.measures.overlap import normalize_words

THRESHOLDS = (8, 13, 25, 50)
UNIT = "normalized word"
FORMAT_VERSION = 1
SEP = b"\xff"  # infini-gram's document separator for u8 (never a byte of UTF-8 text)


class IndexError_(RuntimeError):
    """A corpus index that cannot be built or opened (the message names its folder)."""


def index_text(text: str) -> str:
    """The indexed form of a text: its normalized words between single spaces, with a space at each end."""
    words = normalize_words(text)
    return " " + " ".join(words) + " " if words else " "


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds and what building it cost."""

    n_docs: int
    n_words: int
    text_bytes: int  # the indexed (normalized) text
    index_bytes: int  # every file of the index folder
    build_seconds: float
    format_version: int = FORMAT_VERSION
    unit: str = UNIT


def _indexer() -> Path:
    import infini_gram

    binary = Path(infini_gram.__file__).parent / "rust_indexing"
    if not os.access(binary, os.X_OK):
        raise IndexError_(f"infini-gram's indexer {binary} is missing or not executable")
    return binary


def build_index(docs: Iterable[tuple[str, str]], out_dir: Path, threads: int = 1) -> IndexInfo:
    """Index ``(doc_id, text)`` pairs into ``out_dir`` (built in a temporary folder beside it and renamed into
    place, so a killed build leaves nothing half-made). infini-gram's indexer builds the suffix array."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        ids, offsets, n_words, pos = [], [], 0, 0
        with open(tmp / "tokenized.0", "wb") as fh:
            for doc_id, text in docs:
                body = index_text(text).encode("utf-8")
                offsets.append(pos)
                fh.write(SEP + body)
                pos += len(body) + 1
                ids.append(str(doc_id))
                n_words += body.count(b" ") - 1 if len(body) > 1 else 0
        if not ids:
            raise IndexError_(f"{out_dir}: no documents to index")
        (tmp / "offset.0").write_bytes(np.array(offsets, dtype=np.uint64).tobytes())
        (tmp / "doc_ids.json").write_text(json.dumps(ids))
        _suffix_array(tmp, pos, threads)
        size = sum(p.stat().st_size for p in tmp.iterdir())
        info = IndexInfo(len(ids), n_words, pos - len(ids), size, time.perf_counter() - start)
        (tmp / "info.json").write_text(json.dumps(asdict(info)))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        return info
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _suffix_array(folder: Path, size: int, threads: int) -> None:
    """infini-gram's three indexing steps (make-part, merge, concat) on ``tokenized.0``, as its indexing.py runs
    them, without its ``os.chdir`` (this runs inside a long-lived process)."""
    binary, data = _indexer(), folder / "tokenized.0"
    ratio = max(1, int(np.ceil(np.log2(max(size, 2)) / 8)))  # bytes per suffix-array pointer
    parts, merged = folder / "parts", folder / "merged"
    parts.mkdir()
    merged.mkdir()
    steps = [
        ["make-part", "--data-file", data, "--parts-dir", parts, "--start-byte", 0, "--end-byte", size,
         "--ratio", ratio, "--token-width", 1],
        ["merge", "--data-file", data, "--parts-dir", parts, "--merged-dir", merged, "--num-threads", threads,
         "--hacksize", 100000, "--ratio", ratio, "--token-width", 1],
        ["concat", "--data-file", data, "--merged-dir", merged, "--merged-file", folder / "table.0",
         "--num-threads", threads, "--ratio", ratio, "--token-width", 1],
    ]
    for step in steps:
        done = subprocess.run([str(binary), *map(str, step)], capture_output=True, text=True)
        if done.returncode != 0:
            raise IndexError_(f"{folder}: infini-gram {step[0]} failed ({done.returncode}): {done.stderr[-400:]}")
    shutil.rmtree(parts)
    shutil.rmtree(merged)


@dataclass(frozen=True)
class ExampleMatch:
    """One example against one index."""

    n_words: int
    longest: int  # words
    longest_count: int  # occurrences of the longest match in the corpus
    evidence: str  # the matched words
    evidence_doc_id: str | None  # one document holding them
    coverage: dict[int, float]  # threshold -> share of words inside a match of >= threshold words
    match_lengths: np.ndarray  # L[w]: words of the longest match starting at word w


class CorpusIndex:
    """An index folder opened for queries (infini-gram's C++ engine, byte level)."""

    #: word sequences whose answer a :class:`CorpusIndex` keeps (then it starts over): ~100 bytes each
    MEMO_LIMIT = 2_000_000
    PROBE = 4  # words of the spans has_match looks up before whole windows

    def __init__(self, folder: Path | str, prefetch: bool = False, memo: bool = True):
        from infini_gram.engine import InfiniGramEngine

        self.folder = Path(folder)
        try:
            self.info = IndexInfo(**json.loads((self.folder / "info.json").read_text()))
            self.doc_ids: list[str] = json.loads((self.folder / "doc_ids.json").read_text())
        except (OSError, ValueError, TypeError) as exc:
            raise IndexError_(f"{self.folder}: not a simassets corpus index ({type(exc).__name__}: {exc}); build "
                              "it with simassets (corpus_index) or point index_dir at one") from exc
        if self.info.format_version != FORMAT_VERSION:
            raise IndexError_(f"{self.folder}: index format {self.info.format_version}, expected {FORMAT_VERSION}")
        # eos 0 / vocabulary 255: byte 0 never occurs in the normalized text, byte 255 is the separator.
        # infini-gram's page prefetching (on by default) costs more than it saves on an index the page cache holds:
        # a lookup takes ~150 us with it and ~23 us without (benchmarks/contamination.py); answers are the same.
        depths = {} if prefetch else {"ds_prefetch_depth": 0, "sa_prefetch_depth": 0, "od_prefetch_depth": 0}
        self.engine = InfiniGramEngine(index_dir=str(self.folder), eos_token_id=0, vocab_size=255, version=4,
                                       token_dtype="u8", **depths)
        # the same word sequences are asked again and again (an answer's options, a subject's header, the short
        # prefixes every example starts with): 26-48 % of the full profile's lookups repeat within one benchmark
        self._memo: dict[tuple[bytes, ...], bool] | None = {} if memo else None

    def _find(self, words: Sequence[bytes]) -> dict:
        """infini-gram's ``find`` of ``words`` as whole words (a space on each side)."""
        return self.engine.find(list(b" " + b" ".join(words) + b" "))

    def locate(self, words: Sequence[str]) -> tuple[int, str | None]:
        """One lookup: how often ``words`` occur as whole words, and the id of the first document (in suffix-array
        order) that holds them."""
        found = self._find([w.encode() for w in words])
        for shard, (lo, hi) in enumerate(found["segment_by_shard"]):
            if hi > lo:
                doc = self.engine.get_doc_by_rank(s=shard, rank=lo, max_disp_len=1)["doc_ix"]
                return int(found["cnt"]), self.doc_ids[int(doc)]
        return 0, None

    def count(self, words: Sequence[str]) -> int:
        return self.locate(words)[0]

    def doc_with(self, words: Sequence[str]) -> str | None:
        return self.locate(words)[1]

    def match_lengths(self, words: Sequence[str]) -> np.ndarray:
        """``L[w]``: the number of whole words of the longest corpus match that starts at word ``w``.

        Matching statistics over words: a match of ``L[w-1]`` words from ``w-1`` holds ``L[w-1] - 1`` words from
        ``w``, so each word starts from there and extends one word per suffix-array lookup (about two lookups per
        word). Hand-written over infini-gram's ``find`` rather than its byte-level ``creativity``, which searches
        from every byte: 5-10x faster on these texts (benchmarks/contamination.py)."""
        k = len(words)
        out = np.zeros(k, dtype=np.int64)
        encoded = [w.encode() for w in words]
        length = 0
        for w in range(k):
            length = max(length - 1, 0)
            while w + length < k and self._occurs(encoded[w:w + length + 1]):
                length += 1
            out[w] = length
        return out

    def has_match(self, words: Sequence[str], n: int) -> bool:
        """Whether some span of ``n`` consecutive words occurs in the corpus, i.e. ``max(match_lengths) >= n``.

        A window occurs only if every span inside it does. Each ``n``-word window holds exactly one ``PROBE``-word
        span that starts at a multiple of ``n - PROBE + 1``, so those spans are looked up first, and only the windows
        around a span that occurs are looked up themselves. On word-shuffled text (the negative control), where
        hardly any probe occurs, that is about one lookup per ``n - PROBE + 1`` words instead of one per word."""
        encoded = [w.encode() for w in words]
        k, m = len(encoded), min(self.PROBE, n)
        stride = n - m + 1
        for p in range(0, k - m + 1, stride):
            if self._occurs(encoded[p:p + m]) and any(
                    self._occurs(encoded[w:w + n]) for w in range(max(p - stride + 1, 0), min(p, k - n) + 1)):
                return True
        return False

    def _occurs(self, words: Sequence[bytes]) -> bool:
        if self._memo is None:
            return int(self._find(words)["cnt"]) > 0
        key = tuple(words)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= self.MEMO_LIMIT:
                self._memo.clear()
            found = self._memo[key] = int(self._find(words)["cnt"]) > 0
        return found

    def example(self, text: str, thresholds: Sequence[int] = THRESHOLDS) -> ExampleMatch:
        words = normalize_words(text)
        lengths = self.match_lengths(words)
        if not len(lengths) or lengths.max() == 0:
            return ExampleMatch(len(words), 0, 0, "", None, {n: 0.0 for n in thresholds}, lengths)
        w = int(np.argmax(lengths))
        span = words[w:w + int(lengths[w])]
        coverage = {}
        for n in thresholds:
            mark = np.zeros(len(words) + 1, dtype=np.int64)
            for s in np.flatnonzero(lengths >= n):
                mark[s] += 1
                mark[s + lengths[s]] -= 1
            coverage[n] = float((np.cumsum(mark)[:-1] > 0).mean())
        count, doc = self.locate(span)
        return ExampleMatch(len(words), int(lengths[w]), count, " ".join(span), doc, coverage, lengths)


def contamination_gain(correct: np.ndarray, contaminated: np.ndarray, n_boot: int = 1000,
                       seed: int = 0) -> dict[str, float]:
    """Accuracy on contaminated minus clean examples, with a 95% percentile bootstrap CI (each side resampled
    on its own) and n per side. Undefined (NaN) when a side is empty."""
    correct, contaminated = np.asarray(correct, dtype=float), np.asarray(contaminated, dtype=bool)
    a, b = correct[contaminated], correct[~contaminated]
    out = {"n_contaminated": int(a.size), "n_clean": int(b.size), "acc_contaminated": float(a.mean()) if a.size
           else float("nan"), "acc_clean": float(b.mean()) if b.size else float("nan")}
    if not a.size or not b.size:
        return out | {"gain": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    boots = (rng.choice(a, size=(n_boot, a.size)).mean(axis=1) - rng.choice(b, size=(n_boot, b.size)).mean(axis=1))
    low, high = np.percentile(boots, [2.5, 97.5])
    return out | {"gain": float(a.mean() - b.mean()), "ci_low": float(low), "ci_high": float(high)}


def shuffled_words(text: str, seed: int) -> list[str]:
    """The negative control: the example's normalized words in a seeded random order."""
    words = normalize_words(text)
    return [words[i] for i in np.random.default_rng(seed).permutation(len(words))]
