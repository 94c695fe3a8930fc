"""Similarity measures: one module per family, all declared in :mod:`.registry`."""
