"""All-positions full-softmax training of RecBole's SASRec / GRU4Rec (the SASRec+ / gSASRec form).

Runs INSIDE the peer venv (imported by run_recbole.py --form allpos); it must not import crossrec_core.

RecBole's stock sequential training is *prefix-augmented*: every training event after a user's first
one is a separate sample (history, target) and only the LAST position of each 50-long history is
trained, so an epoch over a user with 60 events runs the encoder 59 times for 59 targets. The
all-positions form keeps RecBole's model classes (their embeddings, encoder layers and yaml defaults)
but trains them like SASRec+ / gSASRec: one sequence per user (the last ``max_len + 1`` training
events; ``--allpos-windows all`` cuts the whole train sequence into such windows), the encoder runs once over it and EVERY position predicts the next event, with cross-entropy
over the whole catalogue (logits = output @ item_embedding.weight.T), padding positions ignored.
Users whose train part is longer than ``max_len + 1`` events train on their latest window only, as
in those papers.

Validation each epoch: NDCG@10 of the valid target from the last position of the valid history, with
every item the user had before the valid target masked (crossrec's protocol). Early stopping after
``stopping_step`` epochs without a better valid NDCG@10; the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
import resource
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


def cpu_seconds() -> float:
    """Return this process's user + system CPU time (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def left_aligned(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Return int64 (len(rows), width): each row's items from column 0, zero (RecBole's padding) after."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r[-width:]
    return out


def user_train_sequences(uid: np.ndarray, hist: np.ndarray, target: np.ndarray, pos: np.ndarray, max_len: int,
                         windows: str = "last") -> np.ndarray:
    """Return int64 (n_windows, max_len + 1) left-aligned training windows (0 = RecBole's padding).

    Built from RecBole's train rows (one per prefix): a user's train sequence is its first row's history
    followed by the targets of its rows in event order. ``windows="last"``: one window per user, the latest
    ``max_len + 1`` train events (SASRec+ / gSASRec). ``windows="all"``: the whole train sequence cut from
    its end into windows of ``max_len + 1`` events that overlap by one, so every train target is trained once.
    """
    order = np.lexsort((pos, uid))  # by user, then event position
    u = uid[order]
    bounds = np.flatnonzero(np.r_[True, u[1:] != u[:-1], True])
    rows = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        first = hist[order[a]]
        seq = np.concatenate([first[first != 0], target[order[a:b]]])
        if windows == "last":
            rows.append(seq[-(max_len + 1):])
            continue
        end = len(seq)
        while end > 1:
            rows.append(seq[max(0, end - max_len - 1):end])
            end -= max_len
    return left_aligned(rows, max_len + 1)


def all_positions(model: torch.nn.Module, item_seq: torch.Tensor) -> torch.Tensor:
    """Return (B, L, d): the model's sequence output at EVERY position of left-aligned ``item_seq``.

    SASRec: the body of SASRec.forward (item + position embeddings, LayerNorm, dropout, trm_encoder with its
    causal padding mask) without the final gather. GRU4Rec: GRU4Rec.forward without the gather (the GRU is
    causal, so right padding does not reach earlier positions).
    """
    name = type(model).__name__
    if name == "SASRec":
        position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device).unsqueeze(0).expand_as(item_seq)
        x = model.item_embedding(item_seq) + model.position_embedding(position_ids)
        x = model.dropout(model.LayerNorm(x))
        mask = model.get_attention_mask(item_seq)
        return model.trm_encoder(x, mask, output_all_encoded_layers=True)[-1]
    if name == "GRU4Rec":
        out, _ = model.gru_layers(model.emb_dropout(model.item_embedding(item_seq)))
        return model.dense(out)
    raise ValueError(f"all-positions training is implemented for SASRec and GRU4Rec, not {name}")


@torch.no_grad()
def check_matches_forward(model: torch.nn.Module, item_seq: torch.Tensor) -> float:
    """Return max |all_positions at the last real position - model.forward| (eval mode; should be ~0)."""
    was = model.training
    model.eval()
    lengths = (item_seq != 0).sum(1)
    allpos = all_positions(model, item_seq)[torch.arange(len(item_seq)), lengths - 1]
    ref = model.forward(item_seq, lengths)
    model.train(was)
    return float((allpos - ref).abs().max())


@torch.no_grad()
def last_position_scores(model: torch.nn.Module, item_seq: torch.Tensor) -> torch.Tensor:
    """Return (B, n_items) scores of the next item after each left-aligned history (eval mode)."""
    lengths = (item_seq != 0).sum(1).clamp(min=1)
    out = model.forward(item_seq, lengths)
    scores = out @ model.item_embedding.weight.T
    scores[:, 0] = -torch.inf  # RecBole's padding item
    return scores


