"""models/fast_ops.py: the CPU dropout and attention dropout, row gathers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossrec_core.models.fast_ops import Dropout, attention, dropout, masked_rows, take_rows


def test_dropout_zeroes_a_fraction_p_scales_the_rest_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, 0.2)
    kept = y != 0
    # 400,000 draws: the kept share's standard deviation is 0.0006
    assert abs(float(kept.float().mean()) - 0.8) < 0.003
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.8))
    assert abs(float(y.mean()) - 1.0) < 0.004


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_dropout_rate_follows_p(p):
    torch.manual_seed(1)
    y = dropout(torch.ones(200_000), p)
    assert abs(float((y == 0).float().mean()) - p) < 0.005


def test_dropout_masks_are_not_the_same_element_pattern_in_each_16_bit_lane():
    # four uniforms come from one 64-bit draw: neighbours must still be dropped independently
    torch.manual_seed(2)
    keep = (dropout(torch.ones(400_000), 0.5) != 0).view(-1, 4).float()
    both = (keep[:, 0] * keep[:, 1]).mean()
    assert abs(float(both) - 0.25) < 0.005


def test_dropout_repeats_under_the_same_seed_and_passes_through_when_not_training():
    x = torch.randn(64, 7, 16)
    torch.manual_seed(3)
    a = dropout(x, 0.3)
    torch.manual_seed(3)
    b = dropout(x, 0.3)
    assert torch.equal(a, b)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0) is x
    m = Dropout(0.3).eval()
    assert m(x) is x


def test_dropout_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(4)
    x = torch.randn(1000, requires_grad=True)
    y = dropout(x, 0.25)
    (g,) = torch.autograd.grad(y.sum(), x)
    expected = (y.detach() != 0).float() / 0.75
    assert torch.allclose(g, expected)


def test_attention_without_dropout_is_torchs_and_with_it_keeps_the_expectation_and_the_mask():
    torch.manual_seed(5)
    B, H, T, D = 4, 2, 6, 8
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    mask = torch.ones(T, T, dtype=torch.bool).tril().expand(B, 1, T, T)
    plain = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(attention(q, k, v, mask, 0.2, training=False), plain, atol=1e-6)
    # a masked key (the future) with a huge value must never leak into any draw
    v_leak = v.clone()
    v_leak[:, :, -1] = 1e6
    draws = torch.stack([attention(q, k, v_leak, mask, 0.2, training=True) for _ in range(3000)])
    assert draws[:, :, :, :-1].abs().max() < 1e3
    mean = draws[:, :, :, :-1].mean(dim=0)
    ref = nn.functional.scaled_dot_product_attention(q, k, v_leak, attn_mask=mask)[:, :, :-1]
    assert torch.allclose(mean, ref, atol=0.06)


@pytest.mark.parametrize("shape", [(7,), (7, 5)])
def test_take_rows_is_indexing_in_value_and_gradient(shape):
    torch.manual_seed(7)
    table = torch.randn(30, *shape[1:], requires_grad=True)
    idx = torch.randint(0, 30, (4, 6))  # repeats: the gradient must add them up
    a, b = take_rows(table, idx), table[idx]
    assert a.shape == b.shape and torch.equal(a, b)
    g = torch.randn(a.shape)
    assert torch.equal(torch.autograd.grad(a, table, g)[0], torch.autograd.grad(b, table, g)[0])
    tokens = torch.randint(0, 9, (30, 3))
    assert torch.equal(take_rows(tokens, idx), tokens[idx])


def test_masked_rows_is_boolean_indexing_in_value_and_gradient():
    torch.manual_seed(8)
    h = torch.randn(5, 6, 4, requires_grad=True)
    mask = torch.rand(5, 6) > 0.4
    a, b = masked_rows(h, mask), h[mask]
    assert torch.equal(a, b)
    g = torch.randn(a.shape)
    assert torch.equal(torch.autograd.grad(a, h, g)[0], torch.autograd.grad(b, h, g)[0])
    targets = torch.randint(0, 50, (5, 6))
    at = mask.reshape(-1).nonzero().squeeze(1)
    assert torch.equal(masked_rows(targets, mask, at), targets[mask])
    assert masked_rows(h, torch.zeros(5, 6, dtype=torch.bool)).shape == (0, 4)

