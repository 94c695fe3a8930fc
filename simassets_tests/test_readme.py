"""README's reference tables are generated from the schema and the measure registry: keep them in step."""

from simassets.core.paths import REPO_ROOT
from simassets.readme import render


def test_readme_tables_match_schema_and_registry():
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert render(text) == text, "README.md is stale: run `.venv/bin/python -m simassets.readme`"
