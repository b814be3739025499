"""Item-kNN's tables, built by one sort of every pair and a compiled per-row choice, against a brute-force reference."""

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import ConfigError
from crossrec_core.models import item_knn
from crossrec_core.models.item_knn import ItemKNNRanker, best_neighbours


def _random_log(seed: int, users: int = 60, items: int = 25):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for t in range(int(rng.integers(1, 14))):
            rows.append((f"u{u}", f"i{int(rng.zipf(1.5)) % items}", t))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    ids = sorted(inter["item_id"].unique())
    return from_frames(inter, pd.DataFrame({"item_id": ids, "category": ["c"] * len(ids)}), name="knn")


def _reference(ds, window: int, directed: bool, k: int) -> dict[int, list[tuple[int, float]]]:
    """Each item's best ``k`` neighbours (sim desc, then item asc), counted pair by pair in Python."""
    co = defaultdict(float)
    seqs = ds.seqs
    for u in range(ds.n_users):
        s = seqs.items[seqs.offsets[u] : seqs.offsets[u + 1]].tolist()
        for lag in range(1, window + 1):  # lag by lag, as the sums have always been added
            for i in range(len(s) - lag):
                a, b = s[i], s[i + lag]
                if a == b:
                    continue
                co[(a, b)] += 1.0 / lag if directed else 1.0
                if not directed:
                    co[(b, a)] += 1.0
    pop = np.maximum(np.bincount(seqs.items, minlength=ds.n_items).astype(np.float64), 1.0)
    rows = defaultdict(list)
    for (a, b), c in co.items():
        rows[a].append((b, c / pop[a] if directed else c / np.sqrt(pop[a] * pop[b])))
    return {a: sorted(v, key=lambda e: (-e[1], e[0]))[:k] for a, v in rows.items()}


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("directed,window", [(False, 10), (False, 1), (True, 3), (True, 7)])
def test_fit_matches_a_pair_by_pair_count(monkeypatch, compiled, directed, window):
    monkeypatch.setattr(item_knn, "KERNEL_MIN_ENTRIES", 0 if compiled else 10**12)
    ds = _random_log(seed=window + 10 * directed)
    knn = ItemKNNRanker(window=window, directed=directed, max_neighbors=4).fit(ds, ds.seqs)
    want = _reference(ds, window, directed, k=4)
    assert len(knn.sim_offsets_) == ds.n_items + 1
    for a in range(ds.n_items):
        nb, sim = knn.neighbours(a)
        ref = want.get(a, [])
        assert nb.tolist() == [b for b, _ in ref], f"item {a}"
        np.testing.assert_array_equal(sim, np.array([s for _, s in ref], dtype=np.float32))


def test_the_compiled_choice_and_the_lexsort_agree_on_ties(monkeypatch):
    rng = np.random.default_rng(0)
    n, k = 50, 3
    keys = np.unique(rng.integers(0, n * n, 3_000))
    src, dst = keys // n, keys % n  # each row's dst increasing
    sim = rng.integers(1, 4, len(keys)).astype(np.float64)  # three values: ties everywhere
    monkeypatch.setattr(item_knn, "KERNEL_MIN_ENTRIES", 10**12)
    plain = best_neighbours(src, dst, sim, n, k)
    monkeypatch.setattr(item_knn, "KERNEL_MIN_ENTRIES", 0)
    compiled = best_neighbours(src, dst, sim, n, k)
    for a, b in zip(plain, compiled):
        np.testing.assert_array_equal(a, b)
    assert (np.diff(plain[0]) <= k).all() and plain[0][-1] == len(plain[1])


def test_a_catalogue_too_large_for_the_pair_codes_is_refused():
    with pytest.raises(ConfigError, match="too large"):
        ItemKNNRanker(window=10)._pair_counts(np.array([0, 1]), np.array([0, 0]), n=2**30)


@pytest.mark.parametrize("directed", [False, True])
def test_neighbour_sums_dense_and_sorted_give_the_same_cells_and_the_floats_of_score_histories(monkeypatch, directed):
    ds = _random_log(seed=3, users=80, items=30)
    knn = ItemKNNRanker(window=3, directed=directed, max_neighbors=6).fit(ds, ds.seqs)
    users = np.arange(ds.n_users, dtype=np.int64)
    ends = ds.seqs.offsets[users + 1] - 1  # every history but its last event
    monkeypatch.setattr(item_knn, "DENSE_SUMS_PER_CONTRIBUTION", 10**9)
    dense = knn.neighbour_sums(ds.seqs, users, ends)
    monkeypatch.setattr(item_knn, "DENSE_SUMS_PER_CONTRIBUTION", 0)  # the sort of every contribution's cell
    sorted_ = knn.neighbour_sums(ds.seqs, users, ends)
    monkeypatch.setattr(item_knn, "ROW_SUMS_MIN_CONTRIBUTIONS", 0)  # the compiled kernel, row by row
    rows = knn.neighbour_sums(ds.seqs, users, ends)
    assert len(dense[0]) > 100
    for other in (sorted_, rows):
        np.testing.assert_array_equal(dense[0], other[0])
        np.testing.assert_array_equal(dense[1], other[1])
    full = knn.score_histories(ds.seqs, users, ends) - knn._pop_tiebreak()[None, :]
    want = np.zeros(full.size, np.float32)
    want[dense[0]] = dense[1]
    np.testing.assert_allclose(want, full.ravel(), rtol=0, atol=1e-6)  # every other cell: no neighbour reaches it
