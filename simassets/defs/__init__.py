"""Dagster wiring for simassets, autoloaded by ``dg.load_from_defs_folder``; thin by design."""
