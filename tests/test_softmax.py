"""The blocked full-catalogue softmax cross-entropy (training/softmax.py) against torch's own, in float64."""

import pytest
import torch
from torch import nn

from crossrec_core.models.fusion import build_net
from crossrec_core.training import softmax
from crossrec_core.training.loss import RetrievalLoss, accidental_hits
from crossrec_core.training.softmax import (
    _BlockedSoftmaxCE, _LowPrecisionSoftmaxCE, _NegativesLogSumExp, block_rows, negatives_logsumexp, softmax_cross_entropy,
)
from crossrec_core.config import ItemEncoderConfig, ModelConfig, UserEncoderConfig


def _case(n: int, n_items: int, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(n_items, dim, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, n_items, (n,), generator=g)
    targets[: n // 3] = 2  # repeated targets: their gradients add up on one table row
    weights = torch.rand(n, generator=g, dtype=torch.float64)
    return h, table, targets, weights


@pytest.mark.parametrize("rows", [1, 7, 50, 64, 1000])  # one row per block, blocks that do not divide N, one block
def test_loss_and_gradients_match_torch_cross_entropy(rows):
    h, table, targets, weights = _case(50, 30)
    ref = nn.functional.cross_entropy(h @ table.T, targets, reduction="none")
    ref_grads = torch.autograd.grad((ref * weights).sum(), (h, table))
    out = _BlockedSoftmaxCE.apply(h, table, targets, rows)
    grads = torch.autograd.grad((out * weights).sum(), (h, table))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_large_logits_do_not_overflow():
    h, table, targets, _ = _case(20, 40)
    with torch.no_grad():
        h.mul_(200.0)  # logits in the thousands: exp() of them overflows without the row maximum taken out
    out = softmax_cross_entropy(h, table, targets)
    ref = nn.functional.cross_entropy(h @ table.T, targets, reduction="none")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)


def test_block_rows_keep_a_block_near_a_million_cells():
    assert block_rows(1_700) * 1_700 <= softmax.BLOCK_CELLS < (block_rows(1_700) + 1) * 1_700
    assert block_rows(10**9) == softmax.MIN_BLOCK_ROWS  # a huge catalogue still takes whole rows
    assert block_rows(0) == softmax.BLOCK_CELLS


def test_the_training_loss_uses_it_on_a_cpu_and_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(dim=16, max_len=6))
    net = build_net(cfg, n_items=40, n_categories=4, n_event_types=2, attr_vocab_size=2, use_text=False, n_vector_columns=0).double()
    loss_mod = RetrievalLoss(net, "ce", 4).eval()
    B, T = 3, 6
    items = torch.randint(0, 40, (B, T))
    args = (items, torch.zeros(B, T, dtype=torch.long), torch.zeros(B, T, dtype=torch.long), torch.ones(B, T, dtype=torch.bool),
            torch.randint(0, 40, (B, T)), torch.rand(B, T, dtype=torch.float64), torch.zeros(1, dtype=torch.long))
    params = [p for p in net.parameters() if p.requires_grad]
    got = loss_mod(*args)
    got_grads = torch.autograd.grad(got, params, allow_unused=True)

    def reference(hv, table, tv, low=None):  # what the loss computed before blocks: the whole logits at once
        assert low is None  # a RetrievalLoss of its own multiplies in its dtype (only a CPU Fit sets bfloat16)
        return nn.functional.cross_entropy(hv @ table.T, tv, reduction="none")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("crossrec_core.training.loss.softmax_cross_entropy", reference)
        want = loss_mod(*args)
        want_grads = torch.autograd.grad(want, params, allow_unused=True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        if w is not None:
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n, n_items, rows", [(50, 30, 7), (300, 257, 64)])
def test_bfloat16_products_stay_within_bfloat16_rounding_of_the_exact_loss_and_gradients(n, n_items, rows):
    h, table, targets, weights = _case(n, n_items, dim=16)
    ref = nn.functional.cross_entropy(h @ table.T, targets, reduction="none")
    ref_grads = torch.autograd.grad((ref * weights).sum(), (h, table))
    out = _LowPrecisionSoftmaxCE.apply(h, table, targets, rows, torch.bfloat16)
    grads = torch.autograd.grad((out * weights).sum(), (h, table))
    assert out.dtype == torch.float64 and all(g.dtype == torch.float64 for g in grads)  # the caller's dtype back
    # bfloat16 keeps 8 bits of mantissa (0.4 %): the loss and each gradient within a few of those, not exact
    assert (out - ref).abs().max() < 0.02 * ref.abs().mean()
    for got, want in zip(grads, ref_grads):
        assert (got - want).norm() < 0.01 * want.norm()
        assert not torch.equal(got, want)  # the products did run in bfloat16


def test_bfloat16_softmax_past_its_memory_cap_takes_the_float_path(monkeypatch):
    h, table, targets, _ = _case(40, 30)
    low = softmax_cross_entropy(h, table, targets, torch.bfloat16)
    monkeypatch.setattr(softmax, "LOW_MAX_CELLS", 40 * 30 - 1)  # the kept softmax would not fit: float64 products
    capped = softmax_cross_entropy(h, table, targets, torch.bfloat16)
    exact = nn.functional.cross_entropy(h @ table.T, targets, reduction="none")
    torch.testing.assert_close(capped, exact, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(low, exact, rtol=1e-9, atol=1e-12)


def test_a_cpu_training_step_multiplies_in_bfloat16_only_where_the_cpu_does_so_natively(monkeypatch):
    from crossrec_core.training import optim

    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: True)
    assert optim.cpu_product_dtype("cpu", True) == torch.bfloat16
    assert optim.cpu_product_dtype("cpu", False) is None  # TrainConfig.cpu_bf16 off
    assert optim.cpu_product_dtype("cuda", True) is None  # a GPU: autocast (amp_plan)
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: False)
    assert optim.cpu_product_dtype("cpu", True) is None  # emulated bfloat16 is slower than float32


