"""Faster CPU forms of the few torch operations a training step calls hundreds of times: dropout and row gathers.

Measured on this machine (one thread, bench/RESULTS.md session 26), on the shapes of a 10M-event step:

* **Dropout.** torch's CPU dropout draws one Bernoulli variable per element through ``bernoulli_`` (its Mersenne
  twister, one draw and one comparison per element): 15 % of a step at 512 windows (seven masks of ~360,000
  elements). Here one 64-bit draw gives four 16-bit uniforms, and an element is kept when its uniform is at least
  round(p * 65536): the drop rate is p to within 2^-17, the kept elements scaled by 1 / (1 - p) as torch's are.
  A (512, 11, 64) tensor: 6.9 ms with ``nn.functional.dropout``, 0.9 ms here. The mask comes from torch's default
  generator, so ``torch.manual_seed`` makes a run repeat exactly; the masks differ from torch's (another stream of
  the same distribution).
* **Row gathers.** ``table[idx]`` with an index tensor goes through ``aten::index``, ~7x slower than
  ``index_select`` for the rows of a (500,000 x 64) table (1.15 against 0.15 ms for 5,632 rows), ~5x for a boolean
  mask; ``take_rows`` and ``masked_rows`` give the same values and gradients.

A GPU keeps torch's own dropout (its Philox generator is fast there); the gathers are the same ops on every device.
"""

from __future__ import annotations

import torch
from torch import nn

_LEVELS = 1 << 16  # 16-bit uniforms: four per 64-bit draw


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Return ``x`` with each element zeroed with probability ``p`` and the others scaled by 1 / (1 - p) when
    ``training`` (``x`` itself otherwise), like ``nn.functional.dropout``."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or x.numel() == 0:
        return nn.functional.dropout(x, p, training=True)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # every bit uniform
    uniform = words.view(torch.int16)[:n].view(x.shape)  # in [-32768, 32767]
    keep = uniform >= round(p * _LEVELS) - _LEVELS // 2
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def take_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Return ``table[idx]`` (idx.shape + table.shape[1:]) through ``index_select``."""
    return table.index_select(0, idx.reshape(-1)).view(idx.shape + table.shape[1:])


def masked_rows(x: torch.Tensor, mask: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x[mask]`` through ``index_select``: the entries of ``x`` (*mask.shape, ...) where ``mask`` holds, in
    order. ``at``: ``mask``'s flat positions when several tensors share one mask (``mask.reshape(-1).nonzero()``)."""
    if at is None:
        at = mask.reshape(-1).nonzero().squeeze(1)
    return x.reshape((-1,) + tuple(x.shape[mask.ndim :])).index_select(0, at)


class Dropout(nn.Module):
    """``nn.Dropout`` with the mask of ``dropout`` above (no parameters: saved models load either way)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Return softmax(q k^T / sqrt(d) where ``mask``) v with the attention weights dropped out at ``p`` while
    ``training``: ``scaled_dot_product_attention``'s result, with this module's mask on a CPU (torch's draws one
    Bernoulli per weight there) and torch's own kernel everywhere else."""
    if not (training and p > 0.0 and q.device.type == "cpu"):
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p if training else 0.0)
    scores = (q @ k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5).masked_fill_(~mask, float("-inf"))
    return dropout(torch.softmax(scores, dim=-1), p) @ v
