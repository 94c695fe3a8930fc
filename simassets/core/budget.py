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


def apply_torch_threads() -> int:
    """Set this process's torch (and OpenMP) thread count to :func:`torch_threads`, once; returns it."""
    n = torch_threads()
    if _APPLIED != [n]:
        os.environ["OMP_NUM_THREADS"] = str(n)
        import torch

        torch.set_num_threads(n)
        _APPLIED[:] = [n]
    return n
