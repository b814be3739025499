"""A saved model's card: what it was trained on, when, with which settings, and how well it did.

Read from the model folder's JSON files only (config.json, metrics.json, fingerprint.json via lineage), so
Home and Train show it without importing torch. The HTML report (evaluation/report.py) prints the same card,
with the test figures of the evaluation it reports.

Test figures: training records validation figures only (nothing is fitted or measured on a test target
during training). The Evaluation page records its figures in the folder's test_figures.json
(``record_test_figures``; the newest evaluation, with the dataset and shoppers it was measured on), and the
HTML report adds those of the evaluation it reports (``with_test``) when the folder has none.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from crossrec_core.errors import ModelError
from crossrec_core.storage.catalog import read_json
from crossrec_core.storage.lineage import trained_on
from crossrec_core.storage.workspace import atomic_write_json, models_dir, name_lock

TEST_FILE = "test_figures.json"  # the newest evaluation's figures (record_test_figures); not a scoring file

log = logging.getLogger(__name__)

# metrics.json "valid" key -> the row label, in the order a reader follows the pipeline
VALID_FIGURES = {
    "popularity_ndcg10": "NDCG@10 of the most popular products (the yardstick)",
    "ndcg10": "NDCG@10, sequence model alone (best epoch)",
    "hr10": "HR@10, sequence model alone (best epoch)",
    "ndcg10_prior": "NDCG@10 with popularity and category flow",
    "ndcg10_knn": "NDCG@10 with item-to-item neighbours (bought together, or bought next)",
    "ndcg10_fusion_oof": "NDCG@10 of the fusion re-rank (held-out folds)",
    "ndcg10_retrieval_oof": "NDCG@10 of retrieval alone on the same shoppers",
    "n": "Validation shoppers",
}


@dataclass(frozen=True)
class ModelCard:
    """What a saved model is: the sections of its card, each a list of (label, value) in display order."""

    name: str
    datasets: tuple[str, ...]  # workspace datasets holding its training log (empty: none in this workspace)
    saved: str  # 'YYYY-MM-DD HH:MM UTC' of its folder's config.json ('' when unknown)
    settings: list[tuple[str, str]] = field(default_factory=list)
    training: list[tuple[str, str]] = field(default_factory=list)
    validation: list[tuple[str, str]] = field(default_factory=list)
    test: list[tuple[str, str]] = field(default_factory=list)

    @property
    def dataset(self) -> str | None:
        """Return the workspace dataset to load for this model (the first of ``datasets``), or None."""
        return self.datasets[0] if self.datasets else None

    def rows(self) -> list[dict[str, str]]:
        """Return the card as rows {"section", "field", "value"} (plain text: a table shows it as is)."""
        head = [("Trained on", ", ".join(self.datasets) or "a log that is not in this workspace"),
                ("Saved", self.saved or "unknown")]
        out = [{"section": "Model", "field": label, "value": value} for label, value in head]
        for section, pairs in (("Settings", self.settings), ("Training", self.training),
                               ("Validation", self.validation), ("Test", self.test)):
            out += [{"section": section, "field": label, "value": value} for label, value in pairs]
        if not self.test:
            out.append({"section": "Test", "field": "Test figures",
                        "value": "not measured yet: the Evaluation page measures them on each shopper's last event"})
        return out


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def model_card(name: str, root=None) -> ModelCard:
    """Return the card of the workspace model ``name``; ModelError when it has no readable config.json."""
    folder = models_dir(root) / name
    meta = read_json(folder / "config.json")
    try:
        metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
    except ModelError as err:  # a damaged metrics file leaves the settings readable
        log.warning("cannot read %s/metrics.json: %s", name, err)
        metrics = {}
    cfg = meta.get("config") or {}
    item, user, train = cfg.get("item") or {}, cfg.get("user") or {}, cfg.get("train") or {}
    sizes = meta.get("sizes") or {}
    use_text = sizes.get("use_text", item.get("use_text"))
    settings = [
        ("Sequence encoder", str(user.get("kind", "?"))),
        ("Vector size", str(item.get("dim", "?"))),  # one size: retrieval is the product-shopper dot product
        ("Longest history read", _fmt(user.get("max_len", "?"))),
        ("Reads product titles", _fmt(bool(use_text)) if use_text is not None else "?"),
        ("At most this many epochs", _fmt(train.get("epochs", "?"))),
        ("Stops after epochs without progress", _fmt(train.get("patience", "?"))),
        ("Products", _fmt(int(sizes.get("n_items", 0)))),
    ]
    history = metrics.get("history") or []
    training = []
    if metrics.get("best_epoch") is not None:
        training.append(("Best epoch", f"{int(metrics['best_epoch'])} of {len(history)} run" if history
                         else str(int(metrics["best_epoch"]))))
    if metrics.get("run_histories") and metrics.get("epochs_run") is not None:  # the two runs took turns (session 15)
        training.append(("Epochs, both runs", _fmt(int(metrics["epochs_run"]))))
    if isinstance(metrics.get("trained_at"), str):  # models trained since session 7 record it
        training.append(("Trained", metrics["trained_at"]))
    if metrics.get("train_seconds") is not None:
        training.append(("Training time", _duration(metrics["train_seconds"])))
    valid = metrics.get("valid") or {}
    validation = [(label, _fmt(valid[key])) for key, label in VALID_FIGURES.items()
                  if isinstance(valid.get(key), (int, float)) and not isinstance(valid.get(key), bool)]
    if "knn_next_items" in valid:  # models trained since session 11 chose their item-neighbour table
        validation.append(("Item neighbours", "bought next (next-item rules)" if valid["knn_next_items"] else "bought together (co-occurrence)"))
    if isinstance(valid.get("batch_choice"), dict):  # models trained since session 14 chose their batches on validation
        figures = ", ".join(f"{k} {float(v):.4f}" for k, v in valid["batch_choice"].items() if isinstance(v, (int, float)))
        kept = "random batches" if valid.get("random_batches") else "length buckets"
        dropped = valid.get("batch_dropped") if isinstance(valid.get("batch_dropped"), dict) else {}
        why = "".join(f"; {k} dropped after epoch {int(e)}, clearly behind" for k, e in dropped.items() if isinstance(e, int))
        validation.append(("Batches kept", f"{kept} (NDCG@10 {figures}{why})"))
    if "fusion_rerank" in valid:
        validation.append(("Fusion re-rank kept", _fmt(bool(valid["fusion_rerank"]))))
    test = _recorded_test(folder) or [(str(k), _fmt(v)) for k, v in (metrics.get("test") or {}).items() if isinstance(v, (int, float))]
    try:
        saved = datetime.fromtimestamp((folder / "config.json").stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        saved = ""
    return ModelCard(name=name, datasets=trained_on([name], root).get(name, ()), saved=saved, settings=settings,
                     training=training, validation=validation, test=test)


def with_test(card: ModelCard, figures: dict[str, float], where: str = "") -> ModelCard:
    """Return ``card`` with ``figures`` ({metric: value}) as its test figures, after a line saying ``where``
    they were measured (e.g. 'demo-store, 3,000 shoppers')."""
    rows = ([("Measured on", where)] if where else []) + [(k, _fmt(float(v))) for k, v in figures.items()]
    return dataclasses.replace(card, test=rows)


def _figures(figures: dict) -> dict[str, float]:
    return {str(k): float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _recorded_test(folder) -> list[tuple[str, str]]:
    """Return the card rows of the folder's test_figures.json, [] when it has none (or an unreadable one)."""
    path = folder / TEST_FILE
    if not path.is_file():
        return []
    try:
        saved = read_json(path)
        where, when, figures = str(saved.get("where", "")), str(saved.get("measured_at", "")), _figures(saved.get("figures") or {})
    except (ModelError, AttributeError, TypeError, ValueError) as err:  # a damaged record must not hide the card
        log.warning("cannot read %s: %s", path, err)
        return []
    head = [("Measured on", where)] if where else []
    head += [("Measured", when)] if when else []
    return head + [(k, _fmt(v)) for k, v in figures.items()] if figures else []


def record_test_figures(name: str, figures: dict[str, float], where: str, root=None) -> bool:
    """Keep ``figures`` ({metric: value}, measured ``where``) as the test figures of the workspace model
    ``name``; return False (and write nothing) when they are already the recorded ones.

    The Evaluation page calls this on every run: writing only on a change keeps the folder's mtime (the
    model's cache key) still, so a rerun does not reload the model."""
    folder = models_dir(root) / name
    clean = _figures(figures)
    if not (folder / "config.json").is_file() or not clean:
        return False
    path = folder / TEST_FILE
    try:
        old = read_json(path) if path.is_file() else {}
    except ModelError:
        old = {}
    if isinstance(old, dict) and old.get("where") == where and old.get("figures") == clean:
        return False
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with name_lock(folder):
        atomic_write_json(path, {"where": where, "measured_at": when, "figures": clean})
    return True
