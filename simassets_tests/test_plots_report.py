"""Figures and the HTML report on the synthetic study of ``test_studies`` (materialized once here)."""

from __future__ import annotations

import argparse
import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from test_studies import BENCHES, TOY, _write, build_study, materialize

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


@pytest.fixture(scope="module")
def study_with_constant(tmp_path_factory):
    """The same study plus a measure that is 0 for every benchmark (as 13-gram contamination is for XCOPA)."""
    catalog_dir, home = build_study(tmp_path_factory.mktemp("report_constant"))
    wh = Warehouse(home)
    for b in BENCHES:
        for c in ("c1", "c2"):
            _write(wh, "dataset_similarity", {"corpus": c, "benchmark": b, "asset": "text_similarity"},
                   [{"corpus": c, "benchmark": b, "model": "", "measure": "contaminated_fraction_13", "value": 0.0,
                     "n": 4}])
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
    assert [f.name for f in figs] == [
        "agreement_m1.png", "examples_m1_max_cosine.png", "examples_m1_toy_model_measure.png",
        "examples_m2_max_cosine.png", "headline_normalized_score.png", "scatter_normalized_score_max_cosine.png",
        "scatter_normalized_score_toy_model_measure.png", "scatter_normalized_score_unigram_kl.png"]
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
    page = (out / "study-english.html").read_text()
    parsed = _Page()
    parsed.feed(page)
    # every <img> of the evidence page is a relative link to a copied, non-empty PNG
    assert len(parsed.imgs) == 8 and parsed.imgs[0] == "img/english/headline_normalized_score.png"
    for src in parsed.imgs:
        assert not src.startswith(("/", "file:", "data:"))
        assert (out / src).read_bytes()[:8] == PNG
    for header in ("corpus", "model", "measure", "median_auroc", "acc_q1_least_similar", "expected_sign", "p_adj",
                   "p_method", "ci2_low"):
        assert header in parsed.headers, header
    index = rep.path.read_text()
    assert "Study “english”" in index and "Study “tiny”" in index
    assert "correlations not materialized for this study" in index  # tiny was never materialized
    parsed = _Page()
    parsed.feed(index)
    caveats = " ".join(parsed.items)
    assert "max_cosine: 1 (corpus, benchmark) value(s) carry a warning" in caveats and "at floor (synthetic)" in caveats
    assert "rest on fewer than 10 benchmarks" in caveats
    assert "direction not registered, assumed +1 for toy_model_measure" in caveats
    assert "(no corpus: model-based)" in page
    # the scatter plots sit under their measure family (max_cosine: embedding; unigram_kl: token)
    sections = re.findall(r"<h3>(\w[^<]*)</h3>((?:<figure>.*?</figure>)*)", page)
    by_family = {fam: re.findall(r'src="img/english/([^"]+)"', figs) for fam, figs in sections}
    assert by_family["embedding"] == ["scatter_normalized_score_max_cosine.png"]
    assert by_family["token"] == ["scatter_normalized_score_unigram_kl.png"]
    assert by_family["other measures"] == [f"scatter_normalized_score_{TOY}.png"]
    # the oriented Spearman of m1's own KL on c1 is +1 (raw -1); its exact p at n = 5 is 2/5! = 0.017, which
    # the Benjamini-Yekutieli correction over the study's grid lifts above 0.05: no star
    assert re.search(r"<td class=t>unigram_kl</td><td class=t>1\.000 \(5\)</td>", page)
    setup = (out / "setup.html").read_text()
    assert "Benchmark scores" in setup and "acc 95% (Wilson)" in setup


