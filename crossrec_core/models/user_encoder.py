"""User-interest encoders over a time-ordered history: a causal Transformer (SASRec-style), a GRU or an LSTM.

Inputs are LEFT-padded windows (most recent event in the last column). Every column's output is the
user state after that event, so one causal pass trains every position at once. Padding never reaches
a real event's state: attention masks it, and the recurrences start at each row's first real event.
"""

from __future__ import annotations

import torch
from torch import nn

from crossrec_core.config import UserEncoderConfig


class _Block(nn.Module):
    """Causal self-attention block, pre-LN (norm before each sub-layer) or post-LN (SASRec's: after each residual)."""

    def __init__(self, d: int, n_heads: int, dropout: float, *, post_norm: bool = False, ff_mult: int = 2) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.post_norm = post_norm
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Return (B, T, d), or (B, 1, d) for the last column only with ``last_only`` (every column is still a key)."""
        rows = x[:, -1:] if last_only else x
        if self.post_norm:
            rows = self.ln1(rows + self.drop(self.proj(self._attend(x, attn_mask, last_only))))
            return self.ln2(rows + self.drop(self.ff(rows)))
        rows = rows + self.drop(self.proj(self._attend(self.ln1(x), attn_mask, last_only)))
        return rows + self.drop(self.ff(self.ln2(rows)))

    def _attend(self, h: torch.Tensor, attn_mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        B, T, D = h.shape
        if last_only:  # the query of the last column only: keys and values of every column, one query row
            w, b = self.qkv.weight, self.qkv.bias
            q = nn.functional.linear(h[:, -1:], w[:D], b[:D])
            k, v = nn.functional.linear(h, w[D:], b[D:]).split(D, dim=2)
            attn_mask = attn_mask[..., -1:, :]
        else:
            q, k, v = self.qkv(h).split(D, dim=2)
        Q = q.shape[1]
        q = q.view(B, Q, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, H, Q, Dh)
        k = k.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, Q, Dh)
        return y.transpose(1, 2).reshape(B, Q, D)


def _recur_from_first_event(rnn: nn.RNNBase, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Run ``rnn`` over each row's real events only; return (B, T, h) in the left-padded columns, zeros on padding.

    Feeding the left padding through a recurrence would leave a different state before the first event
    for every amount of padding, and that amount depends on the longest history in the batch: a shopper's
    state would change with the company it is batched with. Rolling each row so its first event sits in
    column 0 lets pack_padded_sequence start the recurrence there.
    """
    B, T, D = x.shape
    if B == 0:  # pack_padded_sequence refuses an empty batch
        return rnn(x)[0]
    n_real = valid.sum(dim=1)  # (B,) left padding: the real events are the last n_real columns
    shift = (T - n_real).unsqueeze(1)  # (B, 1)
    cols = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    to_right = ((cols + shift) % T).unsqueeze(-1)  # (B, T, 1)
    right = x.gather(1, to_right.expand(B, T, D))
    # pack_padded_sequence refuses length 0: a row without events takes one zero step; its output is never used
    lengths = n_real.clamp(min=1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(right, lengths, batch_first=True, enforce_sorted=False)
    out, _ = nn.utils.rnn.pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=T)
    to_left = ((cols - shift) % T).unsqueeze(-1)  # (B, T, 1), the inverse roll
    return out.gather(1, to_left.expand(B, T, out.shape[-1]))


class UserEncoder(nn.Module):
    """Encodes (item vectors, events, time gaps) of left-padded windows into per-position user states."""

    def __init__(self, cfg: UserEncoderConfig, *, n_event_types: int) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.event_emb = nn.Embedding(max(n_event_types, 1) + 1, d) if cfg.use_events else None
        self.gap_emb = nn.Embedding(cfg.n_time_buckets, d) if cfg.use_time_gaps else None
        for emb in (self.event_emb, self.gap_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        self.in_drop = nn.Dropout(cfg.dropout)
        if cfg.kind == "transformer":
            self.pos_emb = nn.Embedding(cfg.max_len, d)  # cfg.positions: from the first real event, or back from the last column
            nn.init.normal_(self.pos_emb.weight, std=0.02)
            post = cfg.block == "post"
            self.blocks = nn.ModuleList(
                [_Block(d, cfg.n_heads, cfg.dropout, post_norm=post, ff_mult=cfg.ff_mult) for _ in range(cfg.n_layers)]
            )
            # post-LN (SASRec) normalises the summed input embeddings before the first block
            self.in_norm = nn.LayerNorm(d) if post else None
        else:
            self.blocks = nn.ModuleList()
            self.in_norm = None
        # separate attributes so saved GRU models keep their user_encoder.gru.* weight names
        rnn_dropout = cfg.dropout if cfg.n_layers > 1 else 0.0
        self.gru = nn.GRU(d, d, num_layers=cfg.n_layers, batch_first=True, dropout=rnn_dropout) if cfg.kind == "gru" else None
        self.lstm = nn.LSTM(d, d, num_layers=cfg.n_layers, batch_first=True, dropout=rnn_dropout) if cfg.kind == "lstm" else None
        self.out_norm = nn.LayerNorm(d)

    def forward(
        self, item_vecs: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, valid: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """Return float (B, T, d) user states; column t summarises events up to and including t.

        ``last_only``: return (B, d), the last column's state only (what recommending needs). The Transformer's
        last block then computes one query row per history instead of T (its keys and values still cover every
        column), the same state up to float rounding for about 40 % fewer multiply-adds with two blocks.

        Args:
            item_vecs: (B, T, d) vectors of the history items (anything in padded columns).
            events: (B, T) int64 event_idx + 1 (0 = padding).
            gaps: (B, T) int64 time-gap buckets.
            valid: (B, T) bool, False on left padding.
        """
        B, T, D = item_vecs.shape
        vm = valid.unsqueeze(-1).to(item_vecs.dtype)  # (B, T, 1)
        x = item_vecs
        if self.event_emb is not None:
            x = x + self.event_emb(events)
        if self.gap_emb is not None:
            x = x + self.gap_emb(gaps)
        if self.cfg.kind == "transformer":
            if self.cfg.positions == "first":
                # each row's own count from its first real event: the same whatever the padding, and a
                # prefix trained on carries the positions it has when it is a whole history at serving
                pos = (valid.long().cumsum(dim=1) - 1).clamp(min=0, max=self.cfg.max_len - 1)  # (B, T)
                x = x + self.pos_emb(pos)
            else:
                pos = torch.arange(T - 1, -1, -1, device=x.device).clamp(max=self.cfg.max_len - 1)
                x = x + self.pos_emb(pos).unsqueeze(0)
            if self.in_norm is not None:
                x = self.in_norm(x)
            x = self.in_drop(x * vm)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
            # a padded query may only see itself, so no row is fully masked (no NaN)
            eye = torch.eye(T, dtype=torch.bool, device=x.device)
            mask = (causal.unsqueeze(0) & valid.unsqueeze(1)) | eye.unsqueeze(0)  # (B, T, T)
            mask = mask.unsqueeze(1)  # (B, 1, T, T)
            for i, blk in enumerate(self.blocks):
                x = blk(x, mask, last_only=last_only and i == len(self.blocks) - 1)
        else:
            x = self.in_drop(x * vm)
            x = _recur_from_first_event(self.gru if self.gru is not None else self.lstm, x, valid)
        if last_only:
            return self.out_norm(x[:, -1])
        return self.out_norm(x)
