"""The sentences that say what an evaluation means: the model's lead over the best other method, and
whether its probabilities can be trusted. Plain text, no markup.

The Evaluation page (pages/evaluation_view.py, pages/compare_cache.py) and the HTML report
(evaluation/report.py) both read them, so the page and the file never disagree. Method names come from the
workspace and may hold hostile text: ``lead_sentence`` passes each through the caller's ``name`` function
(markdown escaping on the page, ``html.escape`` in the report).
"""

from __future__ import annotations

from typing import Callable

SUBSET_LABELS = {"all": "All shoppers", "switch": "Next product in another category",
                 "novel": "Next product in a category new to them"}
VERDICT_REAL, VERDICT_NOISE = "a real difference", "within noise"


def lead_sentence(result, subset: str, name: Callable[[str], str] = str) -> str:
    """Return one sentence: the first method's NDCG@K lead over the best other method on ``subset``, with its
    paired-bootstrap 95% interval and the verdict; '' when there is nothing to compare.

    Args:
        result: an ``EvaluationResult`` (the first method is the model, the others its baselines).
        name: applied to each method name before it goes into the sentence (escaping for the output format).
    """
    metric = f"NDCG@{result.k}"
    mine = result.methods[0]
    others = [m for m in result.methods[1:] if m in result.per_user]
    if not others or mine not in result.per_user or not result.subset_sizes.get(subset, 0):
        return ""
    best = max(others, key=lambda m: result.value(m, subset, metric))
    d = result.difference(mine, best, subset, metric)
    verdict = (VERDICT_REAL if d.significant else
               f"{VERDICT_NOISE}: these shoppers cannot tell the two apart, more are needed")
    return (f"{name(mine)} vs the best other method ({name(best)}): {metric} {d.mean:+.3f}, 95% interval "
            f"{d.low:+.3f} to {d.high:+.3f} (paired bootstrap over shoppers): {verdict}.")


def reach_sentence(result, subset: str, name: Callable[[str], str] = str, margin: float = 0.05) -> str:
    """Return one sentence when the first method shows clearly fewer products from categories new to the shopper
    (``cross_share``) than another method, '' otherwise: a list can lead on NDCG and still reach few new
    categories, which a merchandiser who wants cross-category sales must hear from the page, not find in a column."""
    mine = result.methods[0] if result.methods else None
    try:
        share = {m: result.value(m, subset, "cross_share") for m in result.methods}
    except KeyError:
        return ""
    others = [m for m in result.methods[1:] if m in share]
    if mine is None or not others:
        return ""
    widest = max(others, key=share.get)
    if share[widest] - share[mine] < margin:
        return ""
    return (f"Cross-category reach: {share[mine]:.0%} of the products {name(mine)} shows come from categories new to the "
            f"shopper, against {share[widest]:.0%} for {name(widest)}; its lists stay closer to the shopper's own "
            "categories. For new categories only, turn on \"Only categories new to this shopper\" on Recommendations.")


def calibration_sentence(report: dict) -> str:
    """Return one plain sentence with ECE, Brier and the mean probability against the hit rate."""
    if not report or not report.get("n"):
        return "No probabilities to check: the model showed no products to these shoppers."
    return (f"On the {report['n']:,} products shown, the mean probability is {report['mean_proba']:.3f} vs a hit "
            f"rate of {report['positive_rate']:.3f}: expected calibration error {report['ece']:.3f} "
            f"(0 = each probability comes true exactly as often as it says), Brier score {report['brier']:.3f}.")


def calibration_note(k: int) -> str:
    """Return the line saying on which targets and rows the probabilities were checked."""
    return (f"Measured on the test targets (each shopper's last event), over the {k} products shown to each "
            "shopper: a product counts as a hit when it is the one the shopper took next.")
