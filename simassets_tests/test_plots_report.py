"""Figures and the HTML report on the synthetic study of ``test_studies`` (materialized once here)."""

from __future__ import annotations

import argparse
import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from test_studies import build_study, materialize

from simassets import report_cmd
from simassets.core import plots
from simassets.core.catalog import load_catalog
from simassets.core.report import build_report, html_table
from simassets.core.warehouse import Warehouse

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    catalog_dir, home = build_study(tmp_path_factory.mktemp("report"))
    materialize(catalog_dir, home, "english")
    return catalog_dir, home


class _Page(HTMLParser):
    """Collects <img src>, table headers and list items of a page."""

    def __init__(self):
        super().__init__()
        self.imgs, self.headers, self.items, self._tag = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self._tag == "th":
            self.headers.append(data)
        elif self._tag == "li":
            self.items.append(data)


def test_image_markdown_embeds_the_first_figures_and_lists_the_rest(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"f{i}.png"
        p.write_bytes(PNG + bytes([i]) * 10)
        paths.append(p)
    md = plots.image_markdown(paths, max_images=2)
    uris = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert [base64.b64decode(u) for u in uris] == [paths[0].read_bytes(), paths[1].read_bytes()]
    assert f"`{paths[2]}`" in md
    assert plots.image_markdown([]) == "_(no figures)_"
    assert plots.existing(paths) and not plots.existing([tmp_path / "nope.png"])


def test_figure_files_are_pngs(study):
    _, home = study
    figs = sorted((home / "plots" / "quick" / "english").glob("*.png"))
    assert len(figs) == 7
    for f in figs:
        data = f.read_bytes()
        assert data[:8] == PNG and len(data) > 5_000  # a real drawing, not an empty canvas


def test_html_table_escapes_and_formats():
    out = html_table(pd.DataFrame({"name": ["<b>x</b>"], "r": [0.123456], "p": [float("nan")], "n": [7]}))
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "<b>" not in out
    assert ">0.123<" in out and ">–<" in out and ">7<" in out


def test_report_holds_tables_images_and_caveats(study, tmp_path):
    catalog_dir, home = study
    out = tmp_path / "report"
    rep = build_report(Warehouse(home), load_catalog(catalog_dir / "catalog.toml"), "quick", out)
    page = rep.path.read_text()
    parsed = _Page()
    parsed.feed(page)
    # every <img> is a relative link to a copied, non-empty PNG
    assert len(parsed.imgs) == 7 and len(rep.images) == 7
    for src in parsed.imgs:
        assert not src.startswith(("/", "file:", "data:"))
        assert (out / src).read_bytes()[:8] == PNG
    for header in ("corpus", "model", "measure", "median_auroc", "acc_q1_least_similar", "expected_sign", "p_adj"):
        assert header in parsed.headers, header
    assert "Study “english”" in page and "Study “tiny”" in page
    assert "correlations not materialized for this study" in page  # tiny was never materialized
    caveats = " ".join(parsed.items)
    assert "max_cosine: 1 (corpus, benchmark) value(s) carry a warning" in caveats and "at floor (synthetic)" in caveats
    assert "rest on fewer than 10 benchmarks (n = 5–5)" in caveats
    assert "direction not registered, assumed +1 for toy_model_measure" in caveats
    assert "(no corpus: model-based)" in parsed.headers
    # the oriented Spearman of m1's own KL on c1 is +1 (raw -1); its exact p at n = 5 is 2/5! = 0.017, which
    # the Benjamini-Yekutieli correction over the study's grid lifts above 0.05: no star
    assert re.search(r"<td class=t>unigram_kl</td><td class=t>1\.000 \(5\)</td>", page)


def test_report_command_writes_the_page_and_refuses_unknown_studies(study, tmp_path, monkeypatch, capsys):
    catalog_dir, home = study
    monkeypatch.setenv("SIMASSETS_HOME", str(home))
    monkeypatch.setenv("SIMASSETS_CATALOG_DIR", str(catalog_dir))
    parser = argparse.ArgumentParser()
    report_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", "--profile", "quick", "--study", "english"])
    assert args.func(args) == 0
    index = home / "report" / "quick" / "index.html"
    assert f"wrote {index}" in capsys.readouterr().out
    assert "Study “tiny”" not in index.read_text()
    bad = parser.parse_args(["report", "--out", str(tmp_path / "x"), "--study", "nope"])
    assert bad.func(bad) == 2
    assert "unknown study(ies) ['nope']" in capsys.readouterr().err
    assert not Path(tmp_path / "x" / "index.html").exists()
