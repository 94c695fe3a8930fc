"""Embedding throughput: direct sentence-transformers vs the cached asset path, and cache speed-up.

Run: ``.venv/bin/python benchmarks/embeddings.py [--n 2000] [--repeats 1] [--device cpu]``.
Texts: C4 documents, then ARC-Easy questions, from the data root (distinct texts only, so both paths
do the same work). The model is loaded and warmed up before any timing. Targets: asset/direct
throughput ratio >= 0.9; a second, fully cached ``Embedder.embed`` >= 20x faster than the first.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from simassets.core import paths  # noqa: E402
from simassets.core.embeddings import Embedder  # noqa: E402


def load_texts(n: int) -> list[str]:
    """Up to ``n`` distinct non-empty texts: C4 documents, then ARC-Easy questions."""
    root = paths.data_root()
    sources = [(root / "corpora" / "c4_en.jsonl", "text"), (root / "benchmarks" / "gauntlet" / "arc_easy.jsonl", "query")]
    texts: dict[str, None] = {}
    for path, key in sources:
        with open(path, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                try:
                    text = json.loads(line)[key]
                except (json.JSONDecodeError, KeyError) as exc:
                    raise ValueError(f"{path}:{line_no}: no {key!r} field ({exc})") from exc
                if text.strip():
                    texts.setdefault(text)
                if len(texts) >= n:
                    return list(texts)
    raise ValueError(f"only {len(texts)} distinct texts under {root}, wanted {n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=1, help="best of this many timings per path")
    ap.add_argument("--chunk", type=int, default=250, help="texts per alternating timing chunk")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    texts = load_texts(args.n)
    with tempfile.TemporaryDirectory() as warm_dir:
        warm = Embedder(cache_root=Path(warm_dir), batch_size=args.batch_size, device=args.device)
        model = warm._get_model()  # the same (process-wide) model object the asset path uses
        model.encode(texts[:64], batch_size=args.batch_size, normalize_embeddings=True)  # warm-up
    print(f"model {warm.model_key} on {args.device}; {len(texts)} texts, "
          f"{sum(map(len, texts)) / len(texts):.0f} chars on average; torch threads: {_threads()}")

    # The machine may be shared: time the two paths on alternating chunks (alternating which goes
    # first) so that both see the same background load; sum over chunks, best of --repeats.
    direct_s, asset_s, cached_s = [], [], []
    for _ in range(args.repeats):
        d = a = 0.0
        with tempfile.TemporaryDirectory() as cache_dir:
            emb = Embedder(cache_root=Path(cache_dir), batch_size=args.batch_size, device=args.device)
            for i, start in enumerate(range(0, len(texts), args.chunk)):
                chunk = texts[start:start + args.chunk]
                for path in (("direct", "asset") if i % 2 == 0 else ("asset", "direct")):
                    t0 = time.perf_counter()
                    if path == "direct":
                        model.encode(chunk, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
                        d += time.perf_counter() - t0
                    else:
                        emb.embed(chunk)
                        a += time.perf_counter() - t0
                        assert emb.last_stats.misses == len(chunk), emb.last_stats
            fresh = Embedder(cache_root=Path(cache_dir), batch_size=args.batch_size, device=args.device)
            t0 = time.perf_counter()  # a new instance: the index is read back from the shard files
            fresh.embed(texts)
            cached_s.append(time.perf_counter() - t0)
            assert fresh.last_stats.hits == len(texts), fresh.last_stats
        direct_s.append(d)
        asset_s.append(a)

    n, d, a, c = len(texts), min(direct_s), min(asset_s), min(cached_s)
    print(f"direct SentenceTransformer.encode : {d:8.2f} s  {n / d:9.1f} texts/s")
    print(f"Embedder.embed, empty cache       : {a:8.2f} s  {n / a:9.1f} texts/s")
    print(f"throughput ratio asset/direct     : {d / a:8.3f}   (target >= 0.9)")
    print(f"Embedder.embed, all cached        : {c:8.3f} s  {n / c:9.0f} texts/s")
    print(f"cache speed-up vs first embed     : {a / c:8.0f}x  (target >= 20x; a new Embedder, shards read from disk)")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
