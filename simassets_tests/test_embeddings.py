"""Embedding cache (real all-MiniLM-L6-v2, offline) and the nearest-neighbour / centroid measures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simassets.core.embeddings import Embedder, get_embedder, resolve_model
from simassets.core.measures.embedding import centroid_cosine, dataset_measures, nearest_neighbours

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "The cat sat on the mat.",
         "A kitten was sitting on a rug.", "Quantum chromodynamics describes the strong force."]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every batch of texts that reaches the model."""
    calls: list[list[str]] = []
    original = Embedder._encode

    def spy(self: Embedder, texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return original(self, texts)

    monkeypatch.setattr(Embedder, "_encode", spy)
    return calls


def test_cache_round_trip(tmp_path: Path, counted: list[list[str]]) -> None:
    emb = Embedder(cache_root=tmp_path)
    first = emb.embed(TEXTS)
    assert first.shape == (5, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert counted == [[TEXTS[0], TEXTS[1], TEXTS[3], TEXTS[4]]]  # the duplicate embedded once
    assert (emb.last_stats.hits, emb.last_stats.misses, emb.last_stats.n_texts) == (0, 4, 5)
    np.testing.assert_array_equal(first[0], first[2])
    # the cached vectors are the model's own output, and they are meaningful
    direct = emb._get_model().encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(first, direct, atol=1e-5)
    assert first[0] @ first[3] > 0.5 > first[0] @ first[4]

    second = emb.embed(TEXTS)
    assert len(counted) == 1  # the model was not called again
    assert (emb.last_stats.hits, emb.last_stats.misses) == (4, 0)
    np.testing.assert_array_equal(first, second)


def test_cache_shared_across_instances_and_processes(tmp_path: Path, counted: list[list[str]]) -> None:
    a = Embedder(cache_root=tmp_path)
    vec = a.embed(TEXTS[:2])
    b = Embedder(cache_root=tmp_path)  # a fresh index, reading the shards from disk
    got = b.embed([TEXTS[1], TEXTS[0]])
    assert b.last_stats.hits == 2 and b._model is None  # served without even loading the model
    np.testing.assert_array_equal(got, vec[::-1])
    b.embed([TEXTS[0], TEXTS[3]])  # b computes one new text ...
    assert (b.last_stats.hits, b.last_stats.misses) == (1, 1)
    a.embed([TEXTS[3]])  # ... which a picks up from b's shard
    assert a.last_stats.hits == 1 and counted == [TEXTS[:2], [TEXTS[3]]]

    np.save(tmp_path / "expected.npy", a.embed(TEXTS[:2] + [TEXTS[3]]))
    script = (
        "import sys, numpy as np; from simassets.core.embeddings import Embedder\n"
        f"e = Embedder(cache_root={str(tmp_path)!r}); v = e.embed({TEXTS[:2] + [TEXTS[3]]!r})\n"
        f"assert np.array_equal(v, np.load({str(tmp_path / 'expected.npy')!r})), 'vectors differ'\n"
        "print(e.last_stats.hits, e.last_stats.misses, e._model is None)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "0", "True"]


def test_cache_ignores_partial_files(tmp_path: Path) -> None:
    emb = Embedder(cache_root=tmp_path)
    emb.cache_dir.mkdir(parents=True)
    (emb.cache_dir / ".tmp-shard-0-0-dead.npz").write_bytes(b"half a shard")
    emb._index.refresh()  # must not try to read the temporary file
    assert emb._index.vectors == {}


def test_model_key_identity(tmp_path: Path) -> None:
    default = Embedder(cache_root=tmp_path)
    short = Embedder(cache_root=tmp_path, max_seq_length=128)
    assert short.model_key != default.model_key and short.cache_dir != default.cache_dir
    assert short.params()["max_seq_length"] == 128 and default.params()["max_seq_length"] == 256
    assert Embedder(cache_root=tmp_path, max_seq_length=256).model_key == default.model_key
    # the packaged folder and the hub name are the same model, so they share the cache
    aliases = ("sentence-transformers/all-MiniLM-L6-v2", default.source.location)
    assert [Embedder(m, cache_root=tmp_path).model_key for m in aliases] == [default.model_key] * 2
    assert resolve_model("org/some-model").is_local is False
    assert get_embedder(cache_root=tmp_path) is get_embedder(cache_root=tmp_path)


def test_embed_rejects_bad_input(tmp_path: Path) -> None:
    emb = Embedder(cache_root=tmp_path)
    with pytest.raises(TypeError, match="single string"):
        emb.embed("a text")
    with pytest.raises(TypeError, match="text 1 is int"):
        emb.embed(["ok", 3])  # type: ignore[list-item]


# ---------------------------------------------------------------------- nearest neighbours / centroid
BENCH = np.array([[1.0, 0.0], [0.0, 1.0]])
CORPUS = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])  # cosines: b0 -> (1, .6, -1), b1 -> (0, .8, 0)


def test_nearest_neighbours_hand_computed() -> None:
    nb = nearest_neighbours(BENCH, CORPUS, k=2)
    np.testing.assert_allclose(nb.max_cosine, [1.0, 0.8], atol=1e-6)
    np.testing.assert_allclose(nb.topk_cosine, [(1 + 0.6) / 2, (0.8 + 0) / 2], atol=1e-6)
    np.testing.assert_array_equal(nb.nearest_index, [0, 1])
    assert nb.mean_max_cosine == pytest.approx(0.9) and nb.mean_topk_cosine == pytest.approx(0.6)


def test_topk_larger_than_corpus_is_clipped() -> None:
    nb = nearest_neighbours(BENCH, CORPUS, k=10)
    assert (nb.k, nb.k_requested) == (3, 10)
    np.testing.assert_allclose(nb.topk_cosine, [(1 + 0.6 - 1) / 3, 0.8 / 3], atol=1e-6)


def test_centroid_cosine_hand_computed() -> None:
    # means (.5, .5) and (.2, .8/3): cosine = (0.6 + 0.8) / (sqrt(2) * 1)
    assert centroid_cosine(BENCH, CORPUS) == pytest.approx(1.4 / np.sqrt(2), abs=1e-6)
    assert centroid_cosine(CORPUS, CORPUS) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="zero vector"):
        centroid_cosine(np.array([[1.0, 0.0], [-1.0, 0.0]]), CORPUS)
    got = dataset_measures(BENCH, CORPUS, k=2)
    assert got["max_cosine"] == pytest.approx(0.9) and got["k"] == 2


