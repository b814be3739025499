"""What a training step minimises: next-item prediction at every position of a window.

Full-catalogue softmax cross-entropy when the catalogue is small (on a CPU in blocks of rows,
training/softmax.py), else a sampled softmax with many shared uniform negatives (Klenitskiy & Vasilev,
RecSys 2023: CE beats one-negative BCE by a wide margin; on a CPU also in blocks of rows, products in bfloat16 where
the CPU has them: 2.3x faster than whole float32 logits at 4,000-8,000 positions x 1,024 negatives, session 26);
``loss="bce"`` keeps SASRec's original one-negative BCE as a reference.
"""

from __future__ import annotations

import torch
from torch import nn

from crossrec_core.config import ModelConfig
from crossrec_core.models.gather import masked_rows, take_rows
from crossrec_core.models.fusion import CrossRecNet
from crossrec_core.training.softmax import negatives_logsumexp, softmax_cross_entropy


class RetrievalLoss(nn.Module):
    """Wraps the encoders so one forward returns the loss of a batch (what DDP needs)."""

    def __init__(self, net: CrossRecNet, mode: str, n_negatives: int) -> None:
        super().__init__()
        self.item_encoder = net.item_encoder
        self.user_encoder = net.user_encoder
        self.category_head = net.category_head
        self.category_weight = float(net.cfg.train.category_loss_weight) if net.category_head is not None else 0.0
        self.mode = mode
        self.n_negatives = n_negatives
        self.norm: float | None = None  # when set: the loss is the weighted sum over this (TrainConfig.step_mean)
        self.low: torch.dtype | None = None  # on a CPU: the full softmax's products in this dtype (TrainConfig.cpu_bf16)
        self.sampled_low: torch.dtype | None = None  # the same for the sampled softmax's products

    def forward(self, items, events, gaps, valid, targets, weights, negatives):  # noqa: ANN001
        table = self.item_encoder() if self.mode == "ce" else None  # (n_items, d)
        vecs = self.item_encoder.input_vectors(items.clamp(min=0), table)
        h = self.user_encoder(vecs, events, gaps, valid)  # (B, T, d)
        m = weights > 0
        at = m.reshape(-1).nonzero().squeeze(1)  # index_select, not [m]: ~5x faster on a CPU (models/gather.py)
        hv, tv, wv = masked_rows(h, m, at), masked_rows(targets, m, at), masked_rows(weights, m, at)  # (N, d), (N,), (N,)
        if hv.shape[0] == 0:
            return h.sum() * 0.0
        if self.mode == "ce" and hv.device.type == "cpu":  # on a CPU: the logits one block of rows at a time
            loss = softmax_cross_entropy(hv, table, tv, self.low)
        elif self.mode == "ce":  # a GPU (autocast): the whole (N, n_items) logits at once, the loss in float32
            logits = hv @ table.T
            loss = nn.functional.cross_entropy(logits.float(), tv, reduction="none")
        elif self.mode == "sampled":
            pos_vec = self.item_encoder(tv)  # (N, d)
            neg_vec = self.item_encoder(negatives)  # (K, d)
            pos = (hv * pos_vec).sum(-1, keepdim=True)  # (N, 1)
            # uniform sampling: the logQ correction is a constant and cancels; accidental hits are left out
            hit_rows, hit_cols = accidental_hits(tv, negatives)
            if hv.device.type == "cpu":  # the (N, K) logits one block of rows at a time (training/softmax.py)
                lse = negatives_logsumexp(hv, neg_vec, hit_rows, hit_cols, self.sampled_low)
            else:
                neg = (hv @ neg_vec.T).float()
                neg[hit_rows, hit_cols] = torch.finfo(neg.dtype).min
                lse = torch.logsumexp(neg, dim=1)
            # -log softmax([pos, neg])[0] = softplus(logsumexp(neg) - pos)
            loss = nn.functional.softplus(lse.float() - pos.squeeze(1).float())
        else:  # bce, one negative per position (SASRec)
            neg_idx = negatives[: hv.shape[0]] if negatives.shape[0] >= hv.shape[0] else negatives[torch.arange(hv.shape[0], device=hv.device) % negatives.shape[0]]
            pos = (hv * self.item_encoder(tv)).sum(-1)
            neg = (hv * self.item_encoder(neg_idx)).sum(-1)
            loss = nn.functional.softplus(-pos.float()) + nn.functional.softplus(neg.float())
        if self.category_head is not None:  # the next event's category, from the same state
            cat_logits = self.category_head(hv).float()
            loss = loss + self.category_weight * nn.functional.cross_entropy(cat_logits, take_rows(self.item_encoder.item_category, tv), reduction="none")
        return (loss * wv).sum() / (wv.sum().clamp(min=1e-6) if self.norm is None else self.norm)


def accidental_hits(targets: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (rows, columns): every (position, negative) pair where the shared negative is the position's own target.
    Only the few rows with a hit are compared column by column (found through the sorted negatives); a whole (N, K)
    comparison and fill cost 4 % of a 10M-event step."""
    sorted_negs = negatives.sort().values
    at = torch.searchsorted(sorted_negs, targets).clamp(max=sorted_negs.shape[0] - 1)
    rows = torch.nonzero(sorted_negs[at] == targets).squeeze(1)
    r, c = torch.nonzero(targets[rows].unsqueeze(1) == negatives.unsqueeze(0), as_tuple=True)
    return rows[r], c


def resolve_loss(cfg: ModelConfig, n_items: int) -> str:
    """Return the loss actually used: "ce", "sampled" or "bce"."""
    if cfg.train.loss == "auto":
        return "ce" if n_items <= cfg.train.full_softmax_max_items else "sampled"
    return cfg.train.loss
