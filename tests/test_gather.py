"""models/gather.py: row gathers through index_select, the same values and gradients as indexing."""

from __future__ import annotations

import pytest
import torch

from crossrec_core.models.gather import masked_rows, take_rows


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

