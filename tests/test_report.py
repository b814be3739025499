"""The shareable evaluation report (one offline HTML file) and the metric sentences it shares with the page."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from crossrec_core.data.load import load_log
from crossrec_core.evaluation import metrics as M
from crossrec_core.evaluation.baselines import CategoryTransitionRanker, ItemKNNRanker, PopularityRanker
from crossrec_core.evaluation.evaluator import BEYOND_METRICS, evaluate_rankers
from crossrec_core.evaluation.metric_help import METRIC_HELP, best_methods, metric_help
from crossrec_core.evaluation.report import ReportFigure, evaluation_report_html, metric_table_html
from crossrec_core.evaluation.verdicts import calibration_sentence, lead_sentence, reach_sentence
from crossrec_core.storage.model_card import ModelCard

HOSTILE = "<script>alert(1)</script>"
HOSTILE_METHOD = '<img src=x onerror="alert(2)">'


@pytest.fixture
def result(tiny_frames):
    """An evaluation of three baselines on the tiny log (no training): one of them has a hostile name."""
    ds = load_log(*tiny_frames, name="shop")
    rankers = {"popularity": PopularityRanker(), HOSTILE_METHOD: ItemKNNRanker(), "category-transition": CategoryTransitionRanker()}
    return evaluate_rankers(ds, rankers, k=3)


def card(**kw) -> ModelCard:
    return ModelCard(name=kw.get("name", "shop-model"), datasets=("shop",), saved="2024-03-07 14:02 UTC",
                     settings=[("Sequence encoder", "gru"), ("Reads product titles", "no")],
                     training=[("Best epoch", "4 of 7 run"), ("Training time", "2.1 min")],
                     validation=[("Validation shoppers", "295")])


def strip_scripts(page: str) -> str:
    return re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S | re.I)


# -- metric help ---------------------------------------------------------------------------------------


def test_every_metric_column_the_evaluator_produces_has_a_sentence(result):
    assert set(METRIC_HELP) == set(M.RANKING_METRICS) | set(BEYOND_METRICS)
    columns = result.table("all").columns.tolist()
    assert len(columns) == 11
    for column in columns:
        sentence = metric_help(column)
        assert sentence and "\n" not in sentence and len(sentence) < 160, column
        assert "higher" in sentence  # each says which way is better
    assert metric_help("P@3").startswith("Share of the 3 shown products") and "1/3" in metric_help("P@3")
    assert metric_help("not a metric") == ""


def test_the_best_method_of_each_column_is_the_highest_ties_kept_nan_skipped():
    table = pd.DataFrame({"HR@10": [0.1, 0.3, 0.3], "novelty": [np.nan] * 3, "coverage": [0.1234, 0.1231, np.nan]},
                         index=["a", "b", "c"])
    assert best_methods(table) == {"HR@10": ["b", "c"], "novelty": [], "coverage": ["a"]}
    assert best_methods(table, digits=3)["coverage"] == ["a", "b"]  # equal as shown: both marked


# -- the report -------------------------------------------------------------------------------------------


def test_the_report_holds_the_tables_numbers_with_the_best_marked(result):
    table = result.table("all")
    page = metric_table_html(table)
    rows = dict(re.findall(r'<tr><td class="method">(.*?)</td>(.*?)</tr>', page))
    assert list(rows) == [html.escape(m, quote=True) for m in table.index]
    best = best_methods(table, 3)
    for method, row in table.iterrows():
        cells = re.findall(r'<td( class="best")?>([^<]*)</td>', rows[html.escape(method, quote=True)])
        assert [c[1] for c in cells] == ["-" if np.isnan(v) else f"{v:.3f}" for v in row]
        assert [bool(c[0]) for c in cells] == [method in best[c] for c in table.columns]
    for column in table.columns:  # each header explains itself
        assert f'<th title="{html.escape(metric_help(column), quote=True)}">{column}</th>' in page


def test_the_report_holds_the_verdicts_the_charts_and_the_model_card(result):
    fig = go.Figure(go.Bar(x=["Camping"], y=[0.5]))
    page = evaluation_report_html(result, title="Evaluation of shop-model", model_name="shop-model", card=card(),
                                  figures=[ReportFigure("Per category", fig, "Measured on the test targets."),
                                           ReportFigure("Again", fig)],
                                  intro=["Test targets: each shopper's last event."])
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for subset in ("all", "switch"):
        sentence = lead_sentence(result, subset)
        assert sentence and html.escape(sentence, quote=True) in page
    for method in result.methods:
        assert f"{result.value(method, 'all', 'HR@3'):.3f}" in page
    assert "Test targets: each shopper&#x27;s last event." in page
    assert "<figcaption>Measured on the test targets.</figcaption>" in page
    assert page.count('class="plotly-graph-div"') == 2
    for field, value in [("Trained on", "shop"), ("Saved", "2024-03-07 14:02 UTC"), ("Sequence encoder", "gru"),
                         ("Best epoch", "4 of 7 run"), ("Training time", "2.1 min"), ("Validation shoppers", "295")]:
        assert f'<td class="field">{field}</td><td class="field">{value}</td>' in page
    # the card carries this evaluation's test figures (the first method's, on all shoppers)
    assert f'<td class="field">NDCG@3</td><td class="field">{result.value(result.methods[0], "all", "NDCG@3"):.4f}</td>' in page
    assert "not measured yet" not in page


class _Shares:
    """An evaluation result's cross_share values, per method (what reach_sentence reads)."""

    def __init__(self, shares: dict) -> None:
        self.methods, self.shares = list(shares), shares

    def value(self, method: str, subset: str, metric: str) -> float:
        assert metric == "cross_share"
        return self.shares[method]


