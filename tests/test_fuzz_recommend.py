"""Fuzzing the recommender API (hypothesis, derandomized so runs are repeatable) on a tiny trained model.

Random histories of known and unknown item ids (with and without event names), random k (0, negative,
huge, non-integers), thresholds and diversity outside [0, 1] (NaN and infinities too), random category
filters and caps. Properties: the only exceptions are CrossrecError subclasses; never a seen item; never
more than k rows; no duplicates; the filters and the threshold hold.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import CrossrecError
from crossrec_core.serving.recommender import Recommender

N_ITEMS, CATS = 30, ["Tents", "Boots", "Stoves", "Maps", "Lamps"]
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _dataset():
    rng = np.random.default_rng(11)
    rows = [(f"u{u}", f"i{int(x)}", t, ["view", "cart", "purchase"][t % 3])
            for u in range(60) for t, x in enumerate(rng.choice(N_ITEMS, 6, replace=False))]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(N_ITEMS)], "category": [CATS[k % 5] for k in range(N_ITEMS)],
                          "title": [f"thing {k}" for k in range(N_ITEMS)]})
    return from_frames(inter, items, name="fuzz")


@pytest.fixture(scope="module")
def rec() -> Recommender:
    from crossrec_core.training.loop import train_model

    ds = _dataset()
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(kind="gru", dim=16, max_len=8),
                      train=TrainConfig(epochs=1, patience=1, batch_size=32, device="cpu", fusion_epochs=1, seed=1))
    return Recommender(train_model(ds, cfg, name="fuzz"), ds)


known_ids = st.sampled_from([f"i{k}" for k in range(N_ITEMS)])
any_ids = st.one_of(known_ids, st.text(max_size=12), st.sampled_from(["", " ", "i999", "<script>", "nan", "None", "i1 "]))
events = st.one_of(st.sampled_from(["view", "cart", "purchase"]), st.text(max_size=8))
histories = st.one_of(
    st.lists(any_ids, max_size=12),
    st.lists(st.tuples(any_ids, events), max_size=12),
    st.lists(known_ids, min_size=1, max_size=25),
)
ks = st.one_of(st.integers(-3, 40), st.sampled_from([0, 1, N_ITEMS, N_ITEMS + 1, 10**6]),  # bigger k: see the memory test below
               st.floats(allow_nan=True, allow_infinity=True), st.just(True), st.just("5"))
unit = st.one_of(st.none(), st.floats(-2, 3), st.sampled_from([0.0, 1.0, -0.0, math.nan, math.inf, -math.inf, 1e-300]))
cats = st.lists(st.one_of(st.sampled_from(CATS), st.text(max_size=6)), max_size=3)
caps = st.one_of(st.none(), st.integers(-2, 6), st.just(10**9))
pools = st.one_of(st.none(), st.integers(-2, 60), st.just(10**7))


def _known_history(rec: Recommender, history) -> set[str]:
    ids = [h[0] if isinstance(h, tuple) else h for h in history]
    known = rec.model.item_index(np.asarray([str(i) for i in ids], dtype=object)) >= 0 if ids else np.zeros(0, bool)
    return {str(i) for i, ok in zip(ids, known) if ok}


valid = {  # in-range values: the answered path gets most of the examples
    "k": st.one_of(st.integers(1, 40), st.sampled_from([N_ITEMS, N_ITEMS + 1, 10**6])),
    "exclude": st.lists(st.sampled_from(CATS), max_size=2),
    "include": st.one_of(st.none(), st.none(), st.lists(st.sampled_from(CATS), min_size=1, max_size=4)),
    "threshold": st.one_of(st.none(), st.floats(0, 1)),
    "diversity": st.one_of(st.none(), st.floats(0, 1)),
    "cap": st.one_of(st.none(), st.integers(1, 6)),
    "pool": st.one_of(st.none(), st.integers(1, 60)),
}
hostile = {"k": ks, "exclude": cats, "include": st.one_of(st.none(), cats), "threshold": unit, "diversity": unit,
           "cap": caps, "pool": pools}


@FUZZ
@given(history=histories, cross=st.booleans(), data=st.data())
def test_recommend_never_crashes_never_repeats_never_exceeds_k(rec, history, cross, data):
    # each argument is in range or hostile on its own, so single bad values are tried next to good ones
    args = {name: data.draw(st.one_of(valid[name], valid[name], hostile[name]), label=name) for name in valid}
    k, exclude, include, threshold, diversity, cap, pool = (args[n] for n in ("k", "exclude", "include", "threshold",
                                                                            "diversity", "cap", "pool"))
    kwargs = dict(cross_category_only=cross, exclude_categories=exclude, include_categories=include,
                  threshold=threshold, per_category_cap=cap, n_candidates=pool)
    if diversity is not None:
        kwargs["diversity"] = diversity
    try:
        out = rec.recommend(history, k, **kwargs)
    except CrossrecError as err:
        event(f"refused: {type(err).__name__}")
        return  # refused with a message a user can act on: fine
    event("answered" if len(out) else "answered empty")
    seen = _known_history(rec, history)
    ids = out.item_ids
    assert len(ids) <= int(k)
    assert len(set(ids)) == len(ids)
    assert not set(ids) & seen, (set(ids) & seen, history)
    cats_out = [r.category for r in out]
    assert not set(cats_out) & set(exclude)
    if include is not None:
        assert set(cats_out) <= set(include)
    if cross:
        hist_cats = {CATS[int(i[1:]) % 5] for i in seen}
        assert not set(cats_out) & hist_cats
    if threshold is not None:
        assert all(r.probability >= threshold - 1e-6 for r in out)
    if cap is not None:
        assert max(pd.Series(cats_out).value_counts().tolist() or [0]) <= cap
    assert all(0.0 <= r.probability <= 1.0 and math.isfinite(r.score) for r in out)
    assert all(isinstance(r.explanation.sentence, str) for r in out)


@FUZZ
@given(users=st.lists(st.integers(0, 59), max_size=8), cut=st.lists(st.integers(-3, 10), min_size=8, max_size=8),
       k=st.one_of(st.integers(-1, 35), st.just(10**6)), cross=st.booleans(), threshold=unit)
def test_recommend_batch_never_crashes_never_repeats_never_exceeds_k(rec, users, cut, k, cross, threshold):
    ds = rec.dataset
    seqs = rec.model.align(ds)
    users = np.asarray(users, dtype=np.int64)
    starts = seqs.offsets[users]
    ends = starts + np.asarray(cut[: len(users)], dtype=np.int64)  # histories cut anywhere, even before the start
    try:
        out = rec.recommend_batch(seqs, users, ends, k, cross_category_only=cross, threshold=threshold)
    except CrossrecError as err:
        event(f"refused: {type(err).__name__}")
        return
    event("answered" if len(out) else "answered empty")
    assert set(out.columns) >= {"user_idx", "rank", "item_idx", "probability", "category"}
    for row, (u, e) in enumerate(zip(users, ends)):
        mine = out[out["user_idx"] == u]
        assert len(mine) <= int(k) * int((users == u).sum())
        hist = set(seqs.items[seqs.offsets[u]: max(int(seqs.offsets[u]), min(int(e), int(seqs.offsets[u + 1])))].tolist())
        if (users == u).sum() == 1:
            assert not set(mine["item_idx"].tolist()) & hist
            assert mine["item_idx"].is_unique and mine["rank"].tolist() == list(range(1, len(mine) + 1))
    if threshold is not None:
        assert (out["probability"] >= threshold - 1e-6).all()


_HUGE_K_CHILD = """
import resource, sys
sys.path.insert(0, {tests!r})
from test_fuzz_recommend import _dataset
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.serving.recommender import Recommender
from crossrec_core.training.loop import train_model
ds = _dataset()
cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(kind="gru", dim=16, max_len=8),
                  train=TrainConfig(epochs=1, patience=1, batch_size=32, device="cpu", fusion_epochs=1, seed=1))
