"""Where things live: the repository, the data root (read-only inputs) and the warehouse home."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Read-only input data (corpora, benchmarks, published results).

    ``SIMASSETS_DATA_ROOT`` overrides the default ``../shared/data`` beside the checkout.
    """
    env = os.environ.get("SIMASSETS_DATA_ROOT")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT.parent / "shared" / "data").resolve()


def catalog_dir() -> Path:
    """The folder holding ``catalog.toml`` and ``models.toml`` (``SIMASSETS_CATALOG_DIR`` overrides)."""
    env = os.environ.get("SIMASSETS_CATALOG_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


def home() -> Path:
    """The warehouse home: DuckDB file, Parquet tables, caches, Dagster instance.

    ``SIMASSETS_HOME`` moves the whole warehouse; the default is ``data/`` in the repository.
    """
    env = os.environ.get("SIMASSETS_HOME")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


def warehouse_dir() -> Path:
    return home() / "warehouse"


def cache_dir() -> Path:
    return home() / "cache"


def duckdb_path() -> Path:
    return home() / "simassets.duckdb"


def dagster_home() -> Path:
    return home() / "dagster_home"


def resolve_data_path(path: str | Path) -> Path:
    """Resolve a catalog path: absolute paths stay, relative ones are under the data root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else data_root() / p


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file atomically: ``write(fh)`` fills a unique temporary file in the same folder, which is
    fsynced and renamed into place (``os.replace``), so a reader (or a concurrent writer) never sees half a
    file; on any error the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
