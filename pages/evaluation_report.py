"""The Evaluation page's metric tables (a tooltip per column, the best value marked) and its report download.

Both read crossrec_core: the sentences are ``evaluation.metric_help``'s, the best values
``metric_help.best_methods``'s, and the file is ``evaluation.report.evaluation_report_html``. The router never
lists this file as a page.
"""

from __future__ import annotations

import re
from typing import Sequence

import streamlit as st

from crossrec_core.errors import CrossrecError
from crossrec_core.evaluation.metric_help import best_methods, metric_help
from crossrec_core.evaluation.report import ReportFigure, evaluation_report_html
from crossrec_core.storage.model_card import model_card

BEST_STYLE = "background-color: rgba(45, 106, 79, 0.22); font-weight: 700"
DIGITS = 3


def metric_table(result, subset: str, key: str) -> None:
    """Show one subset's table: rows method, columns metric, each column's meaning as its tooltip and the
    best value of each column shaded."""
    table = result.table(subset)
    best = best_methods(table, DIGITS)

    def shade(column):
        return [BEST_STYLE if m in best.get(column.name, ()) else "" for m in column.index]

    styled = table.style.format(f"{{:.{DIGITS}f}}", na_rep="-").apply(shade, axis=0)
    st.dataframe(styled, key=key, column_config={c: st.column_config.Column(help=metric_help(c)) for c in table.columns})
    st.caption("Shaded: the best value in each column. Hover a column name for what it measures.")


def report_button(slot, result, model_name: str, intro: Sequence[str], *, reliability, per_category: tuple,
                  threshold: tuple, affinity: tuple) -> None:
    """Offer the evaluation as one offline HTML file in ``slot``, with the page's charts (``per_category``:
    (metric, figure); ``threshold``: (figure, its caption); ``affinity``: (observed, learned)); the file is
    built only when the button is clicked."""
    figures = [
        ReportFigure("Predicted probability vs how often it came true", reliability),
        ReportFigure(f"{per_category[0]} by the hidden product's category (crossrec, all shoppers)", per_category[1]),
        ReportFigure("Precision, recall and F1 against the probability threshold", *threshold),
        ReportFigure("Which category follows which: observed in the log", affinity[0]),
        ReportFigure("Which category follows which: learned by the model", affinity[1]),
    ]

    def build() -> str:
        try:
            card = model_card(model_name)
        except CrossrecError:  # the folder changed meanwhile: the report goes without its card
            card = None
        return evaluation_report_html(result, title=f"Evaluation of {model_name} on {result.dataset}",
                                      model_name=model_name, card=card, figures=figures, intro=intro)

    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model_name}-on-{result.dataset}")[:120]
    slot.download_button("Download this evaluation as a report (HTML)", data=build, key="eval_report",
                         file_name=f"crossrec-evaluation-{slug}.html", mime="text/html", on_click="ignore",
                         icon=":material/download:",
                         help="One file with the tables, the charts, the verdicts and the model card; it opens "
                              "in any browser without a network.")
