"""Choosing the blend weights on validation: the log-prior terms and the item-kNN term.

Each is a grid search of NDCG@10 on the validation targets (each user's second-to-last event), the
model alone winning ties, so a blend is on only when it helps on positions the encoders never saw.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from crossrec_core.data.dataset import InteractionDataset, LeaveLastOut, Sequences
from crossrec_core.evaluation.metrics import ndcg_hr
from crossrec_core.models.category_history import category_parts, chunks, fit_mix
from crossrec_core.models.prior import recent_flow
from crossrec_core.models.item_knn import ItemKNNRanker
from crossrec_core.models.trained import TrainedModel
from crossrec_core.serving.recommender import COLD_MAX_EVENTS, Recommender
from crossrec_core.training.grid_ranks import grid_ranks, masked_ranks, use_kernel
from crossrec_core.training.progress import Phase

log = logging.getLogger(__name__)


def rank_targets(scores: np.ndarray, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return int64 (B,) 0-based rank of each target among unseen items; a large rank if it was seen.

    Seen items (anything in the history) are excluded from the ranking, as the product never recommends them.
    """
    return masked_ranks(seqs.mask_seen(scores.copy(), users, ends), targets)


def valid_ranks(model: TrainedModel, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray) -> np.ndarray:
    out = np.zeros(len(users), dtype=np.int64)
    bs = max(1, min(model.batch_size, 4_000_000 // max(model.n_items, 1)))
    item_vecs = model.item_vectors()
    for s in range(0, len(users), bs):
        u, e, t = users[s : s + bs], ends[s : s + bs], targets[s : s + bs]
        uv = model.user_vectors(seqs, u, e)
        knn = model.weighted_neighbour_scores(seqs, u, e)  # once: retrieval and the fusion re-rank both use it
        scores = uv @ item_vecs.T if knn is None else uv @ item_vecs.T + knn
        out[s : s + bs] = rank_targets(scores, seqs, u, e, t)
    return out


def popularity_reference(popularity: np.ndarray, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray) -> float:
    """Return the NDCG@10 of the most popular unseen products on these validation targets (ties in catalogue
    order): the yardstick next to the model's validation figure, so "0.020" says whether it is any good."""
    if len(users) == 0:
        return 0.0
    bs = max(1, min(512, 4_000_000 // max(len(popularity), 1)))
    pop = np.asarray(popularity, np.float64) - np.arange(len(popularity)) / (10.0 * max(len(popularity), 1))  # counts: no ties
    ranks = np.concatenate([rank_targets(np.broadcast_to(pop, (len(users[s:s + bs]), len(pop))), seqs, users[s:s + bs],
                                         ends[s:s + bs], targets[s:s + bs]) for s in range(0, len(users), bs)])
    return float(ndcg_hr(ranks)["ndcg10"])


KNN_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 1000.0)
PRIOR_GRID_POP = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
PRIOR_GRID_CAT = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
GRID_MAX_CELLS = 200_000_000
GRID_MIN_USERS = 300


def _best_on_grid(
    model: TrainedModel,
    seqs: Sequences,
    users: np.ndarray,
    ends: np.ndarray,
    targets: np.ndarray,
    coefs: np.ndarray,
    batch_parts: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, list[np.ndarray]]],
) -> tuple[int, dict[str, float]]:
    """Return (grid index, {"ndcg10", "hr10", "n"}) of the scoring variant best on these validation targets.

    ``batch_parts(u, e)`` returns the base scores (b, n_items) of a batch and the terms the variants add: variant
    g scores ``base + coefs[g, 0] * terms[0] + ...`` (training/grid_ranks.py); seen items are masked in the base.
    Index 0 (the plain model) wins ties.
    """
    # Why a cap: every variant ranks the whole catalogue for every user, so the cost grows with
    # users x items x variants; past GRID_MAX_CELLS users x items (100k items at 2,000 users) a seeded
    # subsample of the users keeps the search to minutes on a 500k-item catalogue.
    max_users = max(GRID_MIN_USERS, GRID_MAX_CELLS // max(model.n_items, 1))
    if len(users) > max_users:
        keep = np.sort(np.random.default_rng(0).choice(len(users), max_users, replace=False))
        users, ends, targets = users[keep], ends[keep], targets[keep]
    ranks = np.zeros((len(coefs), len(users)), dtype=np.int64)
    compiled = use_kernel(len(users) * model.n_items * len(coefs))
    bs = max(1, min(model.batch_size, 2_000_000 // max(model.n_items, 1)))
    for s in range(0, len(users), bs):
        u, e, t = users[s : s + bs], ends[s : s + bs], targets[s : s + bs]
        base, terms = batch_parts(u, e)
        seqs.mask_seen(base, u, e)
        ranks[:, s : s + bs] = grid_ranks(base, terms, coefs, t, compiled)
    results = [ndcg_hr(r) for r in ranks]
    best = 0
    for g, r in enumerate(results):
        if r["ndcg10"] > results[best]["ndcg10"] + 1e-9:
            best = g
    return best, results[best]


def select_knn_weight(
    model: TrainedModel, knn, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray
) -> tuple[float, dict[str, float]]:
    """Return (weight, {"ndcg10", "hr10", "n"}) of the item-kNN term best on these validation targets.

    score = model score (prior included) + weight * item-kNN score; 0 (the model alone) wins ties, and
    the largest weight amounts to item-kNN with the model as tie-break, so the result is at least as
    good on validation as the better of the two.
    """
    V = model.item_vectors()

    def parts(u: np.ndarray, e: np.ndarray):
        return model.user_vectors(seqs, u, e) @ V.T, [knn.score_histories(seqs, u, e)]  # (b, n_items) each

    best, result = _best_on_grid(model, seqs, users, ends, targets, np.array(KNN_GRID, dtype=np.float32)[:, None], parts)
    return float(KNN_GRID[best]), result


COLD_GRID = (COLD_MAX_EVENTS, 1, 0)  # the fixed rule first: it wins ties
COLD_CELLS = 8_000_000  # users x items scored at a time


def select_cold_threshold(
    model: TrainedModel, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray, novel_weight: float,
) -> tuple[int, dict[str, float]]:
    """Return (t, figures): shoppers with at most t known events get the cold-start list, t in COLD_GRID chosen
    by the validation NDCG@10 of the retrieval stage, a target in a category new to the shopper weighing
    ``novel_weight`` (as in the fusion scorer's fit). Only shoppers with at most max(COLD_GRID) events differ
    between the choices, so only they are scored, each both ways."""
    users, ends, targets = (np.asarray(a, dtype=np.int64) for a in (users, ends, targets))
    lengths = ends - seqs.offsets[users]
    pick = np.flatnonzero(lengths <= max(COLD_GRID))
    if len(pick) == 0:
        return COLD_MAX_EVENTS, {"n": 0}
    cats = np.asarray(model.item_category, dtype=np.int64)
    ndcg = {"warm": np.zeros(len(pick)), "cold": np.zeros(len(pick))}
    recs = {"warm": Recommender(model, cold_max_events=0), "cold": Recommender(model, cold_max_events=max(COLD_GRID))}
    bs = max(1, COLD_CELLS // max(model.n_items, 1))
    for s in range(0, len(pick), bs):
        rows = pick[s : s + bs]
        u, e, t = users[rows], ends[rows], targets[rows]
        for kind, rec in recs.items():
            rank = masked_ranks(rec.retrieval_scores(seqs, u, e), t)  # history already at -inf
            ndcg[kind][s : s + len(rows)] = np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)
    hist_rows, hist_pos = seqs.history_positions(users[pick], ends[pick])
    seen = np.zeros((len(pick), int(cats.max(initial=0)) + 1), dtype=bool)
    seen[hist_rows, cats[seqs.items[hist_pos]]] = True
    novel = ~seen[np.arange(len(pick)), cats[targets[pick]]]
    weight = np.where(novel, float(novel_weight), 1.0)
    short = lengths[pick]
    # the other validation shoppers score the same under every choice: the sums over these decide
    totals = [float((np.where(short <= th, ndcg["cold"], ndcg["warm"]) * weight).sum()) for th in COLD_GRID]
    best = 0
    for i, total in enumerate(totals):
        if total > totals[best] + 1e-9:
            best = i
    return int(COLD_GRID[best]), {
        "n": int(len(pick)), "n_novel": int(novel.sum()),
        "ndcg10_cold": float(ndcg["cold"].mean()), "ndcg10_warm": float(ndcg["warm"].mean()),
        "ndcg10_cold_novel": float(ndcg["cold"][novel].mean()) if novel.any() else 0.0,
        "ndcg10_warm_novel": float(ndcg["warm"][novel].mean()) if novel.any() else 0.0,
    }


def fit_category_mix(model: TrainedModel, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Set and return the weights of the next-category mixture (models/category_history.py) fitted by EM on
    the categories of these validation targets; the tables were counted on the training part only."""
    hist = model.category_history
    flow = model.prior.transition_proba.astype(np.float64)
    cats = np.asarray(model.item_category, dtype=np.int64)
    recent, has = recent_flow(model.prior, cats, seqs, users, ends)
    keep = np.flatnonzero(has)
    parts = np.concatenate(
        [category_parts(hist, recent[keep[p]], flow, cats, seqs, users[keep[p]], ends[keep[p]]) for p in chunks(len(keep))], axis=1
    ) if len(keep) else np.zeros((3, 0, flow.shape[0]))
    mix = fit_mix(parts, cats[np.asarray(targets, dtype=np.int64)[keep]])
    model.category_history = hist.with_mix(mix)
    return mix


def select_prior_weights(
    model: TrainedModel, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray
) -> tuple[float, float, dict[str, float]]:
    """Return (w_pop, w_cat, {"ndcg10", "hr10", "n"}) of the log-prior blend best on these validation targets.

    Grid search over PRIOR_GRID_POP x PRIOR_GRID_CAT of score = dot + w_pop * log P(item) + w_cat * category
    lift (models/prior.py); (0, 0) -- the model alone -- wins ties, so the blend is on only when it helps.
    """
    model.set_prior_weights(0.0, 0.0)
    grid = [(a, b) for a in PRIOR_GRID_POP for b in PRIOR_GRID_CAT]
    V = model.base_item_vectors()
    log_pop = model.prior.log_pop[None, :]

    def parts(u: np.ndarray, e: np.ndarray):
        states = model.base_user_vectors(seqs, u, e)
        lift = model.category_lift(seqs, u, e, states=states)[:, model.prior.bucket]  # (b, n_items)
        return states @ V.T, [log_pop, lift]

    best, result = _best_on_grid(model, seqs, users, ends, targets, np.array(grid, dtype=np.float32), parts)
    return float(grid[best][0]), float(grid[best][1]), result


def fit_neighbour_tables(ds: InteractionDataset, train_seqs: Sequences) -> tuple[ItemKNNRanker, ItemKNNRanker]:
    """Return (co-occurrence, next-item rules) fitted on the training part only, like the embeddings and the
    popularity prior: no validation or test target leaks into the model, so evaluating it on this log stays honest."""
    return ItemKNNRanker().fit(ds, train_seqs), ItemKNNRanker.next_items().fit(ds, train_seqs)


def tune_blends(
    model: TrainedModel, ds: InteractionDataset, split: LeaveLastOut, v_users: np.ndarray, v_ends: np.ndarray, v_targets: np.ndarray,
    best_epoch: int, model_ndcg: float, report, tables: tuple[ItemKNNRanker, ItemKNNRanker] | None = None,
) -> dict:
    """Choose the next-category mixture, the log-prior and the item-kNN blend weights on validation; set them on
    ``model``; return the figures. ``tables``: (co-occurrence, next-item rules) already fitted on the training part."""
    tc = model.config.train
    valid: dict = {}
    if len(v_users) and tc.prior_blend:
        report(epoch=best_epoch, phase=Phase.PRIOR)
        w_pop, w_cat, vp = select_prior_weights(model, ds.seqs, v_users, v_ends, v_targets)
        if tc.category_mix:
            # the mixture replaces the recent flow only when the blend it feeds does better on validation,
            # like every other blend (ties keep the flow: the fusion scorer reads this estimate too)
            flow = model.category_history
            mix = fit_category_mix(model, ds.seqs, v_users, v_ends, v_targets)
            m_pop, m_cat, vm = select_prior_weights(model, ds.seqs, v_users, v_ends, v_targets)
            won = vm["ndcg10"] > vp["ndcg10"] + 1e-9
            valid.update({"category_mix": [round(float(x), 4) for x in mix], "category_mix_on": bool(won), "ndcg10_prior_flow": vp["ndcg10"]})
            log.info("next-category mixture (recent flow, last two, habit) %s: valid ndcg@10 %.4f vs %.4f with the flow alone -> %s",
                     np.round(mix, 3), vm["ndcg10"], vp["ndcg10"], "on" if won else "off")
            if won:
                w_pop, w_cat, vp = m_pop, m_cat, vm
            else:
                model.category_history = flow
        model.set_prior_weights(w_pop, w_cat)
        valid.update({"prior_w_pop": w_pop, "prior_w_cat": w_cat, "ndcg10_prior": vp["ndcg10"], "hr10_prior": vp["hr10"]})
        log.info("log-prior blend: w_pop=%.2f w_cat=%.2f valid ndcg@10 %.4f (model alone %.4f)", w_pop, w_cat, vp["ndcg10"], model_ndcg)
    if len(v_users) and tc.knn_blend:
        report(epoch=best_epoch, phase=Phase.PRIOR)
        knn_train, rules = tables if tables is not None else fit_neighbour_tables(ds, ds.seqs.truncate(split.train_end))
        w_knn, vk = select_knn_weight(model, knn_train, ds.seqs, v_users, v_ends, v_targets)
        # the fusion scorer reads the next-item rules' score whichever table retrieval uses
        model.rules = rules
        if tc.knn_choice:
            w_rules, vr = select_knn_weight(model, rules, ds.seqs, v_users, v_ends, v_targets)
            won = vr["ndcg10"] > vk["ndcg10"] + 1e-9
            valid.update({"knn_next_items": bool(won), "ndcg10_knn_cooccurrence": vk["ndcg10"], "ndcg10_knn_next_items": vr["ndcg10"]})
            log.info("item neighbours: next-item rules valid ndcg@10 %.4f (weight %.2f) vs co-occurrence %.4f (weight %.2f) -> %s",
                     vr["ndcg10"], w_rules, vk["ndcg10"], w_knn, "next-item rules" if won else "co-occurrence")
            if won:
                knn_train, w_knn, vk = rules, w_rules, vr
        # kept even at weight 0: its neighbour score is one of the fusion scorer's inputs
        model.knn, model.knn_weight = knn_train, w_knn
        valid.update({"knn_weight": w_knn, "ndcg10_knn": vk["ndcg10"], "hr10_knn": vk["hr10"]})
        log.info("item-kNN term: weight %.2f valid ndcg@10 %.4f", w_knn, vk["ndcg10"])
    if len(v_users) and tc.cold_choice:
        # after the blends: the encoders' list it is compared with carries them
        report(epoch=best_epoch, phase=Phase.PRIOR)
        model.cold_max_events, vc = select_cold_threshold(model, ds.seqs, v_users, v_ends, v_targets, tc.fusion_novel_weight)
        valid.update({"cold_max_events": model.cold_max_events} | {f"cold_{k}": v for k, v in vc.items()})
        log.info("cold-start list for shoppers with <= %d known events (%s)", model.cold_max_events, vc)
    return valid