def test_blockwise_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    b = rng.normal(size=(37, 3))
    c = rng.normal(size=(23, 3))
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    sims = b @ c.T
    small = nearest_neighbours(b, c, k=4, block_elements=50)  # blocks of 2 rows
    np.testing.assert_allclose(small.max_cosine, sims.max(axis=1), atol=1e-6)
    np.testing.assert_allclose(small.topk_cosine, np.sort(sims, axis=1)[:, -4:].mean(axis=1), atol=1e-6)
    np.testing.assert_array_equal(small.nearest_index, sims.argmax(axis=1))
    np.testing.assert_allclose(nearest_neighbours(b, c, k=4).topk_cosine, small.topk_cosine, atol=1e-7)


@pytest.mark.parametrize("bench, corpus, k, message", [
    (np.zeros((0, 2)), CORPUS, 1, "benchmark embeddings are empty"),
    (BENCH, np.zeros((0, 2)), 1, "corpus embeddings are empty"),
    (BENCH, np.ones((2, 3)) / np.sqrt(3), 1, "dim 3, expected 2"),
    (BENCH * 2, CORPUS, 1, "L2-normalised; row 0"),
    (BENCH, CORPUS, 0, "k must be >= 1"),
])
def test_neighbours_bad_input(bench: np.ndarray, corpus: np.ndarray, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nearest_neighbours(bench, corpus, k)


def test_unknown_share_counts_the_pieces_the_model_cannot_read(tmp_path: Path) -> None:
    """MiniLM's English WordPiece vocabulary reads Thai as [UNK]s; English and accented Latin text it reads."""
    e = Embedder(cache_root=tmp_path)
    thai, n_thai = e.unknown_share(["แม่ของฉัน ทำอาหารเย็น ให้ครอบครัว", "ผู้ชาย เปิด ก๊อกน้ำ"])
    assert n_thai > 0 and thai > 0.5
    english, n_english = e.unknown_share(TEXTS)
    assert english == 0.0 and n_english > 20
    assert e.unknown_share(["Naine pani käe külmetama."])[0] == 0.0  # Estonian: Latin script, known pieces
    mixed, _ = e.unknown_share(["The cat sat on the mat.", "แม่ของฉัน"])
    assert 0.0 < mixed < thai
    assert e._model is None  # the tokenizer alone: no model loaded for the check
    assert e.unknown_share([]) == (0.0, 0)


@pytest.mark.slow
def test_benchmark_embeddings_warn_where_the_embedder_cannot_read_the_language(tiny_study) -> None:
    """XCOPA-th: the partition is stored, and its check names the unknown-token share; Estonian passes."""
    import dagster as dg

    from simassets.core.warehouse import Warehouse
    from simassets_tests.conftest import add_partitions, materialize

    catalog = Path(os.environ["SIMASSETS_CATALOG_DIR"]) / "catalog.toml"
    catalog.write_text(catalog.read_text() + '''
[benchmarks.xcopa_th]
kind = "hf_mirror"
path = "benchmarks/hf/cambridgeltl__xcopa/th"
lm_eval_task = "xcopa_th"
split = "validation"
category = "multilingual"
language = "th"
''')
    with dg.instance_for_test() as instance:
        add_partitions(instance, benchmark=["xcopa_th", "xcopa_et"])
        outcomes = {}
        for benchmark in ("xcopa_th", "xcopa_et"):
            result = materialize(["benchmark_examples", "benchmark_embeddings"], benchmark, instance)
            assert result.success
            outcomes[benchmark] = next(e.event_specific_data for e in result.all_events
                                       if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
                                       and e.event_specific_data.check_name == "embedder_reads_text")
    assert outcomes["xcopa_et"].passed
    th = outcomes["xcopa_th"]
    assert not th.passed and th.severity == dg.AssetCheckSeverity.WARN
    assert th.metadata["failed_partitions"].value == "xcopa_th"
    assert "failed_partitions" not in outcomes["xcopa_et"].metadata
    failed = th.metadata["failed"].value["xcopa_th"]
    assert failed["unknown_token_share"] > 0.5 and failed["embedding_model"] == "all-MiniLM-L6-v2"
    assert len(Warehouse().read_partition("benchmark_embeddings", "quick", {"benchmark": "xcopa_th"})) == 10
