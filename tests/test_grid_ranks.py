"""A blend grid's target ranks in one pass (training/grid_ranks.py): numpy and the compiled kernel give the ranks the
variant-by-variant search always gave, ties and seen targets included."""

import numpy as np
import pytest

from crossrec_core.training import grid_ranks as gr
from crossrec_core.training.grid_ranks import masked_ranks
from crossrec_core.training.tuning import KNN_GRID, PRIOR_GRID_CAT, PRIOR_GRID_POP


def _scores(seed: int, B: int = 9, N: int = 300):
    rng = np.random.default_rng(seed)
    base = (rng.integers(-40, 40, (B, N)) / 8).astype(np.float32)  # coarse values: many exact ties
    base[rng.random((B, N)) < 0.1] = -np.inf  # seen items
    targets = rng.integers(0, N, B)
    base[0, targets[0]] = -np.inf  # a seen target ranks last
    log_pop = np.log(rng.random(N) + 1e-3).astype(np.float32)
    lift = (rng.integers(-8, 8, (B, N)) / 4).astype(np.float32)
    return base, log_pop, lift, targets


@pytest.mark.parametrize("compiled", [False, True])
def test_prior_grid_ranks_are_the_variant_by_variant_ranks(monkeypatch, compiled):
    monkeypatch.setattr(gr, "KERNEL_MIN_CELLS", 0 if compiled else 10**18)
    base, log_pop, lift, targets = _scores(1)
    grid = [(a, b) for a in PRIOR_GRID_POP for b in PRIOR_GRID_CAT]
    got = gr.grid_ranks(base, [log_pop[None, :], lift], np.array(grid, dtype=np.float32), targets)
    for g, (a, b) in enumerate(grid):  # what tuning.py computed before: one variant at a time
        want = masked_ranks(base + a * log_pop[None, :] + b * lift if (a or b) else base, targets)
        np.testing.assert_array_equal(got[g], want, err_msg=f"variant {a, b}")
    assert (got[:, 0] == base.shape[1]).all()


@pytest.mark.parametrize("compiled", [False, True])
def test_knn_grid_ranks_are_the_variant_by_variant_ranks(monkeypatch, compiled):
    monkeypatch.setattr(gr, "KERNEL_MIN_CELLS", 0 if compiled else 10**18)
    base, _, nb, targets = _scores(2)
    got = gr.grid_ranks(base, [nb], np.array(KNN_GRID, dtype=np.float32)[:, None], targets)
    for g, w in enumerate(KNN_GRID):
        want = masked_ranks(base + np.float32(w) * nb if w else base, targets)
        np.testing.assert_array_equal(got[g], want, err_msg=f"weight {w}")
    assert len({tuple(r) for r in got}) > 3  # the weights do change the ranks
