"""What a run over a range of partitions pays in Dagster's bookkeeping, with and without the factory reading the
dynamic partitions once for the per-partition metadata (:func:`simassets.defs.factory.dynamic_partitions_read_once`).

On a home where the quick study is materialized (``make run``), one corpus x benchmark run of ``simassets run``
(every corpus x the first ``--benchmarks`` benchmarks, its four assets) is executed ``--repeat`` times each way,
alternating, so the machine's noise falls on both. Every step skips (the partitions are fresh), so what is timed
is the run's bookkeeping: the skip checks, the events, the per-partition metadata. Prints each time and the ratio.

    SIMASSETS_HOME=data .venv/bin/python benchmarks/range_runs.py [--benchmarks 21] [--repeat 2]
"""

import argparse
import contextlib
import time

from simassets.defs import factory, planning
from simassets.runner import get_instance, repository, run_work

ASSETS = ("word_coverage", "text_similarity", "embedding_similarity", "task2vec_alignment")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmarks", type=int, default=21, help="benchmarks in the run (the quick study's pieces: 21)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    instance = get_instance()
    repository()
    order = planning.dynamic_order(instance, "quick")
    rectangle = (("corpus", tuple(order["corpus"])), ("benchmark", tuple(order["benchmark"][:args.benchmarks])))
    work = planning.Work("quick", "corpus_x_benchmark", ASSETS, rectangle)
    read_once = factory.dynamic_partitions_read_once
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(args.repeat):
            for once in (False, True):
                factory.dynamic_partitions_read_once = read_once if once else (lambda _: contextlib.nullcontext())
                start = time.perf_counter()
                report = run_work(work, instance)
                times[once].append(time.perf_counter() - start)
                if report.failed or report.computed:
                    raise SystemExit(f"the run should only skip: {len(report.computed)} computed, {report.failed[:2]} "
                                     "failed (materialize the quick study first)")
    finally:
        factory.dynamic_partitions_read_once = read_once
    print(f"one run of {work.size} partitions x {len(ASSETS)} assets, every step skipped:")
    for once in (False, True):
        what = "dynamic partitions read once" if once else "Dagster's range check on every metadata call"
        print(f"  {what}: {', '.join(f'{t:.1f}' for t in times[once])} s")
    print(f"ratio: {sum(times[False]) / sum(times[True]):.2f}x")


if __name__ == "__main__":
    main()
