"""The synthetic bench logs (bench/chain_logs.py): seeded, the shape they promise, and the structure they plant."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import dense_logs  # noqa: E402
from chain_logs import generate  # noqa: E402
from oracle import OracleRanker, regenerate  # noqa: E402

from crossrec_core.data.load import load_log  # noqa: E402
from crossrec_core.evaluation.baselines import PopularityRanker  # noqa: E402
from crossrec_core.evaluation.evaluator import evaluate_rankers  # noqa: E402


def _novel_share(inter, items) -> float:
    cat = dict(zip(items["item_id"], items["category"]))
    novel = n = 0
    for _, g in inter.groupby("user_id", sort=False):
        cats = [cat[i] for i in g["item_id"]]
        if len(cats) >= 3:
            n += 1
            novel += cats[-1] not in set(cats[:-1])
    return novel / n


def test_chain_log_is_seeded_purchases_only_and_next_purchases_often_open_a_new_category():
    inter, items = generate(users=400, items=300, categories=12, seed=3)
    again, _ = generate(users=400, items=300, categories=12, seed=3)
    assert inter.equals(again)
    assert set(inter["event"]) == {"purchase"}
    assert set(inter["item_id"]) <= set(items["item_id"]) and items["category"].nunique() == 12
    per_user = inter.groupby("user_id").size()
    assert 10 <= per_user.median() <= 16
    # the planted structure: most next purchases go to an item of another category (complements), so a
    # large share of shoppers' last purchase is in a category they never bought in
    assert _novel_share(inter, items) > 0.2
    assert (inter.groupby("user_id")["timestamp"].apply(lambda t: bool(np.all(np.diff(t.to_numpy()) >= 0)))).all()


def _repeated_pair_share(inter) -> float:
    """Share of consecutive purchases (a -> b) whose pair occurs at least 3 times in the log."""
    pairs = []
    for _, g in inter.groupby("user_id", sort=False):
        ids = g["item_id"].tolist()
        pairs += list(zip(ids[:-1], ids[1:]))
    counts = {}
    for pr in pairs:
        counts[pr] = counts.get(pr, 0) + 1
    return sum(counts[pr] >= 3 for pr in pairs) / len(pairs)


def test_the_signal_is_item_to_item_and_crosses_categories():
    """With complements (the default), the same item pairs recur and most of them cross categories;
    without (--follow 0), pairs hardly recur."""
    chains, items = generate(users=400, items=300, categories=12, seed=3)
    flat, _ = generate(users=400, items=300, categories=12, seed=3, follow=0.0)
    assert _repeated_pair_share(chains) > _repeated_pair_share(flat) + 0.2
    cat = dict(zip(items["item_id"], items["category"]))
    ids = chains.groupby("user_id", sort=False)["item_id"].apply(list)
    steps = [(a, b) for seq in ids for a, b in zip(seq[:-1], seq[1:])]
    assert np.mean([cat[a] != cat[b] for a, b in steps]) > 0.6


def test_the_oracle_reproduces_a_generated_log_and_ranks_by_its_true_next_item_probability(tmp_path):
    inter, items = dense_logs.generate(users=150, items=300, categories=8, seed=4, median_events=30)
    dense_logs.write_log(tmp_path, inter, items, "Dense synthetic shop log",
                         "Made by `bench/dense_logs.py --users 150 --items 300 --categories 8 --median-events 30 --seed 4` (test).")
    kind, latents = regenerate(tmp_path)
    assert kind == "dense_logs" and latents["habit"].shape == (150, 8)
    ds = load_log(str(tmp_path / "interactions.csv"), str(tmp_path / "items.csv"), name="oracle-test")
    res = evaluate_rankers(ds, {"oracle": OracleRanker(kind, latents), "popularity": PopularityRanker()}, k=10)
    assert res.value("oracle", "all", "NDCG@10") > 2 * res.value("popularity", "all", "NDCG@10")


def test_the_oracle_refuses_a_log_its_provenance_does_not_reproduce(tmp_path):
    inter, items = dense_logs.generate(users=40, items=100, categories=5, seed=4, median_events=20)
    inter.loc[0, "item_id"] = inter.loc[1, "item_id"] if inter.loc[0, "item_id"] != inter.loc[1, "item_id"] else "i99"
    dense_logs.write_log(tmp_path, inter, items, "Dense synthetic shop log",
                         "Made by `bench/dense_logs.py --users 40 --items 100 --categories 5 --median-events 20 --seed 4` (test).")
    with pytest.raises(SystemExit, match="does not give the same events"):
        regenerate(tmp_path)
