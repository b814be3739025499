"""The fit loop: every position predicts its next item in one causal pass, early stopping on valid NDCG@10.

``train_model`` runs the phases in order (training/progress.py): item features (titles through the text
encoder), the encoders' epochs (loss in training/loss.py, optimisers in training/optim.py, a checkpoint
per epoch in training/checkpoint.py), the blend weights chosen on validation (training/tuning.py), and
the fusion scorer with its probability mapping fitted on the validation targets' candidates, positions
nothing before them was fitted on (training/fusion_fit.py). With ``train.batch_choice`` the epochs are two
runs taking turns, length buckets and random batches, one clearly behind dropped (training/batch_race.py).

The best epoch's weights are kept as the final model (no refit on the valid event: simple and honest
about what validation measured). One run's epochs live in training/epochs.py.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from crossrec_core.config import ModelConfig
from crossrec_core.data.dataset import InteractionDataset, LeaveLastOut, Sequences
from crossrec_core.device import pick_device, seed_everything
from crossrec_core.errors import DataError
from crossrec_core.models.category_history import fit_category_history
from crossrec_core.models.fusion import CrossRecNet, build_net
from crossrec_core.models.item_encoder import attribute_token_matrix, build_attribute_vocab
from crossrec_core.models.text import TextEncoder, item_texts
from crossrec_core.models.trained import TrainedModel, event_hashes
from crossrec_core.training.fusion_fit import fit_on_validation
from crossrec_core.training.epochs import Distributed, Fit, Windows, restored_state
from crossrec_core.training.loss import resolve_loss
from crossrec_core.training.optim import end_fit, make_fit_optimizer
from crossrec_core.training.progress import Phase, TrainProgress
from crossrec_core.training.batch_race import RaceRun, batch_runs, race, winner
from crossrec_core.training.stopping import neighbour_terms
from crossrec_core.training.tuning import fit_neighbour_tables, popularity_reference, tune_blends

log = logging.getLogger(__name__)


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


def train_popularity(ds: InteractionDataset, train_end: np.ndarray) -> np.ndarray:
    """Return float32 (n_items,) interaction counts over the training events."""
    row, pos = ds.seqs.history_positions(np.arange(ds.n_users), train_end)
    return np.bincount(ds.seqs.items[pos], minlength=ds.n_items).astype(np.float32)


def training_event_hashes(ds: InteractionDataset, train_end: np.ndarray) -> np.ndarray:
    """Return the hashes of every event the model is fitted on: each user's events before train_end."""
    row, pos = ds.seqs.history_positions(np.arange(ds.n_users), train_end)
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


def _fill_buffers(net: CrossRecNet, ds: InteractionDataset, feats: dict, popularity: np.ndarray, shrink: bool = True) -> None:
    """Copy the per-item inputs into the item encoder; the ID weight is 0 for items unseen in ``popularity``
    (training counts) and n / (n + id_shrinkage) for the others when ``shrink``, else 1."""
    enc = net.item_encoder
    with torch.no_grad():
        enc.item_category.copy_(torch.from_numpy(ds.item_category.astype(np.int64)))
        k = float(net.cfg.item.id_shrinkage) if shrink else 0.0
        enc.id_mask.copy_(torch.from_numpy((popularity / np.maximum(popularity + k, 1e-12)).astype(np.float32) if k > 0 else (popularity > 0).astype(np.float32)))
        if enc.use_attr:
            enc.attr_tokens.copy_(torch.from_numpy(feats["attr_tokens"]))
        if enc.use_text:
            enc.text_vecs.copy_(torch.from_numpy(feats["text"]))
        if enc.use_vec:
            enc.extra_vecs.copy_(torch.from_numpy(feats["vectors"]))


