"""Print DuckDB SQL that creates the simassets views over a warehouse kept in S3-compatible storage.

    python deploy/s3/views.py s3://my-bucket/simassets > views.sql && duckdb simassets.duckdb < views.sql

The URL is what SIMASSETS_HOME points at (the warehouse is its ``warehouse/`` folder). DuckDB reads the
Parquet partitions with its httpfs extension; credentials come from the usual chain (AWS_* variables,
~/.aws, an instance role). For MinIO, Ceph or R2 pass ``--endpoint host:port`` (path-style URLs).
"""

from __future__ import annotations

import argparse

from simassets.core.schema import TABLES
from simassets.core.warehouse import sql_literal


def views_sql(url: str, endpoint: str | None = None) -> str:
    root = url.rstrip("/") + "/warehouse"
    secret = ["TYPE s3", "PROVIDER credential_chain"]
    if endpoint:
        secret += [f"ENDPOINT {sql_literal(endpoint)}", "URL_STYLE 'path'"]
    lines = ["INSTALL httpfs;", "LOAD httpfs;",
             f"CREATE OR REPLACE PERSISTENT SECRET simassets_s3 ({', '.join(secret)});"]
    lines += [f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet("
              f"{sql_literal(f'{root}/{name}/*/*.parquet')}, union_by_name = true);" for name in TABLES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="s3://bucket/prefix (the SIMASSETS_HOME of the runs)")
    p.add_argument("--endpoint", help="host:port of an S3-compatible service other than AWS")
    args = p.parse_args()
    print(views_sql(args.url, args.endpoint), end="")
