"""The machine's budget: how many runs and model processes at once, and torch threads per process.

One rule for every path (``simassets run``, UI runs launched by the daemon, tests): processes x threads never
exceed the cores, because two torch processes that each use every core lose ~40 % on a 2-core machine and
ten of them collapse it. ``SIMASSETS_MAX_RUNS`` and ``SIMASSETS_TORCH_THREADS`` override the defaults.
"""

from __future__ import annotations

import os


def cores() -> int:
    """The cores this process may use (the affinity mask where there is one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _positive_env(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def max_concurrent_runs() -> int:
    """Runs (and so model-loading processes) at once: one per core unless ``SIMASSETS_MAX_RUNS`` says otherwise."""
    return _positive_env("SIMASSETS_MAX_RUNS") or cores()


def torch_threads() -> int:
    """Torch threads per process, so that all concurrent processes together use each core once."""
    return _positive_env("SIMASSETS_TORCH_THREADS") or max(1, cores() // max_concurrent_runs())


_APPLIED: list[int] = []
_LIMITED: list[int] = []
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def apply_thread_budget() -> int:
    """Hold every BLAS and OpenMP pool of this process (numpy's and scipy's OpenBLAS, scikit-learn's OpenMP) to
    :func:`torch_threads`; returns it. Without this, each of two step processes runs its matrix work on two
    OpenBLAS threads, and on 2 cores a PCA + k-means (MAUVE) took 16-25 s instead of 4 s for one corpus's 39 pairs
    (two processes side by side, ``benchmarks/thread_budget.py``). Torch is left to
    :func:`apply_torch_threads`, so a step without a model never imports it."""
    n = torch_threads()
    if _LIMITED != [n]:
        for var in _THREAD_VARS:  # libraries loaded later in this process read these when they load
            os.environ[var] = str(n)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)  # those already loaded (numpy's OpenBLAS is, with one thread per core)
        _LIMITED[:] = [n]
    return n


def apply_torch_threads() -> int:
    """Set this process's torch (and OpenMP, BLAS) thread count to :func:`torch_threads`, once; returns it."""
    n = apply_thread_budget()
    if _APPLIED != [n]:
        import torch

        torch.set_num_threads(n)
        _APPLIED[:] = [n]
    return n
