"""Full-catalogue softmax cross-entropy in row blocks, without the (positions x items) logits in memory.

``nn.functional.cross_entropy(h @ table.T, t)`` builds, per step, the logits, their log-softmax, a zero-filled
gradient of the same size and the log-softmax's gradient: four (N x n_items) float arrays (5,000 positions x
1,700 items = 34 MB each). On a CPU those arrays cost more than the arithmetic: each is fresh memory past glibc's
mmap threshold (32 MB), so every step page-faults it in again, and none of them fits in cache. Measured on this
machine, one thread: 244 ms for the loss and its gradients at 5,000 x 1,700, against 100 ms here; 486 against
260-300 ms at 3,700 items (bench/RESULTS.md, session 19).

Here the logits live one block of rows at a time (about a million cells, 4 MB). The forward pass keeps only each
row's log-sum-exp; the backward pass recomputes the block's logits (one more matrix product, cheaper than keeping
them) and turns them in place into the softmax gradient. Same loss and gradients to float rounding (tested
against ``nn.functional.cross_entropy`` in float64).

On a CPU that multiplies bfloat16 natively (TrainConfig.cpu_bf16), the products run in bfloat16 instead, and each
row's softmax is kept, in bfloat16 (positions x items x 2 bytes, up to LOW_MAX_CELLS cells): the backward pass is
then two matrix products with no second exponential, and a step's loss and gradients cost 0.4-0.55 of float32's
(5,000-6,400 positions x 1,700-3,700 items, bench/RESULTS.md, session 22). The log-sum-exp, the softmax and the
gradients' sums stay float32; loss and gradients agree with float32's to ~0.3 % (relative, tested).
"""

from __future__ import annotations

import torch

BLOCK_CELLS = 1 << 20  # logits per block: 4 MB in float32 (measured: 256 rows x 3,700 items beat 1,024 rows by a third)
MIN_BLOCK_ROWS = 64
LOW_MAX_CELLS = 1 << 26  # the bfloat16 softmax kept for the backward pass: at most 128 MB, else the float32 path


def block_rows(n_items: int) -> int:
    """Return how many positions one block of logits holds for a catalogue of ``n_items``."""
    return max(MIN_BLOCK_ROWS, BLOCK_CELLS // max(int(n_items), 1))


class _BlockedSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, rows: int) -> torch.Tensor:  # noqa: ANN001
        n = h.shape[0]
        lse = torch.empty(n, dtype=h.dtype, device=h.device)
        for s in range(0, n, rows):
            block = h[s : s + rows] @ table.T  # (rows, n_items)
            top = block.amax(dim=1)
            lse[s : s + rows] = block.sub_(top[:, None]).exp_().sum(dim=1).log_().add_(top)
        ctx.save_for_backward(h, table, targets, lse)
        ctx.rows = rows
        return lse - _target_logits(h, table, targets)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        h, table, targets, lse = ctx.saved_tensors
        rows = ctx.rows
        grad_h = torch.empty_like(h)
        grad_table = torch.zeros_like(table)
        for s in range(0, h.shape[0], rows):
            block = h[s : s + rows] @ table.T
            block.sub_(lse[s : s + rows, None]).exp_().mul_(grad[s : s + rows, None])  # grad x softmax
            torch.mm(block, table, out=grad_h[s : s + rows])
            grad_table.addmm_(block.T, h[s : s + rows])
        _subtract_target_gradients(grad, h, table, targets, grad_h, grad_table)
        return grad_h, grad_table, None, None


class _LowPrecisionSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, rows: int, low: torch.dtype) -> torch.Tensor:  # noqa: ANN001
        hl, tl = h.to(low), table.to(low)
        lse = torch.empty(h.shape[0], dtype=h.dtype, device=h.device)
        soft = torch.empty(h.shape[0], table.shape[0], dtype=low, device=h.device)  # each row's softmax
        for s in range(0, h.shape[0], rows):
            block = (hl[s : s + rows] @ tl.T).to(h.dtype)
            top = block.amax(dim=1)
            total = block.sub_(top[:, None]).exp_().sum(dim=1)
            soft[s : s + rows] = block.div_(total[:, None])
            lse[s : s + rows] = total.log_().add_(top)
        ctx.save_for_backward(h, table, targets, tl, soft)
        return lse - _target_logits(h, table, targets)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        h, table, targets, tl, soft = ctx.saved_tensors
        # d loss_i / d logit_ij = grad_i (softmax_ij - [j = target_i]); a row's grad_i scales its product, not the softmax
        grad_h = (soft @ tl).to(h.dtype).mul_(grad[:, None])
        grad_table = (soft.T @ (h * grad[:, None]).to(soft.dtype)).to(table.dtype)
        _subtract_target_gradients(grad, h, table, targets, grad_h, grad_table)
        return grad_h, grad_table, None, None, None


