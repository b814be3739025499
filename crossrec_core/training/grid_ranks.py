"""The validation target's rank under every blend weight of a grid, in one pass over the scores.

A blend search (training/tuning.py) scores each variant ``base + c[g, 0] * term_0 + c[g, 1] * term_1`` over the
whole catalogue and counts the unseen items that beat the target. Done variant by variant with numpy, each variant
writes and reads several (users x items) arrays: on the 10M-event log (500k items, 400 users, 56 prior variants,
twice, plus 22 item-kNN variants) that took minutes. The compiled kernel reads each cell once and keeps every
variant's score in registers. Both paths compute each variant's scores with the same float32 operations in the
same order, so the ranks are the same integers (tested).
"""

from __future__ import annotations

import numpy as np

from crossrec_core.kernels import compiled_kernel

# From this many cell-variants (users x items x variants) the compiled kernel is used: below it numba's import and
# first compile (~2 s) cost more than they save.
KERNEL_MIN_CELLS = 2_000_000_000


def use_kernel(cells: int) -> bool:
    """Return whether a search of ``cells`` cell-variants in all is worth the compiled kernel."""
    return cells >= KERNEL_MIN_CELLS


def masked_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Return int64 (B,) 0-based rank of each row's target in ``scores`` (B, n_items) whose seen items are
    already -inf; a seen target ranks last (n_items)."""
    tv = scores[np.arange(len(targets)), targets]
    return np.where(np.isfinite(tv), (scores > tv[:, None]).sum(axis=1), scores.shape[1]).astype(np.int64)


def _variant(base: np.ndarray, terms: list[np.ndarray], coefs: np.ndarray) -> np.ndarray:
    """Return float32 ``base + coefs[0] * terms[0] + ...``, a zero coefficient's term left out."""
    out = base
    for c, t in zip(coefs, terms):
        if c:
            out = out + c * t
    return out


def _ranks_kernel(base, t0, t1, coefs, targets, out):  # pragma: no cover - numba
    G = coefs.shape[0]
    thr = np.empty(G, dtype=np.float32)
    for r in range(base.shape[0]):
        j = targets[r]
        if not np.isfinite(base[r, j]):
            out[:, r] = base.shape[1]  # a seen target ranks last
            continue
        for g in range(G):
            s = base[r, j]
            if coefs[g, 0] != 0:
                s = s + coefs[g, 0] * t0[r, j]
            if coefs[g, 1] != 0:
                s = s + coefs[g, 1] * t1[r, j]
            thr[g] = s
            out[g, r] = 0
        for i in range(base.shape[1]):
            b = base[r, i]
            if b == -np.inf:
                continue
            x0, x1 = t0[r, i], t1[r, i]
            for g in range(G):
                s = b
                if coefs[g, 0] != 0:
                    s = s + coefs[g, 0] * x0
                if coefs[g, 1] != 0:
                    s = s + coefs[g, 1] * x1
                if s > thr[g]:
                    out[g, r] += 1


def grid_ranks(base: np.ndarray, terms: list[np.ndarray], coefs: np.ndarray, targets: np.ndarray, compiled: bool | None = None) -> np.ndarray:
    """Return int64 (G, B): each row's target rank (0-based, among cells that beat it; seen = -inf in ``base``,
    a seen target ranks last) under every variant g: ``base + coefs[g, 0] * terms[0] + coefs[g, 1] * terms[1]``.

    ``base`` float32 (B, n_items); ``terms``: one or two float32 arrays broadcastable to it; ``coefs`` (G, len(terms)).
    ``compiled``: use the kernel (None: when this call alone has KERNEL_MIN_CELLS cell-variants; a search over many
    batches decides once for all of them, ``use_kernel``).
    """
    base = np.asarray(base, dtype=np.float32)
    coefs = np.asarray(coefs, dtype=np.float32).reshape(len(coefs), len(terms))
    targets = np.asarray(targets, dtype=np.int64)
    G, (B, N) = len(coefs), base.shape
    if not (use_kernel(B * N * G) if compiled is None else compiled):
        return np.array([masked_ranks(_variant(base, terms, coefs[g]), targets) for g in range(G)], dtype=np.int64).reshape(G, B)
    full = [np.broadcast_to(np.asarray(t, dtype=np.float32), (B, N)) for t in terms]
    while len(full) < 2:
        full.append(np.broadcast_to(np.zeros(1, dtype=np.float32), (B, N)))
        coefs = np.concatenate([coefs, np.zeros((G, 1), dtype=np.float32)], axis=1)
    out = np.zeros((G, B), dtype=np.int64)
    compiled_kernel(_ranks_kernel)(base, full[0], full[1], coefs, targets, out)
    return out
