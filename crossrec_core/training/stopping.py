"""What early stopping judges: the validation NDCG@10 of retrieval with its item-neighbour term, not of the
encoders alone.

Retrieval ships the encoders' scores plus a weighted item-neighbour term (co-occurrence or next-item rules,
``models/item_knn.py``), its weight chosen on validation after training (``training/tuning.py``). Where that
term carries the next item (a shop whose shoppers buy a kit piece by piece), the encoders mostly order what it
leaves tied, and the epochs in which the encoders alone still improve change little of what ships: stopping on
the encoders alone spent most of the training time there on those epochs (bench/RESULTS.md, session 12).

So each epoch ranks the validation targets with the encoders alone and with each neighbour table added at a
few weights, and the best of these is the epoch's figure. The tables are fitted once, on the training part
(the same tables the blend is then chosen with), and each validation shopper's neighbour sums are computed
once: an epoch adds them to the encoders' scores, sparse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossrec_core.data.dataset import Sequences
from crossrec_core.evaluation.metrics import ndcg_hr
from crossrec_core.models.item_knn import ItemKNNRanker
from crossrec_core.models.trained import TrainedModel

# Weights of the neighbour term tried each epoch: a coarse version of tuning.KNN_GRID (the blend's own
# weight is chosen on the full grid after training); 1000 = the table with the encoders as a tie-break.
STOP_GRID = (0.5, 2.0, 8.0, 32.0, 1000.0)
STOP_MAX_CELLS = 400_000_000  # validation shoppers x items x variants scored per epoch, at most


@dataclass
class NeighbourTerms:
    """The item-neighbour tables fitted on the training part and the validation shoppers' sums of each."""

    tables: list[ItemKNNRanker]
    users: np.ndarray  # int64 (U,) the validation shoppers these sums belong to, in order
    cells: list[np.ndarray]  # per table: sorted int64 row * n_items + item with a neighbour sum
    sums: list[np.ndarray]  # per table: float32 sums of those cells
    tiebreak: list[np.ndarray]  # per table: float32 (n_items,) the popularity tie-break every item gets

    @classmethod
    def fit(cls, tables: list[ItemKNNRanker], seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> "NeighbourTerms":
        cells, sums = zip(*(t.neighbour_sums(seqs, users, ends) for t in tables)) if tables else ((), ())
        return cls(list(tables), np.asarray(users, dtype=np.int64), list(cells), list(sums), [t._pop_tiebreak() for t in tables])

    def n_variants(self) -> int:
        return 1 + len(self.tables) * len(STOP_GRID)


def stopping_figures(model: TrainedModel, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray,
                     terms: NeighbourTerms | None) -> dict:
    """Return {"ndcg10", "hr10", "n"} of the encoders alone plus "ndcg10_stop" (the best of the encoders alone
    and each neighbour table at each STOP_GRID weight: what early stopping compares) and "stop_variant" (0 =
    the encoders alone, else 1 + table * len(STOP_GRID) + weight index). Without ``terms``, "ndcg10_stop" is
    the encoders' figure. ``users`` must be ``terms.users``."""
    if len(users) == 0:
        return {"ndcg10": 0.0, "hr10": 0.0, "n": 0, "ndcg10_stop": 0.0, "stop_variant": 0}
    n = model.n_items
    n_var = terms.n_variants() if terms is not None else 1
    ranks = np.zeros((n_var, len(users)), dtype=np.int64)
    item_vecs = model.item_vectors()
    bs = max(1, min(model.batch_size, 4_000_000 // max(n, 1)))
    for s in range(0, len(users), bs):
        u, e, t = users[s : s + bs], ends[s : s + bs], targets[s : s + bs]
        base = model.user_vectors(seqs, u, e) @ item_vecs.T
        knn = model.weighted_neighbour_scores(seqs, u, e)  # a warm start's saved term, if any
        if knn is not None:
            base += knn
        seqs.mask_seen(base, u, e)  # -inf stays -inf whatever is added
        rows = np.arange(len(u))
        ranks[0, s : s + len(u)] = _ranks(base, rows, t)
        for ti in range(len(terms.tables) if terms is not None else 0):
            cells, sums = terms.cells[ti], terms.sums[ti]
            lo, hi = np.searchsorted(cells, [s * n, (s + len(u)) * n])
            local = cells[lo:hi] - s * n  # cells are unique: one += per cell
            for wi, w in enumerate(STOP_GRID):
                sc = base + np.float32(w) * terms.tiebreak[ti][None, :]
                sc.reshape(-1)[local] += np.float32(w) * sums[lo:hi]
                ranks[1 + ti * len(STOP_GRID) + wi, s : s + len(u)] = _ranks(sc, rows, t)
    figures = [ndcg_hr(r) for r in ranks]
    best = 0
    for v, f in enumerate(figures):  # the encoders alone win ties
        if f["ndcg10"] > figures[best]["ndcg10"] + 1e-9:
            best = v
    return {**figures[0], "ndcg10_stop": figures[best]["ndcg10"], "stop_variant": best}


def better(figures: dict, best: dict) -> bool:
    """Whether an epoch's ``stopping_figures`` beat the best so far ({"ndcg10": its stopping figure, "encoders":
    the encoders' own}): a higher stopping figure, or the same one with better encoders alone. Why the second:
    where the neighbour term alone already ranks every validation target first, the stopping figure cannot
    rise and the encoders would keep their first epoch's weights; they still learn as long as they improve."""
    if figures["ndcg10_stop"] > best["ndcg10"] + 1e-9:
        return True
    return figures["ndcg10_stop"] >= best["ndcg10"] - 1e-9 and figures["ndcg10"] > best.get("encoders", float("inf"))


def _ranks(scores: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return int64 0-based ranks of the targets in ``scores`` (seen items already -inf; a seen target ranks last)."""
    tv = scores[rows, targets]
    return np.where(np.isfinite(tv), (scores > tv[:, None]).sum(axis=1), scores.shape[1]).astype(np.int64)


def neighbour_terms(tables: list[ItemKNNRanker], seqs: Sequences, users: np.ndarray, ends: np.ndarray, n_items: int) -> NeighbourTerms | None:
    """Return the validation shoppers' neighbour sums of ``tables``, or None when there is nothing to add or
    scoring every variant each epoch would pass STOP_MAX_CELLS (then the encoders alone decide, as before)."""
    if not tables or len(users) == 0 or len(users) * n_items * (1 + len(tables) * len(STOP_GRID)) > STOP_MAX_CELLS:
        return None
    return NeighbourTerms.fit(tables, seqs, users, ends)
