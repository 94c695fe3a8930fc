"""Contamination against whole corpora: a suffix-array index per corpus (infini-gram), per-example longest match
and match coverage, and the estimated performance gain (accuracy on contaminated minus clean examples).

Units are normalized words (the normalization of :func:`simassets.core.measures.overlap.normalize_words`:
lower-case, punctuation deleted, whitespace collapsed). The index is built byte-level over each document as
``" " + " ".join(words) + " "``, so a byte match that starts at a space and ends at a space is exactly a run of
whole words: no tokenizer is needed, any script works, and infini-gram's byte (u8) engine answers the queries
(its u32 indexer cannot build on this machine: it allocates 32 GB for the token alphabet). Per example, the
longest match from every word is found by a vectorised search of the suffix array held in memory
(:meth:`CorpusIndex.match_lengths`); infini-gram's ``find`` gives counts and evidence documents.

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


class _Suffixes:
    """An index's bytes and suffix array in memory, searched for many queries at once with numpy.

    Each query gets the longest of its prefixes that occurs in the text: a vectorised binary search for its place
    in the suffix array (all queries in lockstep, 16 bytes compared per step), then the longest common prefix with
    the suffixes on either side of that place. Hand-written over infini-gram's ``find`` because each ``find`` starts
    a thread (23-70 us a lookup, ~2 lookups per word): 49x faster on the matching statistics, lengths identical
    (benchmarks/contamination.py)."""

    CAP = 256  # query bytes compared at first; a query that matches all of them is asked again with 4x as many
    CHUNK = 16  # bytes compared per step: most comparisons end within the first chunk or two

    def __init__(self, folder: Path):
        text = np.fromfile(folder / "tokenized.0", dtype=np.uint8)
        raw = np.fromfile(folder / "table.0", dtype=np.uint8)
        ratio = raw.size // max(text.size, 1)
        if not text.size or raw.size != ratio * text.size or ratio > 8:
            raise IndexError_(f"{folder}: table.0 ({raw.size} bytes) is not a suffix array of tokenized.0 "
                              f"({text.size} bytes)")
        if ratio in (4, 8):  # little-endian pointers of a native width: read as they are
            sa = raw.view("<u4" if ratio == 4 else "<u8")
        else:
            dtype = np.uint32 if ratio < 4 else np.uint64
            raw = raw.reshape(text.size, ratio)
            sa = np.zeros(text.size, dtype=dtype)
            for b in range(ratio):
                sa |= raw[:, b].astype(dtype) << dtype(8 * b)
        self.n, self.sa = text.size, sa
        self.text = np.append(text, np.zeros(3, dtype=np.uint8))  # past the end reads 0, below any query byte
        # every suffix's first three bytes, in suffix-array order: the search starts inside its bucket (~10 steps
        # fewer); all queries start with a space, so a bucket of fewer bytes says little. The keys are formed in
        # text order and gathered once (with three gathers, the mixture's index loaded 3.8x slower)
        t = self.text.astype(np.uint32)
        self.head = ((t[:-2] << 16) | (t[1:-1] << 8) | t[2:])[sa]

    def _lcp(self, pos: np.ndarray, buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Bytes in common between each query and the suffix at text position ``pos`` (at most its ``length``)."""
        lcp = np.zeros(pos.size, dtype=np.int64)
        todo, cols, off = np.arange(pos.size), np.arange(self.CHUNK), 0
        while todo.size:
            c = off + cols
            stop = ((self.text[np.minimum(pos[todo, None] + c, self.n)]
                     != buf[np.minimum(start[todo, None] + c, buf.size - 1)]) | (c >= length[todo, None]))
            ended = stop.any(axis=1)
            lcp[todo[ended]] = off + stop[ended].argmax(axis=1)
            todo, off = todo[~ended], off + self.CHUNK
        return lcp

    def longest_prefixes(self, buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """For each query ``buf[start:start + length]`` (at least 3 bytes): the bytes of its longest prefix that
        occurs in the text."""
        b = buf.astype(np.uint32)
        key = (b[start] << 16) | (b[start + 1] << 8) | b[start + 2]
        lo, hi = np.searchsorted(self.head, key, "left"), np.searchsorted(self.head, key, "right")
        active = np.flatnonzero(lo < hi)
        while active.size:  # lo: the first suffix >= the query
            mid = (lo[active] + hi[active]) // 2
            pos = self.sa[mid].astype(np.int64)
            lcp = self._lcp(pos, buf, start[active], length[active])
            at = np.minimum(start[active] + lcp, buf.size - 1)
            ge = (lcp >= length[active]) | (self.text[np.minimum(pos + lcp, self.n)] > buf[at])
            hi[active], lo[active] = np.where(ge, mid, hi[active]), np.where(ge, lo[active], mid + 1)
            active = active[lo[active] < hi[active]]
        best = np.zeros(start.size, dtype=np.int64)
        for side in (lo, lo - 1):  # the longest occurring prefix is shared with a neighbour of the query's place
            ok = np.flatnonzero((side >= 0) & (side < self.n))
            best[ok] = np.maximum(best[ok], self._lcp(self.sa[side[ok]].astype(np.int64), buf, start[ok], length[ok]))
        return best

    def match_lengths(self, texts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """``L[w]`` of every word of every text (see :meth:`CorpusIndex.match_lengths`)."""
        encoded = [[w.encode() for w in words] for words in texts]
        strings = [b" " + b" ".join(words) + b" " if words else b"" for words in encoded]
        buf = np.frombuffer(b"".join(strings) + b"\0\0", dtype=np.uint8)
        spaces = np.concatenate([[0], np.cumsum(buf == 32)])
        starts, ends, base = [], [], 0
        for words, string in zip(encoded, strings):  # a query per word: the text from the space before it
            starts += (base + np.cumsum([0] + [len(w) + 1 for w in words[:-1]])).tolist() if words else []
            ends += [base + len(string)] * len(words)
            base += len(string)
        start = np.array(starts, dtype=np.int64)
        full = np.array(ends, dtype=np.int64) - start
        best, todo, cap = np.zeros(start.size, dtype=np.int64), np.arange(start.size), self.CAP
        while todo.size:
            length = np.minimum(full[todo], cap)
            best[todo] = got = self.longest_prefixes(buf, start[todo], length)
            todo, cap = todo[(got >= length) & (length < full[todo])], cap * 4
        # a match of j whole words is the prefix " w1 ... wj ": j spaces after the first
        words = np.where(best > 0, spaces[start + best] - spaces[start + 1], 0)
        return np.split(words, np.cumsum([len(w) for w in texts])[:-1]) if texts else []


class CorpusIndex:
    """An index folder opened for queries: longest matches from the suffix array in memory (:class:`_Suffixes`),
    counts and evidence documents from infini-gram's C++ engine (byte level)."""

    def __init__(self, folder: Path | str, prefetch: bool = False):
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
        self._suffixes: _Suffixes | None = None  # loaded at the first match_lengths

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
        """``L[w]``: the number of whole words of the longest corpus match that starts at word ``w``."""
        return self.match_lengths_of([words])[0]

    def match_lengths_of(self, texts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """:meth:`match_lengths` of many texts at once (one vectorised search over all their words)."""
        if self._suffixes is None:
            self._suffixes = _Suffixes(self.folder)
        return self._suffixes.match_lengths(texts)

    def lookup_match_lengths(self, words: Sequence[str]) -> np.ndarray:
        """:meth:`match_lengths` by infini-gram ``find`` lookups, the reference the suffix search is tested against.

        Matching statistics over words: a match of ``L[w-1]`` words from ``w-1`` holds ``L[w-1] - 1`` words from
        ``w``, so each word starts from there and extends one word per lookup (about two lookups per word)."""
        k = len(words)
        out = np.zeros(k, dtype=np.int64)
        encoded = [w.encode() for w in words]
        length = 0
        for w in range(k):
            length = max(length - 1, 0)
            while w + length < k and int(self._find(encoded[w:w + length + 1])["cnt"]) > 0:
                length += 1
            out[w] = length
        return out

    def examples(self, texts: Sequence[str], thresholds: Sequence[int] = THRESHOLDS) -> list[ExampleMatch]:
        """:meth:`example` of many texts, their match lengths found together."""
        words = [normalize_words(text) for text in texts]
        return [self._match(w, lengths, thresholds) for w, lengths in zip(words, self.match_lengths_of(words))]

    def example(self, text: str, thresholds: Sequence[int] = THRESHOLDS) -> ExampleMatch:
        return self.examples([text], thresholds)[0]

    def _match(self, words: list[str], lengths: np.ndarray, thresholds: Sequence[int]) -> ExampleMatch:
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
