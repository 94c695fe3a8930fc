"""Stored partitions that the catalog or the model registry no longer declares.

Removing an entry never deletes rows: the entry leaves the profile's partitions (the UI) and its studies, and its
files stay until ``simassets prune`` lists them and the user agrees. A file is orphaned when one of its partition
keys (corpus, benchmark, model, study; or ``dataset_kind`` + ``dataset``) names a value its profile does not
declare; profile-free files (folder ``_``) are checked against every profile together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from simassets.core.warehouse import Warehouse, partition_keys

DIMENSIONS = ("corpus", "benchmark", "model", "study")


@dataclass(frozen=True)
class Orphan:
    path: Path
    table: str
    profile: str
    reason: str  # e.g. "benchmark=piqa"


def orphans(wh: Warehouse, declared: Mapping[str, Mapping[str, set[str]]]) -> list[Orphan]:
    """Files whose keys name a value their profile does not declare. ``declared[profile][dimension]`` is the set
    of declared values (a profile missing from ``declared`` is left alone: nothing is judged without its
    catalog)."""
    union = {d: set().union(*(v.get(d, set()) for v in declared.values())) for d in DIMENSIONS}
    out = []
    for path in wh.partition_files():
        profile, table = path.parent.name, path.parent.parent.name
        have = union if profile == "_" else declared.get(profile)
        if have is None:
            continue
        keys = partition_keys(path)
        if keys.get("dataset_kind") in DIMENSIONS and "dataset" in keys:
            keys[keys["dataset_kind"]] = keys["dataset"]
        gone = [f"{d}={keys[d]}" for d in DIMENSIONS if keys.get(d) and keys[d] not in have.get(d, set())]
        if gone:
            out.append(Orphan(path, table, profile, ", ".join(gone)))
    return out


def summary(found: list[Orphan]) -> list[str]:
    """One line per (profile, reason): how many files of which tables."""
    groups: dict[tuple[str, str], list[Orphan]] = {}
    for o in found:
        groups.setdefault((o.profile, o.reason), []).append(o)
    return [f"{profile}: {reason}: {len(items)} file(s) in {', '.join(sorted({o.table for o in items}))}"
            for (profile, reason), items in sorted(groups.items())]