def _sampled_reference(h, table, targets, negatives):
    """The sampled softmax as it was written before session 26: [positive, negatives] logits, hits at -inf."""
    pos = (h * table[targets]).sum(-1, keepdim=True)
    neg = (h @ table[negatives].T).masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    return nn.functional.cross_entropy(torch.cat([pos, neg], dim=1), torch.zeros_like(targets), reduction="none")


def _sampled(h, table, targets, negatives, rows, low=None):
    r, c = accidental_hits(targets, negatives)
    lse = _NegativesLogSumExp.apply(h, table[negatives], r, c, rows, low)
    return nn.functional.softplus(lse - (h * table[targets]).sum(-1).to(lse.dtype))


def test_accidental_hits_are_every_pair_of_a_negative_equal_to_its_rows_target():
    targets, negatives = torch.tensor([3, 9, 3, 4]), torch.tensor([3, 5, 3, 9, 0])
    r, c = accidental_hits(targets, negatives)
    assert sorted(zip(r.tolist(), c.tolist())) == [(0, 0), (0, 2), (1, 3), (2, 0), (2, 2)]


@pytest.mark.parametrize("rows", [1, 7, 64, 1000])  # blocks that do not divide N, hits on both sides of a block edge
def test_sampled_softmax_in_blocks_matches_the_whole_logits_loss_and_gradients(rows):
    h, table, targets, weights = _case(90, 40)
    negatives = torch.randint(0, 40, (64,), generator=torch.Generator().manual_seed(1))  # duplicates and many hits
    assert (negatives.unsqueeze(0) == targets.unsqueeze(1)).any(dim=1).sum() > 40
    ref = _sampled_reference(h, table, targets, negatives)
    ref_grads = torch.autograd.grad((ref * weights).sum(), (h, table))
    out = _sampled(h, table, targets, negatives, rows)
    grads = torch.autograd.grad((out * weights).sum(), (h, table))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_sampled_softmax_with_bfloat16_products_stays_near_the_exact_loss_and_gradients():
    h, table, targets, weights = _case(300, 500, dim=16)
    h, table = h.detach().float().requires_grad_(), table.detach().float().requires_grad_()
    negatives = torch.randint(0, 500, (256,), generator=torch.Generator().manual_seed(2))
    ref = _sampled(h, table, targets, negatives, 64)
    ref_grads = torch.autograd.grad((ref * weights.float()).sum(), (h, table))
    out = _sampled(h, table, targets, negatives, 64, torch.bfloat16)
    grads = torch.autograd.grad((out * weights.float()).sum(), (h, table))
    assert (out - ref).abs().max() / ref.abs().mean() < 0.01
    for got, want in zip(grads, ref_grads):
        assert (got - want).norm() / want.norm() < 0.01


def test_a_row_whose_every_negative_is_its_target_has_loss_0_and_a_finite_gradient():
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    table = torch.randn(10, 4, dtype=torch.float64)
    targets, negatives = torch.tensor([5, 6]), torch.tensor([5, 5, 5])
    r, c = accidental_hits(targets, negatives)
    loss = nn.functional.softplus(negatives_logsumexp(h, table[negatives], r, c))
    (g,) = torch.autograd.grad(loss.sum(), h)
    assert float(loss[0].detach()) == 0.0 and float(loss[1].detach()) > 0.0
    assert torch.isfinite(g).all()