def test_the_reach_sentence_speaks_only_when_the_model_reaches_clearly_fewer_new_categories():
    hm = _Shares({"crossrec": 0.089, "popularity": 0.278, "item-kNN": 0.316})  # hm, as the issue measured it
    sentence = reach_sentence(hm, "all")
    assert sentence.startswith("Cross-category reach: 9% of the products crossrec shows")
    assert "32% for item-kNN" in sentence and "Only categories new to this shopper" in sentence
    assert reach_sentence(_Shares({"crossrec": 0.30, "popularity": 0.278, "item-kNN": 0.316}), "all") == ""
    assert reach_sentence(_Shares({"crossrec": 0.30}), "all") == ""  # nothing to compare with
    hostile = _Shares({"<b>m</b>": 0.0, "popularity": 0.5})
    assert "&lt;b&gt;m&lt;/b&gt;" in reach_sentence(hostile, "all", html.escape)


def test_the_report_opens_offline(result):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1]))
    page = evaluation_report_html(result, title="t", figures=[ReportFigure("a", fig), ReportFigure("b", fig)])
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, flags=re.S | re.I)
    assert scripts and all("src" not in attrs for attrs, _ in scripts)  # nothing loaded from anywhere
    assert sum("Plotly.newPlot" not in body and len(body) > 1_000_000 for _, body in scripts) == 1  # plotly.js, once, inline
    markup = strip_scripts(page)  # plotly.js itself names map-tile hosts that our charts never use
    for needle in ('src="http', "src='http", 'href="http', "href='http", "cdn", "http://", "https://", "@import",
                   "url(", "<link"):
        assert needle not in markup.lower(), needle
    assert "font-family:system-ui" in markup


def test_hostile_text_is_escaped_everywhere(result):
    fig = go.Figure(go.Bar(x=[HOSTILE], y=[1]))
    page = evaluation_report_html(result, title=HOSTILE, model_name=HOSTILE, card=card(name=HOSTILE),
                                  figures=[ReportFigure(HOSTILE, fig, HOSTILE)], intro=[HOSTILE])
    markup = strip_scripts(page)
    assert "<script>alert" not in page and "<img" not in page and "onerror=\"alert" not in markup
    assert markup.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6  # title, heading, header line, intro, chart, card
    assert html.escape(HOSTILE_METHOD, quote=True) in markup
    assert "\\u003cscript\\u003ealert(1)" in page  # chart text stays JSON-escaped inside plotly's script


def test_the_calibration_sentence_is_in_the_report_when_a_method_has_probabilities(result):
    result.calibration[result.methods[0]] = {"n": 12, "mean_proba": 0.1, "positive_rate": 0.08, "ece": 0.02,
                                             "brier": 0.07, "bins": []}
    page = evaluation_report_html(result, title="t")
    assert html.escape(calibration_sentence(result.calibration[result.methods[0]]), quote=True) in page