def build_windows(ds: InteractionDataset, split: LeaveLastOut, cfg: ModelConfig) -> Windows:
    """Return every user's training events cut into windows of ``cfg.user.max_len`` next-item targets.

    A target the user already had earlier weighs ``train.seen_target_weight`` (repeats are never
    recommended); the first event of a window gets no time gap (its predecessor is outside the input).
    """
    tc = cfg.train
    W = cfg.user.max_len + 1
    w_users, w_ends = training_windows(ds.seqs, split.train_end, cfg.user.max_len)
    if len(w_users) == 0:
        raise DataError(f"'{ds.name}' has no user with 2 or more training events, so there is nothing to learn from.")
    win = ds.seqs.windows(w_users, w_ends, W, cfg.user.n_time_buckets)
    if win["items"].shape[1] < W:  # every history is shorter than the window: pad on the left
        pad = W - win["items"].shape[1]
        for k, fill in (("items", -1), ("events", 0), ("gaps", 0), ("valid", False), ("pos", 0)):
            win[k] = np.pad(win[k], ((0, 0), (pad, 0)), constant_values=fill)
    seen = ds.seqs.seen_before()
    tgt_valid = win["valid"][:, 1:] & win["valid"][:, :-1]
    weights = np.where(tgt_valid, np.where(seen[win["pos"][:, 1:]], tc.seen_target_weight, 1.0), 0.0).astype(np.float32)
    if tc.seen_target_weight == 0.0 and not (weights > 0).any():
        weights = tgt_valid.astype(np.float32)  # every target a repeat: learning repeats beats learning nothing
    if tc.window_weights:  # each window's (or shopper's) targets sum to n ** (1 - power): at power 1 each counts the same
        n = weights.sum(axis=1)
        if tc.weight_unit == "shopper":  # a shopper's windows share one total
            n = np.bincount(w_users, weights=n, minlength=int(w_users.max()) + 1)[w_users]
        weights = weights / np.maximum(n, 1e-12)[:, None] ** tc.window_weight_power
    if tc.shopper_cap_quantile > 0:  # a shopper of n targets counts as min(n, c): c a quantile of the shoppers' counts
        n = np.bincount(w_users, weights=weights.sum(axis=1), minlength=int(w_users.max()) + 1)
        cap = float(np.quantile(n[n > 0], tc.shopper_cap_quantile))
        weights = weights * (np.minimum(n, cap) / np.maximum(n, 1e-12))[w_users][:, None].astype(np.float32)
    tensors = {
        "items": torch.from_numpy(win["items"][:, :-1]),
        "events": torch.from_numpy(win["events"][:, :-1]),
        "gaps": torch.from_numpy(win["gaps"][:, :-1]),
        "valid": torch.from_numpy(win["valid"][:, :-1]),
        "targets": torch.from_numpy(np.maximum(win["items"][:, 1:], 0)),
        "weights": torch.from_numpy(weights),
    }
    return Windows(tensors, win["valid"][:, :-1].sum(axis=1), int(tensors["weights"].gt(0).sum()))


