"""Resources: the study (catalog, profile, warehouse) every asset reads and writes through."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from simassets.core import paths
from simassets.core.catalog import Catalog, Profile, load_catalog
from simassets.core.warehouse import Warehouse


class StudyResource(dg.ConfigurableResource):
    """Which profile a run uses and where it reads (catalog, data root) and writes (warehouse).

    Empty strings fall back to the environment (``SIMASSETS_PROFILE``, ``SIMASSETS_HOME``,
    ``SIMASSETS_DATA_ROOT``, ``SIMASSETS_CATALOG_DIR``, ``SIMASSETS_ON_BAD_ROW``) and then to the
    repository defaults. ``on_bad_row`` is what corpus sampling does with an unusable source row:
    ``fail`` (the default: the error names file, row and field) or ``skip`` (drop it, count it).
    """

    profile: str = ""
    home: str = ""
    data_root: str = ""
    catalog_dir: str = ""
    on_bad_row: str = ""

    @property
    def profile_name(self) -> str:
        return self.profile or os.environ.get("SIMASSETS_PROFILE", "quick")

    @property
    def bad_row_policy(self) -> str:
        policy = self.on_bad_row or os.environ.get("SIMASSETS_ON_BAD_ROW", "fail")
        if policy not in ("fail", "skip"):
            raise ValueError(f"on_bad_row / SIMASSETS_ON_BAD_ROW must be 'fail' or 'skip', got {policy!r}")
        return policy

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else paths.home()

    @property
    def data_root_path(self) -> Path:
        return Path(self.data_root).resolve() if self.data_root else paths.data_root()

    @property
    def catalog_path(self) -> Path:
        return (Path(self.catalog_dir).resolve() if self.catalog_dir else paths.catalog_dir())

    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_path / "catalog.toml")

    def profile_spec(self) -> Profile:
        return self.catalog().profile(self.profile_name)

    def warehouse(self) -> Warehouse:
        return Warehouse(self.home_path)

    def models(self):
        from simassets.core.models import load_registry

        return load_registry(self.catalog_path / "models.toml")

    @property
    def cache_dir(self) -> Path:
        return self.home_path / "cache"


def default_study() -> StudyResource:
    return StudyResource()


defs = dg.Definitions(resources={"study": default_study()})
