"""The study figures drawn the way they are now against the way they were, side by side in one process.

Every study asset draws figures (the headline heatmap, one scatter figure per measure, the agreement matrix, the
per-example figures); on the quick study they were about half of the study steps' time. Before: ``tight_layout``
(a layout pass that measures every text), ``savefig`` to a PNG, read back, median-cut quantized, saved with
PNG's ``optimize``. Now: constrained layout (computed inside the one draw), the canvas's RGBA buffer quantized
directly, no ``optimize``. This script draws every figure of the chosen studies both ways, alternating, into
temporary folders, and prints seconds, bytes and the ratio. It reads a warehouse where the quick study has run
(``make run``) and writes nothing there.

    .venv/bin/python benchmarks/study_figures.py [--home data] [--studies all english multilingual] [--repeat 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

ASSETS = ("correlations", "measure_agreement", "per_example_analysis")


@contextlib.contextmanager
def before():
    """The earlier drawing path: tight_layout on every figure, savefig, read back, median cut with ``optimize``."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from simassets.core import plots

    original_subplots, original_save = plt.subplots, plots._save

    def subplots(*args, **kwargs):
        if not sys._getframe(1).f_code.co_qualname.startswith("headline_heatmap"):  # it was constrained already
            kwargs.pop("layout", None)
        return original_subplots(*args, **kwargs)

    def save(fig, path: Path) -> Path:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=plots.DPI)
        plt.close(fig)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.open(buf).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            path, format="PNG", optimize=True)
        return path

    plt.subplots, plots._save = subplots, save
    try:
        yield
    finally:
        plt.subplots, plots._save = original_subplots, original_save


def draw_all(studies: list, scope, out: Path) -> tuple[float, int, int]:
    from simassets.defs import studies as S

    seconds, files = 0.0, 0
    for name, rows_by_asset in studies:
        data = S.study_data(scope, name)
        for asset in ASSETS:
            start = time.perf_counter()
            files += len(S.KINDS[asset].draw(data, rows_by_asset[asset], out / name))
            seconds += time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*.png"))
    return seconds, files, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=Path("data"))
    ap.add_argument("--studies", nargs="+", default=["all", "english", "multilingual"])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    from simassets.core import budget, paths
    from simassets.core.computation import Scope
    from simassets.defs import factory
    from simassets.defs import studies as S

    factory.load_all()
    budget.apply_thread_budget()  # one thread, as in a step of `simassets run --workers 2`
    scope = Scope(profile="quick", home=args.home.resolve(), data_root=paths.data_root(), catalog_dir=args.home)
    studies = []
    for name in args.studies:
        data = S.study_data(scope, name)
        studies.append((name, {a: S.KINDS[a].compute(data, scope.seed) for a in ASSETS}))
    totals = {"before": [0.0, 0, 0], "now": [0.0, 0, 0]}
    for _ in range(args.repeat):
        for mode in ("before", "now"):  # alternating, so a noisy neighbour hits both
            with tempfile.TemporaryDirectory() as tmp:
                with before() if mode == "before" else contextlib.nullcontext():
                    seconds, files, size = draw_all(studies, scope, Path(tmp))
            totals[mode][0] += seconds
            totals[mode][1], totals[mode][2] = files, size
            print(f"{mode:6s} {seconds:6.2f} s  {files} figures  {size / 1e3:,.0f} kB", flush=True)
    b, n = totals["before"], totals["now"]
    print(f"studies {', '.join(args.studies)}: {n[1]} figures; before {b[0]:.2f} s, now {n[0]:.2f} s "
          f"over {args.repeat} round(s): {b[0] / n[0]:.2f}x faster; "
          f"{b[2] / 1e3:,.0f} kB before, {n[2] / 1e3:,.0f} kB now")


if __name__ == "__main__":
    main()
