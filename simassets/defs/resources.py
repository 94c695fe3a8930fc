"""Resources: where every asset reads (catalog, registry, data root) and writes (warehouse home)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from simassets.core import paths
from simassets.core.computation import Scope


class StudyResource(dg.ConfigurableResource):
    """Where a run reads and writes; each asset asks it for the :class:`Scope` of its own profile.

    Empty strings fall back to the environment (``SIMASSETS_HOME``, ``SIMASSETS_DATA_ROOT``,
    ``SIMASSETS_CATALOG_DIR``, ``SIMASSETS_ON_BAD_ROW``) and then to the repository defaults.
    ``on_bad_row`` is what corpus sampling does with an unusable source row: ``fail`` (the default: the
    error names file, row and field) or ``skip`` (drop it, count it).
    """

    home: str = ""
    data_root: str = ""
    catalog_dir: str = ""
    on_bad_row: str = ""

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
        return Path(self.catalog_dir).resolve() if self.catalog_dir else paths.catalog_dir()

    def scope(self, profile: str) -> Scope:
        """A fresh view of one profile (the catalog and registry are read again: edits are seen)."""
        return Scope(profile=profile, home=self.home_path, data_root=self.data_root_path,
                     catalog_dir=self.catalog_path, on_bad_row=self.bad_row_policy)


defs = dg.Definitions(resources={"study": StudyResource()})
