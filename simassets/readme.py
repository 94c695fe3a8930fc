"""Generate the README's reference tables (views and measures) from the code that defines them.

``python -m simassets.readme`` rewrites the blocks between the ``<!-- BEGIN x -->``/``<!-- END x -->``
markers; a test keeps README.md in step with the schema and the measure registry.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from simassets.core.measures import registry
from simassets.core.paths import REPO_ROOT
from simassets.core.schema import TABLES


def tables_md() -> str:
    out = []
    for t in TABLES.values():
        out.append(f"**`{t.name}`** — {t.description}\n")
        out.append("| column | type | meaning |\n|---|---|---|")
        out += [f"| `{n}` | {typ} | {desc} |" for n, typ, desc in t.columns]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def measures_md() -> str:
    out = ["| measure | family | level | direction | formula | parameters |", "|---|---|---|---|---|---|"]
    for m in registry.ordered():
        direction = "higher = more similar" if m.direction > 0 else "higher = less similar"
        params = ", ".join(f"{k}={v}" for k, v in m.params.items()).replace("|", "\\|")
        formula = m.formula.replace("|", "\\|")
        out.append(f"| `{m.name}` | {m.family} | {', '.join(m.levels)} | {direction} | `{formula}` | {params} |")
    return "\n".join(out) + "\n"


BLOCKS = {"TABLES": tables_md, "MEASURES": measures_md}


def render(text: str) -> str:
    for name, fn in BLOCKS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- BEGIN {name} --> ... <!-- END {name} --> block")
        text = pattern.sub(lambda m: m.group(1) + fn() + m.group(2), text)
    return text


def main(path: Path = REPO_ROOT / "README.md") -> int:
    text = path.read_text(encoding="utf-8")
    new = render(text)
    if new != text:
        path.write_text(new, encoding="utf-8")
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
