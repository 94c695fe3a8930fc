"""The warehouse: one Parquet file per (table, profile, partition), and DuckDB views over them.

Runs never open the user-facing DuckDB file to write rows: each partition's rows are written to a
temporary file and renamed over the old one (atomic on POSIX), so a reader sees the old rows or the
new rows, never a mix, and a killed run leaves nothing partial.  ``data/simassets.duckdb`` only
holds views whose globs pick up new files without being rewritten; it is opened read-write only
when the view definitions change (they name this home's absolute path, so a moved or copied home gets its own),
and a held lock there is reported, not fatal; a damaged file is moved aside and rebuilt (it only holds views).

Every partition file has a seal beside it (``.<name>.seal``): an HMAC, under a key kept in the home outside the
warehouse folder, of the file's bytes and its place. A file whose seal is missing or wrong -- written by anything
but :meth:`Warehouse.write_partition`, e.g. a forged ``COPY ... TO`` -- has no trusted fingerprint, so the next
run recomputes it. User SQL runs in :meth:`Warehouse.sandbox`: SELECT only, file access limited to the warehouse
folder, no extensions, settings locked.

Where the files live is ``$SIMASSETS_WAREHOUSE``: ``<home>/warehouse`` by default, ``file:///path``, or
``s3://bucket/prefix`` (:class:`S3Files`: each partition one object, a PUT being atomic; DuckDB reads the bucket
through the same s3fs filesystem). Only :class:`LocalFiles` and :class:`S3Files` touch storage; the rest of this
module, and of the code, does not know which one it is.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
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
KEY_FILE = ".simassets-key"  # in the home, outside the warehouse folder (the SQL sandbox cannot read it)
SEAL_SUFFIX = ".seal"
TMP_MAX_AGE_S = 6 * 3600  # a writer's temporary file older than this belongs to a killed process
WAREHOUSE_ENV = "SIMASSETS_WAREHOUSE"  # file:///path (default: <home>/warehouse) or s3://bucket/prefix


class WarehouseError(RuntimeError):
    pass


class ReadOnlyError(WarehouseError):
    """User SQL that would write, change a setting or reach outside the warehouse."""


def _quote(value: str) -> str:
    return urllib.parse.quote(str(value), safe="-_.")


def partition_filename(keys: Mapping[str, str]) -> str:
    """File name for a partition: ``k1=v1__k2=v2.parquet`` (sorted keys, URL-quoted values)."""
    if not keys:
        return "all.parquet"
    return "__".join(f"{k}={_quote(v)}" for k, v in sorted(keys.items())) + ".parquet"


def partition_keys(path: Path) -> dict[str, str]:
    """The keys of a partition file (the inverse of :func:`partition_filename`)."""
    keys = {}
    for part in path.name.removesuffix(".parquet").split("__"):
        if "=" in part:
            k, v = part.split("=", 1)
            keys[k] = urllib.parse.unquote(v)
    return keys


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
    fingerprint: str | None  # None when the file carries none or its seal does not match (never trusted)
    info: dict[str, Any]
    rows: int
    sealed: bool = True


def seal_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{SEAL_SUFFIX}")


def _is_tmp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


class LocalFiles:
    """Partition files on a local (or mounted) filesystem: written to a hidden temporary name, fsynced and renamed
    into place, so a reader sees the old bytes or the new ones."""

    scheme = "file"

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, data: bytes, table: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            pause_point("replace", table)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def write_text(self, path: Path, text: str) -> None:
        paths.atomic_write_text(path, text)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def glob(self, root: Path, pattern: str) -> list[Path]:
        return sorted(root.glob(pattern)) if root.is_dir() else []

    def url(self, path: Path) -> str:
        return str(path)

    def allowed_prefix(self, root: Path) -> str:
        return str(root) + os.sep

    def attach(self, con: Any) -> None:
        """Make this storage readable from a DuckDB connection (local files need nothing)."""


class S3Files:
    """Partition files as objects of an S3-compatible bucket (AWS, MinIO, Ceph, R2; the tests use moto's server),
    through s3fs. A PUT is atomic (an object appears whole or not at all), so there is no temporary name. Paths are
    ``PurePosixPath("bucket/prefix/...")``. Endpoint from ``$AWS_ENDPOINT_URL_S3`` or ``$AWS_ENDPOINT_URL``,
    credentials from the usual AWS environment. DuckDB reads the bucket through this same filesystem (registered with
    the connection), so no httpfs extension is needed."""

    scheme = "s3"

    def __init__(self) -> None:
        import s3fs

        env = os.environ
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        # credentials read now (else at the first request, from whatever the environment is then); without them in
        # the environment, the AWS chain (profile, instance role) as usual
        creds = {"key": env["AWS_ACCESS_KEY_ID"], "secret": env.get("AWS_SECRET_ACCESS_KEY"),
                 "token": env.get("AWS_SESSION_TOKEN")} if env.get("AWS_ACCESS_KEY_ID") else {}
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        # no listing cache: other processes add partitions all the time; timeouts, so a dead endpoint fails a step
        # instead of hanging it (fsspec shares one instance per process for the same arguments)
        self.fs = s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False, **creds,
                                    client_kwargs={"region_name": region} if region else {},
                                    config_kwargs={"connect_timeout": 10, "read_timeout": 120})

    def read(self, path: PurePosixPath) -> bytes:
        return self.fs.cat_file(str(path))

    def write(self, path: PurePosixPath, data: bytes, table: str = "") -> None:
        pause_point("replace", table)
        self.fs.pipe_file(str(path), data)

    def write_text(self, path: PurePosixPath, text: str) -> None:
        self.fs.pipe_file(str(path), text.encode("utf-8"))

    def exists(self, path: PurePosixPath) -> bool:
        return bool(self.fs.exists(str(path)))

    def unlink(self, path: PurePosixPath) -> None:
        try:
            self.fs.rm_file(str(path))
        except FileNotFoundError:
            pass

    def glob(self, root: PurePosixPath, pattern: str) -> list[PurePosixPath]:
        return sorted(PurePosixPath(p) for p in self.fs.glob(f"{root}/{pattern}"))

    def url(self, path: PurePosixPath) -> str:
        return f"s3://{path}"

    def allowed_prefix(self, root: PurePosixPath) -> str:
        return f"s3://{root}/"

    def attach(self, con: Any) -> None:
        con.register_filesystem(self.fs)


def warehouse_location(home: Path) -> tuple[Path | PurePosixPath, LocalFiles | S3Files]:
    """Where the partitions live: ``$SIMASSETS_WAREHOUSE`` (``file:///path`` or ``s3://bucket/prefix``), by default
    ``<home>/warehouse``. The home (sealing key, caches, Dagster instance, DuckDB file) stays local either way."""
    uri = os.environ.get(WAREHOUSE_ENV, "").strip()
    if not uri:
        return home / "warehouse", LocalFiles()
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file" and parsed.path.startswith("/"):
        return Path(urllib.parse.unquote(parsed.path)).resolve(), LocalFiles()
    if parsed.scheme == "s3" and parsed.netloc:
        return PurePosixPath(parsed.netloc, *[p for p in parsed.path.split("/") if p]), S3Files()
    raise WarehouseError(f"${WAREHOUSE_ENV}={uri!r}: expected file:///absolute/path or s3://bucket[/prefix]")


class Warehouse:
    """Parquet partitions under ``home/warehouse`` (or ``$SIMASSETS_WAREHOUSE``) and DuckDB views in
    ``home/simassets.duckdb``."""

    def __init__(self, home: Path | None = None):
        self.home = (home or paths.home()).resolve()
        self.root, self.files = warehouse_location(self.home)
        self.db_path = self.home / "simassets.duckdb"
        self._schema_checked: set[str] = set()
        self._key: bytes | None = None

    # ------------------------------------------------------------------ seals
    def key(self) -> bytes:
        """This home's sealing key, created once (0600; linked into place, so concurrent first runs agree)."""
        if self._key is None:
            path = self.home / KEY_FILE
            if not path.exists():
                self.home.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
                try:
                    os.link(tmp, path)  # fails if another process won: then its key is the key
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink(missing_ok=True)
            text = path.read_text().strip()
            if len(text) != 64:
                raise WarehouseError(f"{path}: the sealing key is damaged (expected 64 hex digits); remove it and "
                                     "run `simassets verify --adopt` to re-seal the files you trust")
            self._key = bytes.fromhex(text)
        return self._key

    def _seal(self, path: Path, data: bytes) -> str:
        place = path.relative_to(self.root).as_posix().encode()
        return hmac.new(self.key(), place + b"\0" + hashlib.sha256(data).digest(), hashlib.sha256).hexdigest()

    def seal_ok(self, path: Path, data: bytes | None = None) -> bool:
        try:
            expected = self.files.read(seal_path(path)).decode("utf-8", "replace").strip()
            data = self.files.read(path) if data is None else data
        except OSError:
            return False
        return hmac.compare_digest(expected, self._seal(path, data))

    def partition_files(self) -> list[Path]:
        """Every stored partition file (not the schema files, seals or temporary files)."""
        return [p for p in self.files.glob(self.root, "*/*/*.parquet") if p.parent.name != SCHEMA_DIR
                and not p.name.startswith(".")]

    def unsealed(self) -> list[Path]:
        """Partition files whose seal is missing or does not match their bytes."""
        return [p for p in self.partition_files() if not self.seal_ok(p)]

    def adopt(self, files: list[Path]) -> None:
        """Seal ``files`` as they are (the user vouches for them: e.g. a warehouse written before seals)."""
        for path in files:
            self.files.write_text(seal_path(path), self._seal(path, self.files.read(path)))

    def sweep_tmp(self, max_age_s: float = TMP_MAX_AGE_S) -> list[Path]:
        """Remove writers' temporary files older than ``max_age_s`` (left by killed processes); returns them."""
        gone = []
        now = time.time()
        places = [self.home]
        if isinstance(self.files, LocalFiles) and not self.root.is_relative_to(self.home):
            places.append(self.root)  # a file:// warehouse elsewhere (an object store has no temporary files)
        for path in (p for place in places if place.is_dir() for p in place.glob("**/.*.tmp")):
            try:
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink()
                    gone.append(path)
            except OSError:
                continue
        return gone

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
        self._ensure_schema_file(spec)
        buf = io.BytesIO()
        pq.write_table(data, buf, compression="zstd")
        raw = buf.getvalue()
        self.files.write(path, raw, table)  # a crash before the seal below leaves a stale seal: recomputed
        self.files.write_text(seal_path(path), self._seal(path, raw))
        return StoredPartition(path, fingerprint, dict(info or {}), data.num_rows)

    def delete_partition(self, table: str, profile: str | None, keys: Mapping[str, str]) -> bool:
        path = self.partition_path(table, profile, keys)
        self.files.unlink(seal_path(path))
        if self.files.exists(path):
            self.files.unlink(path)
            return True
        return False

    def partitions_where(self, dimension: str, value: str) -> list[Path]:
        """Every stored partition, of any table and profile, whose keys include ``dimension=value`` (e.g.
        ``model=<id>``), and those of tables keyed by ``dataset_kind=dimension`` + ``dataset=value``."""
        return [p for p in self.partition_files()
                if (keys := partition_keys(p)).get(dimension) == value
                or (keys.get("dataset_kind") == dimension and keys.get("dataset") == value)]

    def delete_partitions_where(self, dimension: str, value: str) -> list[Path]:
        """Delete :meth:`partitions_where` (with their seals); returns the deleted files."""
        gone = self.partitions_where(dimension, value)
        self.delete_files(gone)
        return gone

    def delete_files(self, files: list[Path]) -> None:
        """Delete partition files and their seals (``simassets prune``: only ever on the user's word)."""
        for path in files:
            self.files.unlink(path)
            self.files.unlink(seal_path(path))

    def stored(self, table: str, profile: str | None, keys: Mapping[str, str]) -> StoredPartition | None:
        """The stored partition with its fingerprint, or None if there is none (or it is unreadable)."""
        path = self.partition_path(table, profile, keys)
        try:
            raw = self.files.read(path)
            pf = pq.ParquetFile(io.BytesIO(raw))
        except (OSError, pa.ArrowInvalid):
            return None
        meta = pf.schema_arrow.metadata or {}
        fp = meta.get(META_FINGERPRINT)
        try:
            info = json.loads(meta.get(META_INFO, b"{}") or b"{}")
        except json.JSONDecodeError:
            info = {}
        sealed = self.seal_ok(path, raw)
        return StoredPartition(path, fp.decode() if fp and sealed else None, info, pf.metadata.num_rows, sealed)

    def fingerprint(self, table: str, profile: str | None, keys: Mapping[str, str]) -> str | None:
        stored = self.stored(table, profile, keys)
        return stored.fingerprint if stored else None

    def read_partition(self, table: str, profile: str | None, keys: Mapping[str, str]) -> pd.DataFrame:
        path = self.partition_path(table, profile, keys)
        try:
            raw = self.files.read(path)
        except FileNotFoundError:
            raise WarehouseError(f"{table} has no partition {dict(keys)} for profile {profile!r} "
                                 f"({self.files.url(path)})") from None
        return pq.read_table(io.BytesIO(raw)).to_pandas()

    def glob(self, table: str) -> str:
        self.table(table)
        return self.files.url(self.root / table / "*" / "*.parquet")

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run SQL over the Parquet files (``{table}`` placeholders become read_parquet globs) in memory.

        Never touches the user-facing DuckDB file, so it cannot be blocked by a user's session.
        """
        con = self._memory_views()
        try:
            return con.execute(sql, params or []).fetchdf()
        finally:
            con.close()

    def _memory_views(self, config: Mapping[str, Any] | None = None):
        """An in-memory DuckDB connection with a view per table over this home's Parquet files."""
        import duckdb

        con = duckdb.connect(":memory:", config=dict(config or {}))
        try:
            self.files.attach(con)
            for name, table in TABLES.items():
                self._ensure_schema_file(table)
                con.execute(f"create view {name} as {self._view_select(name)}")
        except BaseException:
            con.close()
            raise
        return con

    # ------------------------------------------------------------------ user SQL
    def sandbox(self):
        """An in-memory DuckDB session for user SQL: this home's views, file access limited to the warehouse folder
        (the sealing key and the rest of the machine stay out of reach), no extensions, settings locked. Run user
        SQL through :meth:`user_query`, which also refuses every statement but SELECT (a COPY into the warehouse
        folder itself would otherwise be allowed)."""
        con = self._memory_views({"autoinstall_known_extensions": False, "autoload_known_extensions": False})
        try:
            con.execute(f"set allowed_directories = [{sql_literal(self.files.allowed_prefix(self.root))}]")
            con.execute("set enable_external_access = false")
            con.execute("set lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con

    def user_query(self, sql: str) -> pd.DataFrame:
        """Run one user SELECT in the :meth:`sandbox`; anything else raises :class:`ReadOnlyError`."""
        import duckdb

        con = self.sandbox()
        try:
            statements = con.extract_statements(sql)
            kinds = [st.type.name for st in statements]
            if not statements:
                raise ReadOnlyError("read-only: the query is empty")
            if refused := [k for k in kinds if k != "SELECT"]:
                raise ReadOnlyError(f"read-only: only SELECT runs here, not {', '.join(dict.fromkeys(refused))} "
                                    "(no writes, settings, pragmas, attachments or extensions)")
            if len(statements) > 1:
                raise ReadOnlyError(f"read-only: one SELECT at a time (got {len(statements)} statements)")
            return con.execute(statements[0]).fetchdf()
        except duckdb.PermissionException as exc:
            raise ReadOnlyError(f"read-only: files outside {self.root} are out of reach ({exc})") from exc
        finally:
            con.close()

    # ------------------------------------------------------------------ views
    def _ensure_schema_file(self, table: Table) -> None:
        """A zero-row file with the full schema, so every table's glob matches at least one file."""
        path = self.root / table.name / SCHEMA_DIR / "empty.parquet"
        if table.name in self._schema_checked:
            return
        try:
            same = pq.read_schema(io.BytesIO(self.files.read(path))).remove_metadata().equals(
                table.schema.remove_metadata())
        except (OSError, pa.ArrowInvalid):
            same = False
        if not same:  # rewritten when the schema gains a column, so the view shows it for old partitions too
            buf = io.BytesIO()
            pq.write_table(table.schema.empty_table(), buf)
            self.files.write(path, buf.getvalue())
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
        note = ""
        try:
            con = duckdb.connect(str(self.db_path))
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                return (f"views not refreshed: {self.db_path} is locked by another process ({exc}); run again when "
                        "it is closed")
            # damaged (it only holds views): keep it aside for inspection and build a new one
            aside = self.db_path.with_name(f"{self.db_path.name}.damaged-{datetime.now(UTC):%Y%m%dT%H%M%S}")
            os.replace(self.db_path, aside)
            self.db_path.with_name(self.db_path.name + ".wal").unlink(missing_ok=True)
            note = f" ({self.db_path} was damaged: {type(exc).__name__}; moved to {aside.name} and rebuilt)"
            con = duckdb.connect(str(self.db_path))
        try:
            self.files.attach(con)
            for sql in self.view_sql().values():
                con.execute(sql)
        finally:
            con.close()
        paths.atomic_write_text(stamp, json.dumps({"fingerprint": wanted, "home": str(self.home)}))
        return "views created" + note

    def connect_readonly(self):
        """A read-only connection to the user-facing database (creating the views first if needed)."""
        import duckdb

        self.ensure_views()  # also after the home moved or was copied (the views name its absolute path)
        con = duckdb.connect(str(self.db_path), read_only=True)
        self.files.attach(con)
        return con
