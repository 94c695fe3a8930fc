"""Stable hashes: sha256 for content identity, xxhash64 for seeded sampling. Never Python's hash()."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import xxhash


def sha256_text(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes: the identity of a text everywhere (caches, rows)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (parameters, upstream fingerprints, versions)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def seeded_hash64(seed: int | str, key: str) -> int:
    """A 64-bit stable hash of ``key`` under ``seed``: the order used for seeded sampling."""
    return xxhash.xxh64_intdigest(key.encode("utf-8"), seed=int(xxhash.xxh64_intdigest(str(seed).encode())) & 0xFFFFFFFFFFFFFFFF)
