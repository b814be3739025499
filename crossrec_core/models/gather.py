"""Row gathers for the training step on a CPU: ``index_select`` in place of indexing with a tensor.

``table[idx]`` with an index tensor goes through ``aten::index``, ~7x slower on this machine's CPU than
``index_select`` for the rows of a (500,000 x 64) table (1.15 against 0.15 ms for 5,632 rows, one thread), ~5x for a
boolean mask ((512, 11, 64): 0.41 against 0.08 ms); on the 10M-event log a step made ~26 such gathers, 10 % of it
(bench/RESULTS.md, session 26). ``take_rows`` and ``masked_rows`` give the same values and gradients, on every device.
"""

from __future__ import annotations

import torch


def take_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Return ``table[idx]`` (idx.shape + table.shape[1:]) through ``index_select``."""
    return table.index_select(0, idx.reshape(-1)).view(idx.shape + table.shape[1:])


def masked_rows(x: torch.Tensor, mask: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x[mask]`` through ``index_select``: the entries of ``x`` (*mask.shape, ...) where ``mask`` holds, in
    order. ``at``: ``mask``'s flat positions when several tensors share one mask (``mask.reshape(-1).nonzero()``)."""
    if at is None:
        at = mask.reshape(-1).nonzero().squeeze(1)
    return x.reshape((-1,) + tuple(x.shape[mask.ndim :])).index_select(0, at)
