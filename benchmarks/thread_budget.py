"""Two step processes side by side, with and without the thread budget on numpy/scipy/sklearn.

A step process of ``simassets run`` or of a UI run computes one asset's partitions while another process does the
same on the other core. numpy's and scipy's OpenBLAS (and scikit-learn's OpenMP) start with one thread per core,
so two such processes oversubscribe the cores. This script computes one asset for every benchmark of the quick
profile against one corpus, in two processes at once (the second on another corpus), first with the libraries'
default threads and then under :func:`simassets.core.budget.apply_thread_budget`, and prints each mode's seconds
and the ratio. It reads a warehouse where the quick study has run (``make run``) and writes nothing.

    .venv/bin/python benchmarks/thread_budget.py [--home data] [--asset embedding_similarity]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CORPORA = ("pubmed_abstracts", "brown")


def child(home: Path, asset: str, corpus: str, budgeted: bool) -> None:
    from simassets.core import budget, paths
    from simassets.core.computation import Call, Scope
    from simassets.defs import factory

    comp = factory.load_all()[asset]
    if budgeted:  # after numpy, scipy and sklearn are loaded, as in a step
        budget.apply_thread_budget()
    scope = Scope(profile="quick", home=home, data_root=paths.data_root(), catalog_dir=home)
    keys = [{"corpus": corpus, "benchmark": b.name} for b in scope.catalog.benchmarks_for("quick")]
    start = time.perf_counter()
    for k in keys:
        comp.compute(Call(scope, k, comp.inputs(scope, k), lambda s: None, "benchmark"))
    print(json.dumps({"seconds": time.perf_counter() - start, "pairs": len(keys)}))


def side_by_side(args, budgeted: bool) -> list[dict]:
    cmd = [sys.executable, __file__, "--home", str(args.home), "--asset", args.asset, "--child"]
    procs = [subprocess.Popen([*cmd, c] + (["--budget"] if budgeted else []), stdout=subprocess.PIPE, text=True)
             for c in args.corpora]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"child failed ({p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path("data"), help="the data home of a quick study (make run)")
    ap.add_argument("--asset", default="embedding_similarity")
    ap.add_argument("--corpora", nargs=2, default=list(CORPORA))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--budget", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.home.resolve(), args.asset, args.child, args.budget)
    print(f"{args.asset}: every quick benchmark against {args.corpora[0]} and against {args.corpora[1]}, "
          "one process each, side by side")
    times = {}
    for budgeted in (False, True):
        res = side_by_side(args, budgeted)
        name = "thread budget" if budgeted else "library defaults"
        times[budgeted] = max(r["seconds"] for r in res)
        print(f"  {name:17s} " + "  ".join(f"{c}: {r['seconds']:6.1f} s ({r['pairs']} pairs)"
                                           for c, r in zip(args.corpora, res, strict=True)))
    print(f"  ratio (slower process, defaults / budget): {times[False] / times[True]:.2f}x")


if __name__ == "__main__":
    main()
