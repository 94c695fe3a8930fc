"""The measure registry: every similarity notion with its family, level, direction, range and parameters,
and every measure family's computation (the asset that writes its rows).

Each measure module under ``simassets/core/measures`` registers its own measures (:func:`register`) and,
where it computes them as an asset of its own, its :class:`~simassets.core.computation.Computation`
(:func:`register_family`); this module imports every module of the package, so a new measure module is
found without being listed anywhere (see "Adding a measure" in the README).

``direction`` is +1 when a higher value means *more similar* (cosine, MAUVE, alignment) and -1 when a
higher value means *less similar* (KL, JS, perplexity, NCD). Correlations orient by it, so that
"more similar => better" has the same sign for every measure. ``range`` is the interval every value
must lie in; the assets' checks test every stored value against it.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from simassets.core.computation import Computation

Family = Literal["embedding", "token", "model", "compression", "task2vec", "overlap"]
Level = Literal["example", "dataset"]


@dataclass(frozen=True)
class MeasureSpec:
    name: str
    family: Family
    levels: tuple[Level, ...]
    direction: int
    description: str
    formula: str = ""
    needs_model: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    range: tuple[float, float] = (-math.inf, math.inf)

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"measure {self.name}: direction must be +1 or -1")
        low, high = self.range
        if not low <= high:
            raise ValueError(f"measure {self.name}: range must be (low, high) with low <= high, got {self.range}")


class _Discovered(dict):
    """A dict that imports every measure module before it is first read (registration writes go straight in):
    the registry is complete whichever module was imported first, and importing one measure module never
    imports the others half-way."""

    def _ready(self) -> None:
        if not _DISCOVERY["done"] and not _DISCOVERY["running"]:
            _discover()

    def __getitem__(self, key):
        self._ready()
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self._ready()
        return super().__contains__(key)

    def __iter__(self):
        self._ready()
        return super().__iter__()

    def __len__(self) -> int:
        self._ready()
        return super().__len__()

    def get(self, key, default=None):
        self._ready()
        return super().get(key, default)

    def keys(self):
        self._ready()
        return super().keys()

    def values(self):
        self._ready()
        return super().values()

    def items(self):
        self._ready()
        return super().items()


_DISCOVERY = {"done": False, "running": False}
MEASURES: dict[str, MeasureSpec] = _Discovered()
FAMILIES: dict[str, Computation] = _Discovered()


def register(spec: MeasureSpec) -> MeasureSpec:
    known = dict.get(MEASURES, spec.name)
    if known is not None and known != spec:
        raise ValueError(f"measure {spec.name!r} registered twice with different specs")
    dict.__setitem__(MEASURES, spec.name, spec)
    return spec


def register_family(computation: Computation) -> Computation:
    """Declare the asset that computes a family's measures (it writes example/dataset_similarity rows)."""
    known = dict.get(FAMILIES, computation.name)
    if known is not None and known.compute.__module__ != computation.compute.__module__:
        raise ValueError(f"measure family {computation.name!r} registered twice")
    if not computation.writes_measures:
        raise ValueError(f"measure family {computation.name!r} must write example_similarity or dataset_similarity")
    dict.__setitem__(FAMILIES, computation.name, computation)
    return computation


FAMILY_ORDER = ("embedding", "token", "compression", "overlap", "model", "task2vec")


def ordered() -> list[MeasureSpec]:
    """Every measure in a fixed order (by family, then name): registration order depends on which module was
    imported first, so anything shown or fingerprinted iterates this instead."""
    return sorted(MEASURES.values(), key=lambda m: (FAMILY_ORDER.index(m.family), m.name))


def get(name: str) -> MeasureSpec:
    try:
        return MEASURES[name]
    except KeyError:
        raise KeyError(f"unknown measure {name!r}; known: {sorted(MEASURES)}") from None


def direction(name: str) -> int:
    return get(name).direction


def _discover() -> None:
    """Import every module of this package: each registers its own measures and family."""
    import simassets.core.measures as package

    _DISCOVERY["running"] = True
    try:
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if info.name != "registry":
                importlib.import_module(f"{package.__name__}.{info.name}")
        _DISCOVERY["done"] = True
    finally:
        _DISCOVERY["running"] = False