def mask_rows(scores: torch.Tensor, uid: np.ndarray, seen: np.ndarray, n_items: int) -> None:
    """Set scores[i, item] = -inf in place for every code uid[i] * n_items + item in sorted ``seen``."""
    lo = np.searchsorted(seen, uid * n_items, side="left")
    hi = np.searchsorted(seen, (uid + 1) * n_items, side="left")
    counts = hi - lo
    if counts.sum() == 0:
        return
    rows = np.repeat(np.arange(len(uid)), counts)
    idx = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    items = seen[idx] - uid[rows] * n_items
    scores[torch.from_numpy(rows), torch.from_numpy(items)] = -torch.inf


@torch.no_grad()
def ranked(model, uid: np.ndarray, hist: np.ndarray, seen: np.ndarray, n_items: int, k: int, batch: int = 1024):
    """Yield (slice, top-k item ids (b, k), scores) over the rows, seen items masked."""
    model.eval()
    for s in range(0, len(uid), batch):
        sl = slice(s, s + batch)
        scores = last_position_scores(model, torch.from_numpy(hist[sl]))
        mask_rows(scores, uid[sl], seen, n_items)
        yield sl, torch.topk(scores, k=min(k, n_items - 1), dim=1).indices, scores


def ndcg_at_k(model, uid: np.ndarray, hist: np.ndarray, target: np.ndarray, seen: np.ndarray, n_items: int, k: int = 10) -> float:
    """Return mean NDCG@k of ``target`` over the rows (one held-out item each; seen items masked)."""
    total = 0.0
    for sl, top, _ in ranked(model, uid, hist, seen, n_items, k):
        hit = top == torch.from_numpy(target[sl]).unsqueeze(1)  # (b, k)
        gain = 1.0 / torch.log2(torch.arange(2, top.size(1) + 2, dtype=torch.float64))
        total += float((hit.double() * gain).sum())
    return total / max(len(uid), 1)


@dataclass
class FitResult:
    epoch_log: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_valid: float = -1.0
    stopped_by: str = "early stopping"
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    forward_check: float = float("nan")


def fit(model: torch.nn.Module, train_seqs: np.ndarray, valid: tuple, seen_valid: np.ndarray, n_items: int, *,
        lr: float, weight_decay: float, batch_size: int, epochs: int, stopping_step: int, seed: int,
        time_budget: float = 0.0, log=print) -> FitResult:
    """Train ``model`` in the all-positions form; on return it holds the best epoch's weights.

    ``train_seqs``: (U, max_len + 1) left-aligned user windows; ``valid``: (uid, history, target) arrays.
    """
    res = FitResult()
    seqs = torch.from_numpy(train_seqs)
    res.forward_check = check_matches_forward(model, seqs[: min(64, len(seqs)), :-1])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    best_state = copy.deepcopy(model.state_dict())
    bad = 0
    t0, c0 = time.perf_counter(), cpu_seconds()
    for epoch in range(epochs):
        model.train()
        loss_sum, n_pos = 0.0, 0
        for idx in torch.randperm(len(seqs), generator=gen).split(batch_size):
            b = seqs[idx]
            width = int((b != 0).sum(1).max())  # trim the right padding shared by the whole batch
            inp, lab = b[:, : max(width - 1, 1)], b[:, 1:width]
            keep = lab != 0  # non-padding positions with a next item
            if not keep.any():
                continue
            out = all_positions(model, inp)[keep]  # (P, d)
            logits = out @ model.item_embedding.weight.T  # (P, n_items): full softmax
            loss = F.cross_entropy(logits, lab[keep])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * int(keep.sum())
            n_pos += int(keep.sum())
        score = ndcg_at_k(model, *valid, seen_valid, n_items)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        res.epoch_log.append({"epoch": epoch, "train_loss": loss_sum / max(n_pos, 1), "valid_ndcg": score,
                              "elapsed_s": round(elapsed, 3), "cpu_s": round(cpu, 3)})
        log(f"epoch {epoch}: loss {loss_sum / max(n_pos, 1):.4f} valid NDCG@10 {score:.4f} ({elapsed:.0f}s)")
        if score > res.best_valid:
            res.best_valid, res.best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        if bad >= stopping_step:
            break
        if time_budget and elapsed > time_budget:
            res.stopped_by = "time budget"
            break
    else:
        res.stopped_by = "epoch cap"
    res.train_seconds, res.train_cpu_seconds = time.perf_counter() - t0, cpu_seconds() - c0
    model.load_state_dict(best_state)
    return res
