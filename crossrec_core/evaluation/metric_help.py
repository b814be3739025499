"""One plain sentence per evaluation metric, and which method is best in each column of a metric table.

The Evaluation page's tooltips and the HTML report (evaluation/report.py) read the same sentences, so the
two never explain a number differently. Keys are the metric names of ``evaluator.EvaluationResult``:
a ranking metric is labelled ``<name>@<K>`` there (``NDCG@10``), so lookups go through ``metric_help``.
"""

from __future__ import annotations

import math

import pandas as pd

# K is written "K" here and filled in by metric_help; every sentence says which way is better.
METRIC_HELP: dict[str, str] = {
    "HR": "Share of shoppers whose next product was among the K shown (hit rate); higher is better.",
    "NDCG": "Like the hit rate, but a hit near the top of the list counts more than one near the bottom; higher is better.",
    "P": "Share of the K shown products that was the shopper's next one (one next product each, so at most 1/K); higher is better.",
    "R": "Share of shoppers' next products that the K shown found (one next product each, so equal to the hit rate); higher is better.",
    "F1": "Balance of precision and recall in one number; higher is better.",
    "MRR": "1 / the position of the next product in the list (0 when it is not shown), averaged; higher is better.",
    "coverage": "Share of the whole catalogue shown to at least one shopper; higher means less of the catalogue is never recommended.",
    "category_coverage": "Share of categories shown to at least one shopper; higher means no category is left out.",
    "diversity": "How different the products within one list are (1 = all from different categories); higher is more varied.",
    "novelty": "How little-known the shown products are (fewer past events = higher); higher means fewer bestsellers.",
    "cross_share": "Share of shown products from categories the shopper has never had: the cross-category reach; higher is more cross-category.",
}


def metric_base(column: str) -> str:
    """Return the metric's name without its '@K' (``'NDCG@10'`` -> ``'NDCG'``)."""
    return column.split("@", 1)[0]


def metric_help(column: str) -> str:
    """Return the plain sentence explaining a metric column (``'HR@10'``, ``'novelty'``), K filled in;
    '' for a column that is not a metric."""
    text = METRIC_HELP.get(metric_base(column), "")
    k = column.split("@", 1)[1] if "@" in column else None
    return text.replace("the K shown", f"the {k} shown").replace("1/K", f"1/{k}") if k else text


def best_methods(table: pd.DataFrame, digits: int | None = None) -> dict[str, list[str]]:
    """Return {metric column: the methods (rows) with its highest value}, ties all kept; a column without
    a finite value has none. Every metric here reads 'higher is better' (see METRIC_HELP).

    Args:
        digits: compare the values rounded as they are shown (two methods that read the same are both best).
    """
    best: dict[str, list[str]] = {}
    for col in table.columns:
        values = pd.to_numeric(table[col], errors="coerce")
        values = values.round(digits) if digits is not None else values
        finite = values[values.map(lambda v: v is not None and math.isfinite(v))]
        if finite.empty:
            best[col] = []
            continue
        top = float(finite.max())
        best[col] = [str(m) for m, v in finite.items() if math.isclose(float(v), top, rel_tol=1e-9, abs_tol=1e-12)]
    return best
