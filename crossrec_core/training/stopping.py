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
from crossrec_core.training.grid_ranks import masked_ranks

# Weights of the neighbour term tried each epoch: a coarse version of tuning.KNN_GRID (the blend's own
# weight is chosen on the full grid after training); 1000 = the table with the encoders as a tie-break.
STOP_GRID = (0.5, 2.0, 8.0, 32.0, 1000.0)
# Validation shoppers x items x variants scored per epoch, at most: past it a seeded sample of the validation
# shoppers (at least STOP_MIN_USERS, else the encoders alone decide, as before) carries the stopping figure.
STOP_MAX_CELLS = 400_000_000
STOP_MIN_USERS = 300


@dataclass
class NeighbourTerms:
    """The item-neighbour tables fitted on the training part and the neighbour sums of the validation
    shoppers the stopping figure is measured on."""

    tables: list[ItemKNNRanker]
    rows: np.ndarray  # int64 (U,) sorted positions of those shoppers in the validation arrays
    cells: list[np.ndarray]  # per table: sorted int64 (row among ``rows``) * n_items + item with a neighbour sum
    sums: list[np.ndarray]  # per table: float32 sums of those cells
    tiebreak: list[np.ndarray]  # per table: float32 (n_items,) the popularity tie-break every item gets

    @property
    def n_variants(self) -> int:
        return _n_variants(len(self.tables))


def _n_variants(n_tables: int) -> int:
    """The encoders alone, then each table at each STOP_GRID weight."""
    return 1 + n_tables * len(STOP_GRID)


def neighbour_terms(tables: list[ItemKNNRanker], seqs: Sequences, users: np.ndarray, ends: np.ndarray, n_items: int,
                    seed: int = 0) -> NeighbourTerms | None:
    """Return the neighbour sums of ``tables`` for the validation shoppers (``users``, ``ends``), or a seeded
    sample of them that keeps an epoch under STOP_MAX_CELLS; None when there is no table or fewer than
    STOP_MIN_USERS would fit (the encoders alone then decide)."""
    fit = STOP_MAX_CELLS // max(n_items * _n_variants(len(tables)), 1)
    if not tables or len(users) == 0 or fit < min(STOP_MIN_USERS, len(users)):
        return None
    rows = np.arange(len(users), dtype=np.int64)
    if len(users) > fit:
        rows = np.sort(np.random.default_rng(seed).choice(len(users), fit, replace=False))
    cells, sums = zip(*(t.neighbour_sums(seqs, users[rows], ends[rows]) for t in tables))
    return NeighbourTerms(list(tables), rows, list(cells), list(sums), [t._pop_tiebreak() for t in tables])


def stopping_figures(model: TrainedModel, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray,
                     terms: NeighbourTerms | None) -> dict:
    """Return {"ndcg10", "hr10", "n"} of the encoders alone on every validation shopper, plus "ndcg10_stop" (the
    best, on ``terms``' shoppers, of the encoders alone and each neighbour table at each STOP_GRID weight: what
    early stopping compares) and "stop_variant" (0 = the encoders alone, else 1 + table * len(STOP_GRID) +
    weight index). Without ``terms``, "ndcg10_stop" is the encoders' figure."""
    if len(users) == 0:
        return {"ndcg10": 0.0, "hr10": 0.0, "n": 0, "ndcg10_stop": 0.0, "stop_variant": 0}
    n = model.n_items
    ranks = np.zeros(len(users), dtype=np.int64)
    variants = np.zeros((terms.n_variants if terms is not None else 0, len(terms.rows) if terms is not None else 0), dtype=np.int64)
    item_vecs = model.item_vectors()
    bs = max(1, min(model.batch_size, 4_000_000 // max(n, 1)))
    for s in range(0, len(users), bs):
        u, e, t = users[s : s + bs], ends[s : s + bs], targets[s : s + bs]
        base = model.user_vectors(seqs, u, e) @ item_vecs.T
        knn = model.weighted_neighbour_scores(seqs, u, e)  # a warm start's saved term, if any
        if knn is not None:
            base += knn
        seqs.mask_seen(base, u, e)  # -inf stays -inf whatever is added
        ranks[s : s + len(u)] = masked_ranks(base, t)
        if terms is None:
            continue
        j0, j1 = np.searchsorted(terms.rows, [s, s + len(u)])
        if j1 == j0:
            continue
        local = terms.rows[j0:j1] - s
        sub, st = base[local], t[local]
        variants[0, j0:j1] = masked_ranks(sub, st)
        for ti in range(len(terms.tables)):
            cells, sums = terms.cells[ti], terms.sums[ti]
            lo, hi = np.searchsorted(cells, [j0 * n, j1 * n])
            at = cells[lo:hi] - j0 * n  # cells are unique: one += per cell
            for wi, w in enumerate(STOP_GRID):
                sc = sub + np.float32(w) * terms.tiebreak[ti][None, :]
                sc.reshape(-1)[at] += np.float32(w) * sums[lo:hi]
                variants[1 + ti * len(STOP_GRID) + wi, j0:j1] = masked_ranks(sc, st)
    encoders = ndcg_hr(ranks)
    if terms is None:
        return {**encoders, "ndcg10_stop": encoders["ndcg10"], "stop_variant": 0, "stop_ranks": ranks}
    figures = [ndcg_hr(r)["ndcg10"] for r in variants]
    best = 0
    for v, f in enumerate(figures):  # the encoders alone win ties
        if f > figures[best] + 1e-9:
            best = v
    return {**encoders, "ndcg10_stop": figures[best], "stop_variant": best, "stop_ranks": variants[best]}


def per_user_ndcg(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Return float64 per-user NDCG@k from 0-based ranks (ndcg_hr's mean, unaveraged)."""
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def clearly_better(challenger: np.ndarray, incumbent: np.ndarray, z: float = 1.0) -> bool:
    """Whether per-user figures ``challenger`` beat ``incumbent`` (the same shoppers, paired) by more than ``z``
    standard errors of the mean difference: validation picks a second configuration only when the gain is
    more than the noise of a few thousand shoppers. Why 1: hm-fashion-oneday's validation flipped on a gain
    of 0.16 standard errors (and lost 21 % on test), while the random batches' validation gains that held on
    test were 1.1-2.5 standard errors (dense-b, dense-c, the demo store; bench/RESULTS.md, session 14)."""
    return paired_z(challenger, incumbent) > z


def paired_z(challenger: np.ndarray, incumbent: np.ndarray) -> float:
    """Return the mean paired difference over its standard error (0 without a difference or with < 2 pairs)."""
    d = np.asarray(challenger, dtype=np.float64) - np.asarray(incumbent, dtype=np.float64)
    if len(d) < 2 or not d.any():
        return 0.0
    se = d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() / se) if se > 0 else float(np.sign(d.mean()) * np.inf)


def better(figures: dict, best: dict) -> bool:
    """Whether an epoch's ``stopping_figures`` beat the best so far ({"ndcg10": its stopping figure, "encoders":
    the encoders' own}): a higher stopping figure, or the same one with better encoders alone. Why the second:
    where the neighbour term alone already ranks every validation target first, the stopping figure cannot
    rise and the encoders would keep their first epoch's weights; they still learn as long as they improve."""
    if figures["ndcg10_stop"] > best["ndcg10"] + 1e-9:
        return True
    return figures["ndcg10_stop"] >= best["ndcg10"] - 1e-9 and figures["ndcg10"] > best.get("encoders", float("inf"))

