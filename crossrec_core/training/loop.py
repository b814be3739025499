"""The fit loop: every position predicts its next item in one causal pass, early stopping on valid NDCG@10.

Loss: full-catalogue softmax cross-entropy when the catalogue is small, else a sampled softmax with many
shared uniform negatives (Klenitskiy & Vasilev, RecSys 2023: CE beats one-negative BCE by a wide margin);
``loss="bce"`` keeps SASRec's original one-negative BCE as a reference. After the retrieval model and
its blend weights, the fusion scorer and its probability mapping are fit on the validation targets'
candidates, positions nothing before them was fitted on (``_fit_fusion``, models/rerank.py).

The best epoch's weights are kept as the final model (no refit on the valid event: simple and honest
about what validation measured).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from crossrec_core.config import ModelConfig
from crossrec_core.data.dataset import InteractionDataset, Sequences
from crossrec_core.device import pick_device, seed_everything
from crossrec_core.errors import ConfigError, DataError
from crossrec_core.storage import registry
from crossrec_core.storage.workspace import atomic_write_json, publish_dir
from crossrec_core.models.fusion import CrossRecNet, build_net  # noqa: F401 (build_net: part of this module's API)
from crossrec_core.models.item_encoder import attribute_token_matrix, build_attribute_vocab
from crossrec_core.models.text import TextEncoder, item_texts
from crossrec_core.evaluation.baselines import ItemKNNRanker
from crossrec_core.models.rerank import N_FEATURES, FusionData, fit_fusion
from crossrec_core.models.trained import TrainedModel, event_hashes, gather_ranges, history_windows
from crossrec_core.serving.recommender import Recommender

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainProgress:
    """One progress report: phase is "text", "train", "valid", "prior" (blend weights), "fusion candidates"
    (step/n_steps = positions mined), "fusion" or "done"."""

    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    loss: float | None
    valid_ndcg10: float | None
    elapsed_s: float
    phase: str


# -- data preparation (numpy, once) -------------------------------------------------------------
def training_windows(seqs: Sequences, train_end: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (users, ends) of training windows: each user's train events cut into chunks of max_len targets.

    A window ending at ``e`` covers events [e - max_len - 1, e): inputs are all but the last, targets all
    but the first. Chunks are taken from the most recent end backwards, so long histories give several.
    """
    starts = seqs.offsets[:-1]
    n = np.asarray(train_end, dtype=np.int64) - starts
    n_chunks = np.where(n >= 2, -(-(n - 1) // max_len), 0)
    users = np.repeat(np.arange(len(n), dtype=np.int64), n_chunks)
    k = np.arange(int(n_chunks.sum()), dtype=np.int64) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    ends = np.asarray(train_end, dtype=np.int64)[users] - k * max_len
    return users, ends


def seen_before(seqs: Sequences) -> np.ndarray:
    """Return bool (n_events,): the user already had this item earlier in the sequence."""
    if seqs.n_events == 0:
        return np.zeros(0, dtype=bool)
    df = pd.DataFrame({"u": seqs.user_of_event(), "i": seqs.items})
    return df.duplicated(keep="first").to_numpy()


def train_popularity(ds: InteractionDataset, train_end: np.ndarray) -> np.ndarray:
    """Return float32 (n_items,) interaction counts over the training events."""
    row, pos = gather_ranges(ds.seqs.offsets[:-1], train_end - ds.seqs.offsets[:-1])
    return np.bincount(ds.seqs.items[pos], minlength=ds.n_items).astype(np.float32)


def category_transition_counts(ds: InteractionDataset, train_end: np.ndarray) -> np.ndarray:
    """Return float32 (n_categories, n_categories) counts of consecutive category pairs in training sequences."""
    nc = ds.n_categories
    starts = ds.seqs.offsets[:-1]
    row, pos = gather_ranges(starts, np.maximum(train_end - starts - 1, 0))  # pairs (pos, pos + 1)
    a = ds.item_category[ds.seqs.items[pos]].astype(np.int64)
    b = ds.item_category[ds.seqs.items[pos + 1]].astype(np.int64)
    return np.bincount(a * nc + b, minlength=nc * nc).astype(np.float32).reshape(nc, nc)


def _training_event_hashes(ds: InteractionDataset, train_end: np.ndarray) -> np.ndarray:
    """Return the hashes of every event the model is fitted on: each user's events before train_end."""
    row, pos = gather_ranges(ds.seqs.offsets[:-1], train_end - ds.seqs.offsets[:-1])
    return np.unique(event_hashes(ds.user_ids[row], ds.item_ids[ds.seqs.items[pos]], ds.seqs.times[pos]))


def compute_item_features(ds: InteractionDataset, cfg: ModelConfig, device: torch.device, on_text: Callable[[int, int], None] | None) -> dict:
    """Return the per-item inputs of the item encoder: text vectors, attribute tokens/vocab, vec_* matrix."""
    feats: dict = {"attr_vocab": ["<pad>", "<unk>"], "text": None, "vectors": None}
    if cfg.item.use_text:
        enc = TextEncoder(
            cfg.item.text_model_dir,
            max_seq_length=cfg.item.text_max_seq_length,
            batch_size=cfg.item.text_batch_size,
            device=str(device),
        )
        feats["text"] = enc.encode(item_texts(ds.items, ds.attribute_columns), on_progress=on_text)
    if cfg.item.use_attributes and ds.attribute_columns:
        vocab = build_attribute_vocab(ds.items, ds.attribute_columns, cfg.item.attr_vocab_max)
        feats["attr_vocab"] = vocab
        feats["attr_tokens"] = attribute_token_matrix(ds.items, ds.attribute_columns, vocab, cfg.item.attr_max_tokens)
    if cfg.item.use_vectors and ds.vector_columns:
        v = ds.items[list(ds.vector_columns)].to_numpy(dtype=np.float32)
        sd = v.std(axis=0, keepdims=True)
        feats["vectors"] = (v - v.mean(axis=0, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    return feats


def _fill_buffers(net: CrossRecNet, ds: InteractionDataset, feats: dict, popularity: np.ndarray) -> None:
    enc = net.item_encoder
    with torch.no_grad():
        enc.item_category.copy_(torch.from_numpy(ds.item_category.astype(np.int64)))
        enc.id_mask.copy_(torch.from_numpy((popularity > 0).astype(np.float32)))
        if enc.use_attr:
            enc.attr_tokens.copy_(torch.from_numpy(feats["attr_tokens"]))
        if enc.use_text:
            enc.text_vecs.copy_(torch.from_numpy(feats["text"]))
        if enc.use_vec:
            enc.extra_vecs.copy_(torch.from_numpy(feats["vectors"]))


# -- loss -----------------------------------------------------------------------------------
class _RetrievalLoss(nn.Module):
    """Wraps the encoders so one forward returns the loss of a batch (what DDP needs)."""

    def __init__(self, net: CrossRecNet, mode: str, n_negatives: int) -> None:
        super().__init__()
        self.item_encoder = net.item_encoder
        self.user_encoder = net.user_encoder
        self.mode = mode
        self.n_negatives = n_negatives

    def forward(self, items, events, gaps, valid, targets, weights, negatives):  # noqa: ANN001
        table = self.item_encoder() if self.mode == "ce" else None  # (n_items, d)
        vecs = table[items.clamp(min=0)] if table is not None else self.item_encoder(items.clamp(min=0))
        h = self.user_encoder(vecs, events, gaps, valid)  # (B, T, d)
        m = weights > 0
        hv, tv, wv = h[m], targets[m], weights[m]  # (N, d), (N,), (N,)
        if hv.shape[0] == 0:
            return h.sum() * 0.0
        if self.mode == "ce":
            logits = hv @ table.T  # (N, n_items)
            loss = nn.functional.cross_entropy(logits.float(), tv, reduction="none")
        elif self.mode == "sampled":
            pos_vec = self.item_encoder(tv)  # (N, d)
            neg_vec = self.item_encoder(negatives)  # (K, d)
            pos = (hv * pos_vec).sum(-1, keepdim=True)  # (N, 1)
            neg = hv @ neg_vec.T  # (N, K)
            # uniform sampling: the logQ correction is a constant and cancels; accidental hits are masked
            neg = neg.masked_fill(negatives.unsqueeze(0) == tv.unsqueeze(1), float("-inf"))
            logits = torch.cat([pos, neg], dim=1).float()
            loss = nn.functional.cross_entropy(logits, torch.zeros_like(tv), reduction="none")
        else:  # bce, one negative per position (SASRec)
            neg_idx = negatives[: hv.shape[0]] if negatives.shape[0] >= hv.shape[0] else negatives[torch.arange(hv.shape[0], device=hv.device) % negatives.shape[0]]
            pos = (hv * self.item_encoder(tv)).sum(-1)
            neg = (hv * self.item_encoder(neg_idx)).sum(-1)
            loss = nn.functional.softplus(-pos.float()) + nn.functional.softplus(neg.float())
        return (loss * wv).sum() / wv.sum().clamp(min=1e-6)


def make_adam(params, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Return Adam with its fused kernel where this torch has one (CPU and CUDA), else the default.

    Why: the item-ID table takes a dense Adam update every step; on a 500k-item catalogue the fused
    kernel does that step in about a third of the time of the per-tensor loop (bench/RESULTS.md).
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # e.g. a device without a fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class FitOptimizer:
    """The optimisers of the fit loop, stepped together: Adam for the dense parameters and, when the
    item-ID table has a sparse gradient, a lazy Adam (torch.optim.SparseAdam) for that table.

    Why: with a sampled loss a step touches a few thousand of the table's rows; a dense gradient and
    Adam update of all of them made a step cost grow with the catalogue (500k items: ~70 % of a step,
    bench/RESULTS.md). SparseAdam updates only the rows a batch touched.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    @property
    def is_sparse(self) -> bool:
        return any(isinstance(o, torch.optim.SparseAdam) for o in self.optimizers)


def make_fit_optimizer(net: CrossRecNet, tc, *, mode: str, distributed: bool) -> FitOptimizer:
    """Return the fit loop's optimiser for every parameter but the fusion head's (trained after).

    The item-ID table takes the sparse path when the catalogue has at least tc.sparse_id_min_items
    items, the loss is sampled or BCE (the full softmax touches every row anyway), there is no
    weight decay (SparseAdam has none) and training is not distributed (DDP's all-reduce is for
    dense gradients). Sets the table's ``sparse`` flag to match; ``end_fit`` clears it.
    """
    named = [(n, p) for n, p in net.named_parameters() if not n.startswith("fusion.")]
    id_emb = getattr(net.item_encoder, "id_emb", None)
    sparse = bool(
        id_emb is not None and id_emb.num_embeddings >= tc.sparse_id_min_items and mode in ("sampled", "bce")
        and tc.weight_decay == 0.0 and not distributed
    )
    if not sparse:
        return FitOptimizer([make_adam([p for _, p in named], lr=tc.lr, weight_decay=tc.weight_decay)])
    id_emb.sparse = True
    dense = [p for _, p in named if p is not id_emb.weight]
    return FitOptimizer([make_adam(dense, lr=tc.lr, weight_decay=0.0), torch.optim.SparseAdam([id_emb.weight], lr=tc.lr)])


def end_fit(net: CrossRecNet) -> None:
    """Return the item-ID table to dense gradients (what fine-tuning and the fusion head expect)."""
    id_emb = getattr(net.item_encoder, "id_emb", None)
    if id_emb is not None:
        id_emb.sparse = False


def resolve_loss(cfg: ModelConfig, n_items: int) -> str:
    """Return the loss actually used: "ce", "sampled" or "bce"."""
    if cfg.train.loss == "auto":
        return "ce" if n_items <= cfg.train.full_softmax_max_items else "sampled"
    return cfg.train.loss


# -- evaluation -----------------------------------------------------------------------------
def rank_targets(scores: np.ndarray, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return int64 (B,) 0-based rank of each target among unseen items; a large rank if it was seen.

    Seen items (anything in the history) are excluded from the ranking, as the product never recommends them.
    """
    scores = scores.copy()
    starts = seqs.offsets[users]
    row, pos = gather_ranges(starts, ends - starts)
    scores[row, seqs.items[pos]] = -np.inf
    t = scores[np.arange(len(users)), targets]
    rank = (scores > t[:, None]).sum(axis=1)
    return np.where(np.isfinite(t), rank, scores.shape[1]).astype(np.int64)


def ndcg_hr(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """Return {"ndcg10", "hr10", "n"} for 0-based ranks."""
    if len(ranks) == 0:
        return {f"ndcg{k}": 0.0, f"hr{k}": 0.0, "n": 0}
    hit = ranks < k
    ndcg = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {f"ndcg{k}": float(ndcg.mean()), f"hr{k}": float(hit.mean()), "n": int(len(ranks))}


def _valid_ranks(model: TrainedModel, seqs: Sequences, users: np.ndarray, ends: np.ndarray, targets: np.ndarray) -> np.ndarray:
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
    n_grid: int,
    batch_parts: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, Callable[[int, np.ndarray], np.ndarray]]],
) -> tuple[int, dict[str, float]]:
    """Return (grid index, {"ndcg10", "hr10", "n"}) of the scoring variant best on these validation targets.

    ``batch_parts(u, e)`` returns the base scores (b, n_items) of a batch and ``score(g, base)`` giving
    variant g's scores; seen items are masked in the base. Index 0 (the plain model) wins ties.
    """
    # Why a cap: every variant ranks the whole catalogue for every user, so the cost grows with
    # users x items x variants; past GRID_MAX_CELLS users x items (100k items at 2,000 users) a seeded
    # subsample of the users keeps the search to minutes on a 500k-item catalogue.
    max_users = max(GRID_MIN_USERS, GRID_MAX_CELLS // max(model.n_items, 1))
    if len(users) > max_users:
        keep = np.sort(np.random.default_rng(0).choice(len(users), max_users, replace=False))
        users, ends, targets = users[keep], ends[keep], targets[keep]
    ranks = np.zeros((n_grid, len(users)), dtype=np.int64)
    bs = max(1, min(model.batch_size, 2_000_000 // max(model.n_items, 1)))
    for s in range(0, len(users), bs):
        u, e, t = users[s : s + bs], ends[s : s + bs], targets[s : s + bs]
        base, score = batch_parts(u, e)
        row, pos = gather_ranges(seqs.offsets[u], e - seqs.offsets[u])
        base[row, seqs.items[pos]] = -np.inf
        rows = np.arange(len(u))
        for g in range(n_grid):
            sc = score(g, base)
            tv = sc[rows, t]
            ranks[g, s : s + bs] = np.where(np.isfinite(tv), (sc > tv[:, None]).sum(axis=1), sc.shape[1])
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
        nb = knn.score_histories(seqs, u, e)  # (b, n_items)
        return model.user_vectors(seqs, u, e) @ V.T, lambda g, base: base + np.float32(KNN_GRID[g]) * nb if KNN_GRID[g] else base

    best, result = _best_on_grid(model, seqs, users, ends, targets, len(KNN_GRID), parts)
    return float(KNN_GRID[best]), result


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
        lift = model.category_lift(seqs, u, e)[:, model.prior.bucket]  # (b, n_items)

        def score(g: int, dot: np.ndarray) -> np.ndarray:
            a, b = grid[g]
            return dot + a * log_pop + b * lift if (a or b) else dot

        return model.base_user_vectors(seqs, u, e) @ V.T, score

    best, result = _best_on_grid(model, seqs, users, ends, targets, len(grid), parts)
    return float(grid[best][0]), float(grid[best][1]), result


# -- checkpoints ----------------------------------------------------------------------------
def _save_checkpoint(ckpt: Path, net: CrossRecNet, best_state: dict, opt: FitOptimizer, state: dict) -> None:
    """Write one epoch's checkpoint as a whole: all files go to a staging folder that then replaces
    ``ckpt/current`` in one atomic exchange, so a kill can never pair weights of one epoch with the
    state of another."""
    ckpt.mkdir(parents=True, exist_ok=True)
    staging = ckpt / f".next-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        registry.write_safetensors(staging / "last.safetensors", net.state_dict())
        registry.write_safetensors(staging / "best.safetensors", best_state)
        tensors, scalars = _optimizer_to_flat(opt)
        registry.write_safetensors(staging / "optimizer.safetensors", tensors)
        atomic_write_json(staging / "state.json", {**state, "optimizer": scalars})
        publish_dir(staging, _checkpoint_folder(ckpt))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _same_settings(saved: dict | None, current: dict) -> bool:
    """Return whether a checkpoint's config matches, ignoring the epoch cap (resuming may raise it)."""
    if not isinstance(saved, dict):
        return False

    def strip(d: dict) -> dict:
        d = json.loads(json.dumps(d))
        d.get("train", {}).pop("epochs", None)
        return d

    return strip(saved) == strip(current)


def _checkpoint_folder(ckpt: Path) -> Path:
    """Return the folder holding the last complete checkpoint inside ``ckpt``."""
    return ckpt / "current"


def _optimizer_to_flat(opt: FitOptimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (tensors, JSON scalars) of every optimiser's state; tensor keys are "i.param.name"."""
    tensors, scalars = {}, {"optimizers": []}
    for i, o in enumerate(opt.optimizers):
        sd = o.state_dict()
        sc = {"param_groups": sd["param_groups"], "state": {}}
        for pid, st in sd["state"].items():
            sc["state"][str(pid)] = {}
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    tensors[f"{i}.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    sc["state"][str(pid)][k] = float(v.item() if torch.is_tensor(v) else v)
        scalars["optimizers"].append(sc)
    return tensors, scalars


def _optimizer_from_flat(opt: FitOptimizer, tensors: dict, scalars: dict) -> None:
    saved = scalars.get("optimizers", [])
    if len(saved) != len(opt.optimizers):
        raise ConfigError("The checkpoint's optimiser state does not match this training run; delete it or train without resume.")
    for i, (o, sc) in enumerate(zip(opt.optimizers, saved)):
        state = {}
        for pid, vals in sc["state"].items():
            st = {k: torch.tensor(v, dtype=torch.float32) for k, v in vals.items()}
            prefix = f"{i}.{pid}."
            st.update({key[len(prefix):]: t for key, t in tensors.items() if key.startswith(prefix)})
            state[int(pid)] = st
        o.load_state_dict({"state": state, "param_groups": sc["param_groups"]})


# -- the fit loop ---------------------------------------------------------------------------
def train_model(
    ds: InteractionDataset,
    config: ModelConfig | None = None,
    *,
    on_progress: Callable[[TrainProgress], None] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    name: str | None = None,
) -> TrainedModel:
    """Return a TrainedModel fit on ds with leave-last-out early stopping on validation NDCG@10.

    Args:
        ds: the interaction log.
        config: model + training settings (defaults when None).
        on_progress: called every few steps and at each phase change.
        checkpoint_dir: when given, a checkpoint (safetensors + JSON, no pickle) is written every epoch.
        resume: continue from the last checkpoint in checkpoint_dir (same data and config required).
        name: the model's name (defaults to the dataset name).
    Under torch.distributed (torchrun), batches are split over ranks and gradients averaged (DDP).
    """
    cfg = config or ModelConfig()
    tc = cfg.train
    if ds.n_events < 2 or ds.n_items < 2:
        raise DataError(f"'{ds.name}' has {ds.n_events} events on {ds.n_items} items; training needs at least 2 of each.")
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if dist else 0
    world = torch.distributed.get_world_size() if dist else 1
    device = pick_device(tc.device)
    if dist and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    seed_everything(tc.seed)
    t0 = time.perf_counter()
    n_epochs = tc.epochs

    def report(**kw) -> None:
        if on_progress is not None:
            base = dict(epoch=0, n_epochs=n_epochs, step=0, n_steps=0, loss=None, valid_ndcg10=None)
            base.update(kw)
            on_progress(TrainProgress(elapsed_s=time.perf_counter() - t0, **base))

    # text vectors: rank 0 fills the cache first, the others then read it
    def on_text(done: int, total: int) -> None:
        report(step=done, n_steps=total, phase="text")

    if dist and rank != 0:
        torch.distributed.barrier()
    feats = compute_item_features(ds, cfg, device, on_text)
    if dist and rank == 0:
        torch.distributed.barrier()

    split = ds.leave_last_out()
    popularity = train_popularity(ds, split.train_end)
    net = build_net(
        cfg,
        n_items=ds.n_items,
        n_categories=ds.n_categories,
        n_event_types=len(ds.event_names),
        attr_vocab_size=len(feats["attr_vocab"]),
        use_text=feats["text"] is not None,
        n_vector_columns=0 if feats["vectors"] is None else feats["vectors"].shape[1],
    )
    _fill_buffers(net, ds, feats, popularity)
    net.to(device)
    mode = resolve_loss(cfg, ds.n_items)
    loss_mod = _RetrievalLoss(net, mode, tc.n_negatives)
    opt = make_fit_optimizer(net, tc, mode=mode, distributed=dist)
    if dist:
        ddp_mod = nn.parallel.DistributedDataParallel(loss_mod, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp_mod = loss_mod
    use_amp = device.type == "cuda"
    amp_dtype = torch.bfloat16 if (use_amp and torch.cuda.is_bf16_supported()) else torch.float16

    # training windows, built once with numpy
    W = cfg.user.max_len + 1
    w_users, w_ends = training_windows(ds.seqs, split.train_end, cfg.user.max_len)
    if len(w_users) == 0:
        raise DataError(f"'{ds.name}' has no user with 2 or more training events, so there is nothing to learn from.")
    win = history_windows(ds.seqs, w_users, w_ends, W, cfg.user.n_time_buckets)
    if win["items"].shape[1] < W:  # every history is shorter than the window: pad on the left
        pad = W - win["items"].shape[1]
        for k, fill in (("items", -1), ("events", 0), ("gaps", 0), ("valid", False), ("pos", 0)):
            win[k] = np.pad(win[k], ((0, 0), (pad, 0)), constant_values=fill)
    seen = seen_before(ds.seqs)
    tgt_valid = win["valid"][:, 1:] & win["valid"][:, :-1]
    weights = np.where(tgt_valid, np.where(seen[win["pos"][:, 1:]], tc.seen_target_weight, 1.0), 0.0).astype(np.float32)
    if tc.seen_target_weight == 0.0 and not (weights > 0).any():
        weights = tgt_valid.astype(np.float32)  # every target a repeat: learning repeats beats learning nothing
    # the first event of a window gets no gap (its predecessor is outside the input)
    tensors = {
        "items": torch.from_numpy(win["items"][:, :-1]),
        "events": torch.from_numpy(win["events"][:, :-1]),
        "gaps": torch.from_numpy(win["gaps"][:, :-1]),
        "valid": torch.from_numpy(win["valid"][:, :-1]),
        "targets": torch.from_numpy(np.maximum(win["items"][:, 1:], 0)),
        "weights": torch.from_numpy(weights),
    }
    win_len = win["valid"][:, :-1].sum(axis=1)
    n_win = len(w_users)
    bs = tc.batch_size
    # a multiple of the world size, so every DDP rank runs the same number of steps (no hang)
    n_batches_total = -(-(-(-n_win // bs)) // world) * world
    n_steps = n_batches_total // world

    v_users = split.valid_users.astype(np.int64)
    v_ends = split.valid_pos
    if len(v_users) > tc.valid_max_users:
        # early stopping needs a stable estimate, not every user: a seeded subsample keeps validation cheap
        keep = np.sort(np.random.default_rng(tc.seed).choice(len(v_users), tc.valid_max_users, replace=False))
        v_users, v_ends = v_users[keep], v_ends[keep]
    v_targets = ds.seqs.items[v_ends].astype(np.int64)

    model = TrainedModel(
        name=name or ds.name,
        config=cfg,
        net=net,
        item_ids=ds.item_ids,
        item_titles=ds.item_titles,
        category_names=ds.category_names,
        item_category=ds.item_category,
        event_names=ds.event_names,
        popularity=popularity,
        category_transitions=category_transition_counts(ds, split.train_end),
        train_event_hashes=_training_event_hashes(ds, split.train_end),
        metrics={},
        data_fingerprint=ds.fingerprint(),
        attribute_columns=ds.attribute_columns if len(feats["attr_vocab"]) > 2 else (),
        vector_columns=ds.vector_columns if feats["vectors"] is not None else (),
        attr_vocab=feats["attr_vocab"],
        device=device,
        batch_size=tc.eval_batch_size,
    )

    history: list[dict] = []
    best = {"ndcg10": -1.0, "epoch": 0}
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    bad_epochs = 0
    start_epoch = 1
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if resume and ckpt is not None and (_checkpoint_folder(ckpt) / "state.json").is_file():
        state = registry.read_json(_checkpoint_folder(ckpt) / "state.json")
        if state.get("data_fingerprint") != ds.fingerprint() or not _same_settings(state.get("config"), cfg.to_dict()):
            raise ConfigError(f"The checkpoint in {ckpt} was made with other data or settings; delete it or train without resume.")
        net.load_state_dict(registry.read_safetensors(_checkpoint_folder(ckpt) / "last.safetensors"))
        best_state = registry.read_safetensors(_checkpoint_folder(ckpt) / "best.safetensors")
        _optimizer_from_flat(opt, registry.read_safetensors(_checkpoint_folder(ckpt) / "optimizer.safetensors"), state["optimizer"])
        history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
        start_epoch = int(state["epoch"]) + 1
        log.info("resuming from epoch %d (best %s)", state["epoch"], best)
    if bad_epochs >= tc.patience:
        start_epoch = n_epochs + 1

    log.info("training %s: %d windows, %d steps/epoch, loss=%s%s, device=%s", ds.name, n_win, n_steps, mode, " (sparse item-ID gradient)" if opt.is_sparse else "", device)
    for epoch in range(start_epoch, n_epochs + 1):
        # per-epoch seeds make resume reproduce an uninterrupted run exactly
        torch.manual_seed(tc.seed * 1009 + epoch)
        rng = np.random.default_rng([tc.seed, epoch])
        gen = torch.Generator().manual_seed(tc.seed * 7919 + epoch)
        # batches of similar length (less padding), in random order
        order = np.lexsort((rng.random(n_win), win_len))
        batches = [b for b in np.array_split(order, n_batches_total) if len(b)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
        if dist:
            batches = batches[rank::world]
            if len(batches) < n_steps:  # fewer windows than ranks: repeat one so every rank steps
                batches = batches + batches[: n_steps - len(batches)] if batches else [order[:1]] * n_steps
        net.train()
        t_ep = time.perf_counter()
        losses = []
        for step, b in enumerate(batches, start=1):
            L = int(win_len[b].max())
            bt = {k: v[torch.from_numpy(b)][:, -L:].to(device) for k, v in tensors.items()}
            negs = torch.randint(0, ds.n_items, (tc.n_negatives if mode == "sampled" else (bs * L if mode == "bce" else 1),), generator=gen).to(device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                loss = ddp_mod(bt["items"], bt["events"], bt["gaps"], bt["valid"], bt["targets"], bt["weights"], negs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if step % tc.progress_every == 0 or step == len(batches):
                report(epoch=epoch, step=step, n_steps=len(batches), loss=float(np.mean(losses[-tc.progress_every:])), phase="train")
        train_s = time.perf_counter() - t_ep
        model.invalidate_cache()
        report(epoch=epoch, step=len(batches), n_steps=len(batches), loss=float(np.mean(losses)), phase="valid")
        vm = ndcg_hr(_valid_ranks(model, ds.seqs, v_users, v_ends, v_targets)) if len(v_users) else {"ndcg10": 0.0, "hr10": 0.0, "n": 0}
        n_train_events = int(tensors["weights"].gt(0).sum()) if not dist else int(tensors["weights"].gt(0).sum()) // world
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), **vm, "train_s": train_s, "events_per_s": n_train_events / max(train_s, 1e-9)}
        history.append(rec)
        improved = vm["ndcg10"] > best["ndcg10"]
        if improved:
            best = {"ndcg10": vm["ndcg10"], "epoch": epoch}
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
        log.info("epoch %d: loss %.4f valid ndcg@10 %.4f hr@10 %.4f (%.1fs)", epoch, rec["loss"], vm["ndcg10"], vm["hr10"], train_s)
        report(epoch=epoch, step=len(batches), n_steps=len(batches), loss=rec["loss"], valid_ndcg10=vm["ndcg10"], phase="valid")
        if ckpt is not None and rank == 0:
            _save_checkpoint(
                ckpt, net, best_state, opt,
                {"epoch": epoch, "best": best, "bad_epochs": bad_epochs, "history": history,
                 "data_fingerprint": ds.fingerprint(), "config": cfg.to_dict()},
            )
        if bad_epochs >= tc.patience:
            break

    end_fit(net)
    net.load_state_dict(best_state)
    model.invalidate_cache()
    best_rec = next((h for h in history if h["epoch"] == best["epoch"]), {})
    valid = {k: best_rec[k] for k in ("ndcg10", "hr10", "n") if k in best_rec}
    retrieval_ndcg = valid.get("ndcg10", 0.0)
    if len(v_users) and tc.prior_blend:
        report(epoch=int(best["epoch"]), phase="prior")
        w_pop, w_cat, vp = select_prior_weights(model, ds.seqs, v_users, v_ends, v_targets)
        model.set_prior_weights(w_pop, w_cat)
        valid.update({"prior_w_pop": w_pop, "prior_w_cat": w_cat, "ndcg10_prior": vp["ndcg10"], "hr10_prior": vp["hr10"]})
        retrieval_ndcg = max(retrieval_ndcg, vp["ndcg10"])
        log.info("log-prior blend: w_pop=%.2f w_cat=%.2f valid ndcg@10 %.4f (model alone %.4f)", w_pop, w_cat, vp["ndcg10"], valid.get("ndcg10", 0.0))
    if len(v_users) and tc.knn_blend:
        report(epoch=int(best["epoch"]), phase="prior")
        # neighbours learned from the training part only, like the embeddings and the popularity prior:
        # no validation or test target leaks into the model, so evaluating it on this log stays honest
        knn_train = ItemKNNRanker().fit(ds, ds.seqs.truncate(split.train_end))
        w_knn, vk = select_knn_weight(model, knn_train, ds.seqs, v_users, v_ends, v_targets)
        # kept even at weight 0: its co-occurrence score is one of the fusion scorer's inputs
        model.knn, model.knn_weight = knn_train, w_knn
        if w_knn:
            retrieval_ndcg = max(retrieval_ndcg, vk["ndcg10"])
        valid.update({"knn_weight": w_knn, "ndcg10_knn": vk["ndcg10"], "hr10_knn": vk["hr10"]})
        log.info("item-kNN term: weight %.2f valid ndcg@10 %.4f", w_knn, vk["ndcg10"])
    valid.update(_fit_fusion(model, ds, split.valid_users.astype(np.int64), split.valid_pos, report))
    model.metrics = {
        "valid": valid,
        "history": history,
        "best_epoch": int(best["epoch"]),
        "train_seconds": float(time.perf_counter() - t0),
        "loss": mode,
        "n_train_windows": int(n_win),
    }
    net.eval()
    report(epoch=int(best["epoch"]), step=0, n_steps=0, loss=None, valid_ndcg10=valid.get("ndcg10"), phase="done")
    return model


def _fit_fusion(model: TrainedModel, ds: InteractionDataset, users: np.ndarray, ends: np.ndarray, report) -> dict:
    """Fit the fusion scorer and its probability mapping on the validation targets (models/rerank.py).

    The candidates are exactly what recommending retrieves for those histories (Recommender.candidates),
    so the scorer learns on the list it will re-rank. Returns the figures for the model's metrics.
    """
    tc = model.config.train
    if tc.fusion_epochs == 0 or len(users) == 0:
        return {"fusion_rerank": False}
    if len(users) > tc.fusion_max_positions:
        keep = np.sort(np.random.default_rng(tc.seed + 17).choice(len(users), tc.fusion_max_positions, replace=False))
        users, ends = users[keep], ends[keep]
    rec = Recommender(model)
    n = min(tc.fusion_candidates, model.n_items)
    feats = np.zeros((len(users), n, N_FEATURES), dtype=np.float32)
    labels = np.zeros((len(users), n), dtype=bool)
    valid = np.zeros((len(users), n), dtype=bool)
    cold = np.zeros(len(users), dtype=bool)
    targets = ds.seqs.items[ends].astype(np.int64)
    # ~32M score cells per chunk, as recommending does (a chunk costs a pass over the item table)
    bsz = max(1, min(4096, FUSION_MINING_CELLS // max(model.n_items, 1)))
    for s in range(0, len(users), bsz):
        report(epoch=0, n_epochs=tc.fusion_epochs, step=s, n_steps=len(users), loss=None, phase="fusion candidates")
        sc = rec.candidates(ds.seqs, users[s : s + bsz], ends[s : s + bsz], n)
        feats[s : s + bsz] = sc.features
        labels[s : s + bsz] = sc.cand == targets[s : s + bsz, None]
        valid[s : s + bsz] = sc.valid
        cold[s : s + bsz] = sc.cold
    report(epoch=0, n_epochs=tc.fusion_epochs, step=0, n_steps=1, loss=None, phase="fusion")
    fit = fit_fusion(
        model.net.fusion, FusionData(feats, labels, cold, valid), epochs=tc.fusion_epochs, seed=tc.seed, device=model.device,
        novel_weight=tc.fusion_novel_weight,
    )
    model.calibration = fit["calibration"]
    model.fusion_rerank = fit["rerank"]
    report(epoch=tc.fusion_epochs, n_epochs=tc.fusion_epochs, step=1, n_steps=1, loss=None, phase="fusion")
    for p in model.net.parameters():
        p.grad = None
    return {
        "fusion_rerank": fit["rerank"],
        "ndcg10_fusion_oof": fit["ndcg10_fusion"],
        "ndcg10_retrieval_oof": fit["ndcg10_retrieval"],
        "fusion_users": fit["n_users"],
        "fusion_novel_users": fit["novel_users"],
        "ndcg10_fusion_minus_retrieval_interval": fit["ndcg10_difference_interval"],
        "ndcg10_novel_fusion_minus_retrieval_interval": fit["ndcg10_novel_difference_interval"],
        "calibration": fit["calibration"].to_dict(),
        "oof_brier": fit["oof_brier"],
        "oof_mean_proba": fit["oof_mean_proba"],
        "oof_positive_rate": fit["oof_positive_rate"],
    }


FUSION_MINING_CELLS = 32_000_000
