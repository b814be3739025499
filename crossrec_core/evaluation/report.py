"""The evaluation as one HTML file to share: metric tables with the best value per column marked, the
verdict sentences, the charts and the model card, readable offline.

Offline by construction: the styles are inline and use the reader's system fonts; plotly.js is embedded
once, inline, with the first chart (``include_plotlyjs=True``), and the later charts reuse it; no tag has a
``src`` or ``href`` pointing anywhere. Opening the file makes no request to any host.

Hostile text: dataset, model, method and category names and titles come from uploaded logs. Every string
goes through ``html.escape`` here; chart text is JSON inside plotly's script (plotly escapes ``<`` and
``>`` there), and the studio's figure builders already make plotly's small HTML subset inert.
"""

from __future__ import annotations

import copy
import html
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from crossrec_core.errors import CrossrecError
from crossrec_core.evaluation import metrics as M
from crossrec_core.evaluation.metric_help import best_methods, metric_help
from crossrec_core.evaluation.verdicts import SUBSET_LABELS, calibration_note, calibration_sentence, lead_sentence, reach_sentence
from crossrec_core.storage.model_card import ModelCard, record_test_figures, with_test

log = logging.getLogger(__name__)

# system fonts only: nothing to download
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2933;
margin:0;background:#fafafa;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{margin:0 0 4px;font-size:1.8em}h2{margin-top:2em;border-bottom:1px solid #e4e7eb;padding-bottom:4px}
.meta{color:#52606d;margin:0 0 12px}.warning{background:#fff4e5;border-left:4px solid #f0a020;padding:8px 12px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums;font-size:0.92em}
th,td{border:1px solid #e4e7eb;padding:4px 8px;text-align:right}th{background:#f5f7fa}
td.method,td.field,td.section{text-align:left}td.best{background:#e3f4ea;font-weight:700}
th[title]{cursor:help;text-decoration:underline dotted}.verdict{font-weight:600}
figure{margin:16px 0}figcaption{color:#52606d;font-size:0.92em}dt{font-weight:700;margin-top:6px}dd{margin-left:16px}
footer{color:#7b8794;font-size:0.85em;margin-top:32px}
"""


@dataclass(frozen=True)
class ReportFigure:
    """One chart of the report: a heading, a plotly figure (anything with plotly's ``to_html``), a caption."""

    title: str
    figure: Any
    caption: str = ""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float, digits: int) -> str:
    return "-" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def metric_table_html(table, digits: int = 3) -> str:
    """Return an HTML table of a wide metric frame (rows method, columns metric): each header carries its
    plain explanation as a tooltip, and the best value of each column is marked (bold, shaded)."""
    best = best_methods(table, digits)
    head = "".join(f'<th title="{_e(metric_help(str(c)))}">{_e(c)}</th>' for c in table.columns)
    rows = []
    for method, row in table.iterrows():
        cells = "".join(
            f'<td class="best">{_num(v, digits)}</td>' if str(method) in best.get(c, ()) else f"<td>{_num(v, digits)}</td>"
            for c, v in row.items())
        rows.append(f'<tr><td class="method">{_e(method)}</td>{cells}</tr>')
    return f'<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def model_test_figures(result, method: str | None = None, subset: str = "all") -> dict[str, float]:
    """Return {ranking metric@K: value} of ``method`` (default: the first, the model) on ``subset``."""
    method = method or result.methods[0]
    out = {}
    for metric in M.RANKING_METRICS:
        label = f"{metric}@{result.k}"
        try:
            out[label] = result.value(method, subset, label)
        except KeyError:
            continue
    return out


def record_evaluation(model_name: str, dataset: str, result, root=None) -> bool:
    """Keep the model's figures of ``result`` (all shoppers, plus NDCG on novel-category ones) as the test
    figures of the workspace model ``model_name`` (storage/model_card.record_test_figures); False when
    nothing changed."""
    if not result.methods:
        return False
    figures = model_test_figures(result)
    if result.subset_sizes.get("novel", 0):
        figures[f"NDCG@{result.k}, next product in a new category"] = result.value(result.methods[0], "novel", f"NDCG@{result.k}")
    where = f"{dataset}, {int(result.subset_sizes.get('all', 0)):,} shoppers' last events"
    try:
        return record_test_figures(model_name, figures, where, root)
    except (OSError, CrossrecError) as err:  # a read-only workspace still shows the evaluation
        log.warning("could not record the test figures of %s: %s", model_name, err)
        return False


def _card_html(card: ModelCard) -> str:
    rows = "".join(f'<tr><td class="section">{_e(r["section"])}</td><td class="field">{_e(r["field"])}</td>'
                   f'<td class="field">{_e(r["value"])}</td></tr>' for r in card.rows())
    return f"<h2>Model card: {_e(card.name)}</h2><table><tbody>{rows}</tbody></table>"


def _figures_html(figures: Sequence[ReportFigure]) -> str:
    parts = []
    for i, f in enumerate(figures):
        # the studio's figures keep tight margins (Streamlit's theme makes room for the tick labels);
        # on a plain page, plotly must make that room itself, or long category names are cut off
        fig = copy.deepcopy(f.figure)
        fig.update_xaxes(automargin=True)
        fig.update_yaxes(automargin=True)
        # plotly.js goes inline once, with the first chart; the others use it (no CDN, no request)
        div = fig.to_html(include_plotlyjs=(i == 0), full_html=False, include_mathjax=False,
                               config={"displaylogo": False, "responsive": True})
        caption = f"<figcaption>{_e(f.caption)}</figcaption>" if f.caption else ""
        parts.append(f"<figure><h3>{_e(f.title)}</h3>{div}{caption}</figure>")
    return "".join(parts)


def evaluation_report_html(
    result,
    *,
    title: str,
    model_name: str = "",
    card: ModelCard | None = None,
    figures: Sequence[ReportFigure] = (),
    intro: Sequence[str] = (),
    generated: datetime | None = None,
    digits: int = 3,
) -> str:
    """Return the whole evaluation as one self-contained HTML document (a str; write it as UTF-8).

    Args:
        result: the ``EvaluationResult`` shown on the Evaluation page (its first method is the model).
        title: the report's heading (escaped, as every string here).
        model_name: the workspace name of the evaluated model, for the header line.
        card: the model's card; when it has no test figures, this evaluation's (all shoppers) are added.
        figures: the charts, in order; plotly.js is embedded once.
        intro: sentences shown under the header (e.g. which shoppers and targets were used).
        generated: the time printed in the header (default now, UTC).
    """
    when = (generated or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    about = [f"Dataset {result.dataset}", f"{result.split} targets", f"top {result.k} shown"]
    if model_name:
        about.insert(1, f"model {model_name}")
    body = [f"<h1>{_e(title)}</h1>", f'<p class="meta">{_e(" · ".join(about))} · made {_e(when)}</p>']
    body += [f'<p class="warning">{_e(w)}</p>' for w in result.warnings]
    body += [f"<p>{_e(s)}</p>" for s in intro]
    body.append("<h2>The model beside the baselines</h2>")
    body.append("<p>Shaded bold: the best value of each column. Hover a column name for what it measures.</p>")
    for subset, label in SUBSET_LABELS.items():
        n = int(result.subset_sizes.get(subset, 0))
        body.append(f"<h3>{_e(label)}: {n:,} shoppers</h3>")
        if not n:
            body.append("<p>No shopper in this group.</p>")
            continue
        body.append(metric_table_html(result.table(subset), digits))
        for sentence in (lead_sentence(result, subset), reach_sentence(result, subset)):
            if sentence:
                body.append(f'<p class="verdict">{_e(sentence)}</p>')
    columns = list(dict.fromkeys(result.metrics["metric"]))
    body.append("<details open><summary>What the columns mean</summary><dl>"
                + "".join(f"<dt>{_e(c)}</dt><dd>{_e(metric_help(str(c)))}</dd>" for c in columns) + "</dl></details>")
    report = result.calibration.get(result.methods[0], {}) if result.methods else {}
    if report:
        body.append("<h2>Do the probabilities mean what they say?</h2>")
        body.append(f'<p class="verdict">{_e(calibration_sentence(report))}</p><p>{_e(calibration_note(result.k))}</p>')
    if figures:
        body.append("<h2>Charts</h2>" + _figures_html(figures))
    if card is not None:
        if result.methods:  # this evaluation's figures, not whichever evaluation the folder recorded last
            n = int(result.subset_sizes.get("all", 0))
            card = with_test(card, model_test_figures(result), f"{result.dataset}, {n:,} shoppers' last events")
        body.append(_card_html(card))
    body.append("<footer>Made by crossrec studio. This file needs no network: open it in any browser.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body><main>"
            + "\n".join(body) + "</main></body></html>\n")