def _target_logits(h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return (N,) each row's logit of its own target, in h's dtype (the loss is log-sum-exp minus it)."""
    return (h * table[targets]).sum(dim=1)


def _subtract_target_gradients(grad, h, table, targets, grad_h, grad_table) -> None:  # noqa: ANN001
    """The target's own logit enters the loss with a minus sign: take its gradients off ``grad_h`` and ``grad_table``."""
    grad_h.sub_(grad[:, None] * table[targets])
    grad_table.index_add_(0, targets, -grad[:, None] * h)


class _NegativesLogSumExp(torch.autograd.Function):
    """Each row's log-sum-exp over its logits against K shared negatives, accidental hits masked, in blocks of rows:
    the sampled softmax's (N x K) logits never exist whole (see ``negatives_logsumexp``)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, negs: torch.Tensor, hit_rows: torch.Tensor, hit_cols: torch.Tensor, rows: int, low) -> torch.Tensor:  # noqa: ANN001
        hl, nl = (h, negs) if low is None else (h.to(low), negs.to(low))
        lse = torch.empty(h.shape[0], dtype=h.dtype, device=h.device)
        soft = None if low is None else torch.empty(h.shape[0], negs.shape[0], dtype=low, device=h.device)
        for s in range(0, h.shape[0], rows):
            block = _masked_block(hl, nl, hit_rows, hit_cols, s, rows, h.dtype)
            top = block.amax(dim=1)
            total = block.sub_(top[:, None]).exp_().sum(dim=1)
            if soft is not None:
                soft[s : s + rows] = block.div_(total[:, None])
            lse[s : s + rows] = total.log_().add_(top)
        ctx.save_for_backward(h, negs, hit_rows, hit_cols, lse, *(() if soft is None else (nl, soft)))
        ctx.rows, ctx.low = rows, low
        return lse

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        h, negs, hit_rows, hit_cols, lse, *kept = ctx.saved_tensors
        if kept:  # the softmax was kept in low precision: two products, no second exponential
            nl, soft = kept
            grad_h = (soft @ nl).to(h.dtype).mul_(grad[:, None])
            grad_negs = (soft.T @ (h * grad[:, None]).to(soft.dtype)).to(negs.dtype)
            return grad_h, grad_negs, None, None, None, None
        grad_h = torch.empty_like(h)
        grad_negs = torch.zeros_like(negs)
        for s in range(0, h.shape[0], ctx.rows):
            block = _masked_block(h, negs, hit_rows, hit_cols, s, ctx.rows, h.dtype)
            block.sub_(lse[s : s + ctx.rows, None]).exp_().mul_(grad[s : s + ctx.rows, None])  # grad x softmax
            torch.mm(block, negs, out=grad_h[s : s + ctx.rows])
            grad_negs.addmm_(block.T, h[s : s + ctx.rows])
        return grad_h, grad_negs, None, None, None, None


def _masked_block(h, negs, hit_rows, hit_cols, start: int, rows: int, dtype: torch.dtype) -> torch.Tensor:  # noqa: ANN001
    """Return the float (rows, K) logits of rows start.. against ``negs``, each accidental hit at dtype's lowest value."""
    block = (h[start : start + rows] @ negs.T).to(dtype)
    inside = (hit_rows >= start) & (hit_rows < start + rows)
    if bool(inside.any()):
        block[hit_rows[inside] - start, hit_cols[inside]] = torch.finfo(dtype).min
    return block


def negatives_logsumexp(h: torch.Tensor, negs: torch.Tensor, hit_rows: torch.Tensor, hit_cols: torch.Tensor,
                        low: torch.dtype | None = None) -> torch.Tensor:
    """Return (N,) ``logsumexp(h @ negs.T, dim=1)`` with the (row, column) pairs ``hit_rows, hit_cols`` left out (a
    negative that is the row's own target), computed in blocks of rows; gradients flow to ``h`` and ``negs``.

    A sampled softmax's loss is then ``softplus(lse - positive logit)``. Why blocks: the whole (N x K) logits and
    their softmax gradient are fresh arrays past glibc's mmap threshold from about 8,000 positions x 1,024 negatives,
    page-faulted in again every step (10M-event log, bench/RESULTS.md, session 26). A row whose every negative is a
    hit gets float's lowest value plus log K (finite: no NaN gradient; its softplus is 0). ``low`` as in
    ``softmax_cross_entropy``: the products in bfloat16 and the softmax kept for the backward pass.
    """
    rows = block_rows(negs.shape[0])
    if low is not None and h.shape[0] * negs.shape[0] > LOW_MAX_CELLS:
        low = None
    return _NegativesLogSumExp.apply(h, negs, hit_rows, hit_cols, rows, low)


def softmax_cross_entropy(h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, low: torch.dtype | None = None) -> torch.Tensor:
    """Return (N,) ``-log softmax(h @ table.T)[i, targets[i]]``, computed in blocks of rows (module docstring).

    ``h`` (N, d) and ``table`` (n_items, d) must share one floating dtype; gradients flow to both. ``low``
    (torch.bfloat16): the products in that dtype and the softmax kept in it, where it fits in LOW_MAX_CELLS.
    """
    rows = block_rows(table.shape[0])
    if low is not None and h.shape[0] * table.shape[0] <= LOW_MAX_CELLS:
        return _LowPrecisionSoftmaxCE.apply(h, table, targets, rows, low)
    return _BlockedSoftmaxCE.apply(h, table, targets, rows)
