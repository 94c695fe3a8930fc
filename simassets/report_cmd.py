"""``simassets report``: a static HTML report of a profile's studies, from the warehouse.

    simassets report [--out DIR] [--profile quick|full] [--study NAME ...]

Writes ``DIR/index.html`` (default ``<home>/report/<profile>``): the answer first (accuracy against chance, per
study one sentence and one heatmap), then contamination, interventions and the published tables reproduced;
``DIR/study-<name>.html`` holds each study's evidence and ``DIR/setup.html`` the setup. Figures go to
``DIR/fig/`` (drawn, cached by their data) and ``DIR/img/`` (copied from the study assets). Open it in any
browser, from ``file://``; nothing is fetched. Reads the warehouse Parquet files, never the DuckDB file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``report`` on ``subparsers``; the parser's default ``func`` is :func:`run`."""
    p = subparsers.add_parser("report", help="write a static HTML report of the studies (tables, plots, caveats)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="DIR", help="output folder (default: <warehouse home>/report/<profile>)")
    p.add_argument("--profile", choices=("quick", "full"), default="quick")
    p.add_argument("--study", action="append", metavar="NAME", help="only these studies (repeatable; default: all)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the report; 0 on success, 2 on a bad catalog or study name (message on stderr)."""
    from simassets.core import paths
    from simassets.core.catalog import load_catalog
    from simassets.core.report import build_report
    from simassets.core.warehouse import Warehouse

    out = Path(args.out) if args.out else paths.home() / "report" / args.profile
    try:
        report = build_report(Warehouse(), load_catalog(), args.profile, out, args.study)
    except ValueError as exc:  # CatalogError is a ValueError
        print(f"simassets report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report.path} ({len(report.index_figures)} figures on the first page, {len(report.images)} in all, "
          f"{len(report.caveats)} caveats)")
    print(f"open file://{report.path.resolve()}")
    return 0