def test_the_first_screen_answers(study_with_constant, tmp_path):
    """The index leads with the answer: a sentence per materialized study generated from its correlations, one
    heatmap per study, the accuracy against chance, the published tables reproduced; at most 12 figures; no
    scatter of a measure that is constant across the benchmarks (a line says it was left out)."""
    catalog_dir, home = study_with_constant
    out = tmp_path / "report"
    rep = build_report(Warehouse(home), load_catalog(catalog_dir / "catalog.toml"), "quick", out)
    index = rep.path.read_text()
    parsed = _Page()
    parsed.feed(index)
    answer = re.findall(r"<p class='answer'>(.*?)</p>", index)
    assert len(answer) == 2  # the models, then the one materialized study
    assert re.match(r"m1: mean accuracy 0\.50 against a mean chance level of 0\.25 over 6 benchmarks",
                    answer[0]), answer[0]
    assert re.match(
        r"No correlation survives Benjamini–Yekutieli at 0\.05: 0 of \d+ spearman correlations of a "
        r"measure with normalized_score \(n = 5–5 benchmarks\).* The strongest is .* p = .*\(exact\), "
        r"p_adj = .*, n = 5\.",
        answer[1],
    ), answer[1]
    assert parsed.imgs == ["fig/accuracy.png", "fig/headline_english.png"] and len(parsed.imgs) <= 12
    assert rep.index_figures == [out / "fig" / "accuracy.png", out / "fig" / "headline_english.png"]
    assert index.index("class='answer'") < index.index("<h2 id='reproduced'>")  # the answer comes first
    assert "Reproduced from the papers" in index and "Tables 1 (Spearman)" in index
    assert re.search(r"60 of 60 r and 60 of 60 asymptotic p agree", index)
    figs = {p.name for p in (home / "plots" / "quick" / "english").glob("scatter_*.png")}
    assert figs and not any("contaminated_fraction_13" in f for f in figs)
    assert (
        "normalized_score vs contaminated_fraction_13 (c1): the measure is 0 for every benchmark"
        in (out / "study-english.html").read_text()
    )
    # drawn once: a second report with the same data does not redraw; new data does
    stamp = (out / "fig" / "headline_english.png").stat().st_mtime_ns
    build_report(Warehouse(home), load_catalog(catalog_dir / "catalog.toml"), "quick", out)
    assert (out / "fig" / "headline_english.png").stat().st_mtime_ns == stamp


def test_informative_and_cached_figure(tmp_path):
    assert plots.informative([1, 2, 3], [3, 1, 2]) == ""
    assert plots.informative([0, 0, 0, 0], [1, 2, 3, 4]) == "the measure is 0 for every benchmark"
    assert plots.informative([1, 2, 3], [5, 5, 5]) == "the score is 5 for every benchmark"
    assert plots.informative([1, float("nan")], [1, 2]) == "1 point(s)"
    calls = []
    draw = lambda p: (calls.append(p), p.write_bytes(PNG))  # noqa: E731
    path = tmp_path / "f.png"
    plots.cached_figure(path, {"x": [1, 2]}, draw)
    plots.cached_figure(path, {"x": [1, 2]}, draw)
    assert len(calls) == 1
    plots.cached_figure(path, {"x": [1, 3]}, draw)
    assert len(calls) == 2


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


def test_report_names_the_benchmarks_the_embedding_model_cannot_read(tmp_path):
    """Thai examples are mostly [UNK] to MiniLM: the study's caveats name the benchmark and its share."""
    from simassets.core.report import _study_caveats, unread_benchmarks

    wh = Warehouse(tmp_path / "home")
    texts = {"xcopa_th": ["แม่ของฉัน ทำอาหารเย็น ให้ครอบครัว", "ผู้ชาย เปิด ก๊อกน้ำ"],
             "arc_easy": ["Which gas do plants take in? Answer:", "Where does the Sun rise? Answer:"]}
    for bench, inputs in texts.items():
        rows = pd.DataFrame({"benchmark": bench, "example_id": range(len(inputs)),
                             "input_text": inputs, "target_text": " x", "choices": [[" x", " y"]] * len(inputs),
                             "gold": 0, "text_sha256": "0", "category": "c", "language": "th", "params": "{}"})
        wh.write_partition("benchmark_examples", "quick", {"benchmark": bench}, rows, "fp")
    unread = unread_benchmarks(wh, "quick")
    assert list(unread) == ["xcopa_th"] and unread["xcopa_th"] > 0.5
    empty = pd.DataFrame()
    caveats = _study_caveats(None, empty, empty, empty, ["xcopa_th", "arc_easy"], unread)
    assert len(caveats) == 1 and "cannot read 1 of the study's benchmarks" in caveats[0]
    assert f"xcopa_th {unread['xcopa_th']:.0%}" in caveats[0] and "max_cosine" in caveats[0]
    assert _study_caveats(None, empty, empty, empty, ["arc_easy"], unread) == []