rec = Recommender(train_model(ds, cfg, name="fuzz"), ds)
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a huge k must not need more than 3 GB
out = rec.recommend(["i1", "i2"], 2**31)
seqs = rec.model.align(ds)
batch = rec.recommend_batch(seqs, [0, 1], seqs.offsets[1:3], 10**12)
print(len(out), len(batch))
"""


def test_huge_k_does_not_allocate_memory_proportional_to_k():
    """Regression, found by this fuzzing (fixed in recommend.Recommender._rank): the (B, k) result arrays are allocated with the asked k,
    not min(k, n_items): k = 2**31 needs ~17 GB (the fuzz run was OOM-killed at 17.8 GB RSS), so
    `crossrec recommend --k 2147483648` or an API caller takes the machine down. Fix applied: at the top of _rank,
    ``opts = replace(opts, k=min(opts.k, max(self.n_items, 1)))`` (the answer cannot hold more than
    n_items rows anyway). Run in a child process with a 3 GB address-space limit so it cannot hurt."""
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", _HUGE_K_CHILD.format(tests=tests)], capture_output=True, text=True,
                          timeout=300, cwd=str(Path(tests).parent))
    assert proc.returncode == 0, proc.stderr[-1500:]
    n_one, n_batch = map(int, proc.stdout.split()[-2:])
    assert n_one <= N_ITEMS and n_batch <= 2 * N_ITEMS