def validation_targets(ds: InteractionDataset, split: LeaveLastOut, tc) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (users, ends, targets) early stopping and the blends are judged on: each user's
    second-to-last event, a seeded subsample of at most ``tc.valid_max_users`` users."""
    v_users = split.valid_users.astype(np.int64)
    v_ends = split.valid_pos
    if len(v_users) > tc.valid_max_users:
        # early stopping needs a stable estimate, not every user: a seeded subsample keeps validation cheap
        keep = np.sort(np.random.default_rng(tc.seed).choice(len(v_users), tc.valid_max_users, replace=False))
        v_users, v_ends = v_users[keep], v_ends[keep]
    return v_users, v_ends, ds.seqs.items[v_ends].astype(np.int64)


# -- the fit loop ---------------------------------------------------------------------------
def train_model(
    ds: InteractionDataset,
    config: ModelConfig | None = None,
    *,
    on_progress: Callable[[TrainProgress], None] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    name: str | None = None,
    init: Callable[[CrossRecNet], None] | None = None,
) -> TrainedModel:
    """Return a TrainedModel fit on ds with leave-last-out early stopping on validation NDCG@10.

    Args:
        ds: the interaction log.
        config: model + training settings (defaults when None).
        on_progress: called every few steps and at each phase change.
        checkpoint_dir: when given, a checkpoint (safetensors + JSON, no pickle) is written every epoch.
        resume: continue from the last checkpoint in checkpoint_dir (same data and config required).
        name: the model's name (defaults to the dataset name).
        init: called on the new network before the first epoch (a warm start's weights, training/warm_start.py).
    Under torch.distributed (torchrun), batches are split over ranks and gradients averaged (DDP).
    """
    cfg = config or ModelConfig()
    tc = cfg.train
    if ds.n_events < 2 or ds.n_items < 2:
        raise DataError(f"'{ds.name}' has {ds.n_events} events on {ds.n_items} items; training needs at least 2 of each.")
    dist = Distributed()
    device = pick_device(tc.device)
    if dist.on and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    seed_everything(tc.seed)
    t0 = time.perf_counter()

    reference: dict = {}  # the popularity yardstick, once the validation targets are known

    def report(**kw) -> None:
        if on_progress is not None:
            base = dict(epoch=0, n_epochs=tc.epochs, step=0, n_steps=0, loss=None, valid_ndcg10=None, **reference)
            base.update(kw)
            on_progress(TrainProgress(elapsed_s=time.perf_counter() - t0, **base))

    # text vectors: rank 0 fills the cache first, the others then read it
    if dist.on and dist.rank != 0:
        torch.distributed.barrier()
    feats = compute_item_features(ds, cfg, device, lambda done, total: report(step=done, n_steps=total, phase=Phase.TEXT))
    if dist.on and dist.rank == 0:
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
    if init is not None:
        init(net)
    net.to(device)
    mode = resolve_loss(cfg, ds.n_items)
    windows = build_windows(ds, split, cfg)  # the batch order does not change a window's weights: one build serves both runs
    v_users, v_ends, v_targets = validation_targets(ds, split, tc)
    reference["reference_ndcg10"] = popularity_reference(popularity, ds.seqs, v_users, v_ends, v_targets)
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
        category_transitions=ds.seqs.truncate(split.train_end).category_transitions(ds.item_category, ds.n_categories).astype(np.float32),
        train_event_hashes=training_event_hashes(ds, split.train_end),
        metrics={},
        data_fingerprint=ds.fingerprint(),
        attribute_columns=ds.attribute_columns if len(feats["attr_vocab"]) > 2 else (),
        vector_columns=ds.vector_columns if feats["vectors"] is not None else (),
        attr_vocab=feats["attr_vocab"],
        device=device,
        batch_size=tc.eval_batch_size,
    )

    train_seqs = ds.seqs.truncate(split.train_end)
    # the item-neighbour tables, fitted once: early stopping and the blend after training both use them
    tables = fit_neighbour_tables(ds, train_seqs) if len(v_users) and tc.knn_blend else None
    stop_tables = [] if tables is None or not tc.stop_on_retrieval else list(tables if tc.knn_choice else tables[:1])
    terms = neighbour_terms(stop_tables, ds.seqs, v_users, v_ends, ds.n_items, seed=tc.seed)
    model.category_history = fit_category_history(train_seqs, ds.item_category, model.prior.transition_proba.shape[0], model.prior.category_prior)
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}  # every run starts from these weights
    runs: list[RaceRun] = []
    rounds: list[dict] = []  # the race's log: the second run's best-so-far gain in standard errors, round by round
    for label, run_cfg, run_ckpt in batch_runs(cfg, ckpt):
        net.load_state_dict(start)
        opt = make_fit_optimizer(net, run_cfg.train, mode=mode, distributed=dist.on)
        state = restored_state(net, opt, run_ckpt if resume else None, ds, run_cfg, start)
        rounds[:] = max(rounds, state.rounds, key=len)
        state.rounds = rounds
        fit = Fit(model, run_cfg, ds, windows, (v_users, v_ends, v_targets, terms), opt, mode, state, device, dist, run_ckpt, report, label)
        # with two runs, each keeps its own weights between its turns on the network
        weights = {n: p.detach().clone() for n, p in net.named_parameters()} if cfg.train.batch_choice else None
        runs.append(RaceRun(label, run_cfg, fit, weights))
    race(runs, net, cfg.train.batch_drop_after, rounds)
    shipped, choice_z = winner(runs)
    model.config, state = shipped.cfg, shipped.fit.state

    end_fit(net)
    net.load_state_dict(state.best_state)
    model.invalidate_cache()
    best_rec = next((h for h in state.history if h["epoch"] == state.best["epoch"]), {})
    valid = {k: best_rec[k] for k in ("ndcg10", "hr10", "n") if k in best_rec}
    valid["popularity_ndcg10"] = reference["reference_ndcg10"]
    valid.update(tune_blends(model, ds, split, v_users, v_ends, v_targets, int(state.best["epoch"]), valid.get("ndcg10", 0.0), report, tables=tables))
    valid.update(fit_on_validation(model, ds, split.valid_users.astype(np.int64), split.valid_pos, report))
    if len(runs) > 1:  # what the choice of batches saw, for the model card and the benchmarks
        valid["batch_choice"] = {r.label: float(r.fit.state.best["ndcg10"]) for r in runs}
        valid["random_batches"] = not model.config.train.length_buckets
        valid["batch_choice_z"] = choice_z  # the second run's paired gain in standard errors (kept above 1)
        valid["batch_dropped"] = {r.label: r.dropped_at for r in runs if r.dropped_at is not None}
    model.metrics = {
        "valid": valid,
        "history": state.history,
        # every run's epochs (the race's runs take turns), and each run's own log
        "epochs_run": sum(len(r.fit.state.history) for r in runs),
        "run_histories": {r.label: r.fit.state.history for r in runs} if len(runs) > 1 else {},
        "batch_rounds": rounds,
        "best_epoch": int(state.best["epoch"]),
        "train_seconds": float(time.perf_counter() - t0),
        "loss": mode,
        "n_train_windows": int(windows.n),
        # when it finished (UTC), for the model card: a folder's file times change when a model is imported
        "trained_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    net.eval()
    report(epoch=int(state.best["epoch"]), step=0, n_steps=0, loss=None, valid_ndcg10=valid.get("ndcg10"), phase=Phase.DONE)
    return model
