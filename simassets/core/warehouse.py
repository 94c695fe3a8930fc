"""The warehouse: one Parquet file per (table, profile, partition), and DuckDB views over them.

Runs never open the user-facing DuckDB file to write rows: each partition's rows are written to a
temporary file and renamed over the old one (atomic on POSIX), so a reader sees the old rows or the
new rows, never a mix, and a killed run leaves nothing partial.  ``data/simassets.duckdb`` only
holds views whose globs pick up new files without being rewritten; it is opened read-write only
when the view definitions change, and a held lock there is reported, not fatal.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simassets.core import paths
from simassets.core.hashing import fingerprint as _fingerprint
from simassets.core.schema import TABLES, Table

META_FINGERPRINT = b"simassets.fingerprint"
META_INFO = b"simassets.info"
SCHEMA_DIR = "_schema"


class WarehouseError(RuntimeError):
    pass


def _quote(value: str) -> str:
    return urllib.parse.quote(str(value), safe="-_.")


def partition_filename(keys: Mapping[str, str]) -> str:
    """File name for a partition: ``k1=v1__k2=v2.parquet`` (sorted keys, URL-quoted values)."""
    if not keys:
        return "all.parquet"
    return "__".join(f"{k}={_quote(v)}" for k, v in sorted(keys.items())) + ".parquet"


def pause_point(point: str, table: str) -> None:
    """Fault-injection hook for tests: with ``SIMASSETS_PAUSE_AT=<point>:<table>`` the process writes the
    file named by ``SIMASSETS_PAUSE_FILE`` and sleeps there (so a test can SIGKILL it at a known place)."""
    if os.environ.get("SIMASSETS_PAUSE_AT") != f"{point}:{table}":
        return
    if marker := os.environ.get("SIMASSETS_PAUSE_FILE"):
        Path(marker).write_text(f"{os.getpid()} {point}:{table}\n")
    time.sleep(float(os.environ.get("SIMASSETS_PAUSE_SECONDS", "600")))


def sql_literal(value: str) -> str:
    """A SQL string literal with quotes escaped (names never reach SQL unescaped)."""
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class StoredPartition:
    path: Path
    fingerprint: str | None
    info: dict[str, Any]
    rows: int


class Warehouse:
    """Parquet partitions under ``home/warehouse`` and DuckDB views in ``home/simassets.duckdb``."""

    def __init__(self, home: Path | None = None):
        self.home = (home or paths.home()).resolve()
        self.root = self.home / "warehouse"
        self.db_path = self.home / "simassets.duckdb"
        self._schema_checked: set[str] = set()

    # ------------------------------------------------------------------ files
    def table(self, name: str) -> Table:
        try:
            return TABLES[name]
        except KeyError:
            raise WarehouseError(f"unknown table {name!r}; known: {sorted(TABLES)}") from None

    def partition_path(self, table: str, profile: str | None, keys: Mapping[str, str]) -> Path:
        self.table(table)
        folder = self.root / table / (profile or "_")
        return folder / partition_filename(keys)

    def _coerce(self, table: Table, df: pd.DataFrame, profile: str | None) -> pa.Table:
        df = df.copy()
        cols = [c for c, _, _ in table.columns]
        if "profile" in cols and "profile" not in df:
            df["profile"] = profile
        if "created_at" in cols and "created_at" not in df:
            df["created_at"] = pd.Timestamp(datetime.now(UTC))
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise WarehouseError(f"table {table.name}: rows lack column(s) {missing}")
        extra = [c for c in df.columns if c not in cols]
        if extra:
            raise WarehouseError(f"table {table.name}: unexpected column(s) {extra}")
        try:
            return pa.Table.from_pandas(df[cols], schema=table.schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise WarehouseError(f"table {table.name}: rows do not fit the schema: {exc}") from exc

    def write_partition(
        self,
        table: str,
        profile: str | None,
        keys: Mapping[str, str],
        rows: pd.DataFrame,
        fingerprint: str,
        info: Mapping[str, Any] | None = None,
    ) -> StoredPartition:
        """Atomically replace one partition's rows (tmp file + ``os.replace``); nothing else is touched."""
        spec = self.table(table)
        data = self._coerce(spec, rows, profile)
        meta = dict(data.schema.metadata or {})
        meta[META_FINGERPRINT] = fingerprint.encode()
        meta[META_INFO] = json.dumps(dict(info or {}), default=str).encode()
        data = data.replace_schema_metadata(meta)
        path = self.partition_path(table, profile, keys)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_schema_file(spec)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(data, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            pause_point("replace", table)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return StoredPartition(path, fingerprint, dict(info or {}), data.num_rows)

    def delete_partition(self, table: str, profile: str | None, keys: Mapping[str, str]) -> bool:
        path = self.partition_path(table, profile, keys)
        if path.exists():
            path.unlink()
            return True
        return False

    def delete_partitions_where(self, dimension: str, value: str) -> list[Path]:
        """Delete every stored partition, of any table and profile, whose keys include ``dimension=value``
        (e.g. ``model=<id>`` when a model leaves the registry), and those of tables keyed by
        ``dataset_kind=dimension`` + ``dataset=value`` (``dataset_diversity``); returns the deleted files."""
        wanted = f"{dimension}={_quote(value)}"
        as_dataset = {f"dataset_kind={_quote(dimension)}", f"dataset={_quote(value)}"}
        gone = []
        for path in sorted(self.root.glob("*/*/*.parquet")) if self.root.is_dir() else []:
            parts = set(path.name.removesuffix(".parquet").split("__"))
            if path.parent.name != SCHEMA_DIR and (wanted in parts or as_dataset <= parts):
                path.unlink(missing_ok=True)
                gone.append(path)
        return gone

    def stored(self, table: str, profile: str | None, keys: Mapping[str, str]) -> StoredPartition | None:
        """The stored partition with its fingerprint, or None if there is none (or it is unreadable)."""
        path = self.partition_path(table, profile, keys)
        if not path.exists():
            return None
        try:
            pf = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid):
            return None
        meta = pf.schema_arrow.metadata or {}
        fp = meta.get(META_FINGERPRINT)
        info = json.loads(meta.get(META_INFO, b"{}") or b"{}")
        return StoredPartition(path, fp.decode() if fp else None, info, pf.metadata.num_rows)

    def fingerprint(self, table: str, profile: str | None, keys: Mapping[str, str]) -> str | None:
        stored = self.stored(table, profile, keys)
        return stored.fingerprint if stored else None

    def read_partition(self, table: str, profile: str | None, keys: Mapping[str, str]) -> pd.DataFrame:
        path = self.partition_path(table, profile, keys)
        if not path.exists():
            raise WarehouseError(f"{table} has no partition {dict(keys)} for profile {profile!r} ({path})")
        return pq.read_table(path).to_pandas()

    def glob(self, table: str) -> str:
        self.table(table)
        return str(self.root / table / "*" / "*.parquet")

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run SQL over the Parquet files (``{table}`` placeholders become read_parquet globs) in memory.

        Never touches the user-facing DuckDB file, so it cannot be blocked by a user's session.
        """
        import duckdb

        con = duckdb.connect(":memory:")
        try:
            for name in TABLES:
                self._ensure_schema_file(TABLES[name])
                con.execute(f"create view {name} as {self._view_select(name)}")
            return con.execute(sql, params or []).fetchdf()
        finally:
            con.close()

    # ------------------------------------------------------------------ views
    def _ensure_schema_file(self, table: Table) -> None:
        """A zero-row file with the full schema, so every table's glob matches at least one file."""
        path = self.root / table.name / SCHEMA_DIR / "empty.parquet"
        if table.name in self._schema_checked:
            return
        if path.exists() and pq.read_schema(path).remove_metadata().equals(table.schema.remove_metadata()):
            self._schema_checked.add(table.name)
            return  # rewritten when the schema gains a column, so the view shows it for old partitions too
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".empty.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        pq.write_table(table.schema.empty_table(), tmp)
        os.replace(tmp, path)
        self._schema_checked.add(table.name)

    def _view_select(self, name: str) -> str:
        return f"select * from read_parquet({sql_literal(self.glob(name))}, union_by_name = true)"

    def view_sql(self) -> dict[str, str]:
        return {name: f"create or replace view {name} as {self._view_select(name)}" for name in TABLES}

    def ensure_views(self) -> str:
        """(Re)create the views in the DuckDB file if their definitions changed.

        Returns a short status; a lock held by another process is reported, not raised, because
        the views only need refreshing when the schema changes.
        """
        import duckdb

        for table in TABLES.values():
            self._ensure_schema_file(table)
        wanted = _fingerprint(self.view_sql())
        stamp = self.home / ".views.json"
        if self.db_path.exists() and stamp.exists():
            try:
                if json.loads(stamp.read_text()).get("fingerprint") == wanted:
                    return "views up to date"
            except (OSError, json.JSONDecodeError):
                pass
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(self.db_path))
        except duckdb.IOException as exc:
            return f"views not refreshed: {self.db_path} is locked by another process ({exc}); run again when it is closed"
        try:
            for sql in self.view_sql().values():
                con.execute(sql)
        finally:
            con.close()
        paths.atomic_write_text(stamp, json.dumps({"fingerprint": wanted}))
        return "views created"

    def connect_readonly(self):
        """A read-only connection to the user-facing database (creating the views first if needed)."""
        import duckdb

        if not self.db_path.exists():
            self.ensure_views()
        return duckdb.connect(str(self.db_path), read_only=True)
