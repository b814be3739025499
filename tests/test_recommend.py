"""Recommender API on a hand-built test double of TrainedModel (exact answers), plus cold users/items."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crossrec_core.data.dataset import Sequences, from_frames
from crossrec_core.errors import ConfigError, UnknownItemError
from crossrec_core.serving.recommender import Recommender, RecommendOptions
from crossrec_core.serving.scoring import one_user_sequences

# id, title, category, vector (4-d: camping, footwear, kitchen, books directions)
CATALOGUE = [
    ("t1", "Trail Tent 2P", "Camping", [1.0, 0.2, 0.0, 0.0]),
    ("t2", "Camp Stove", "Camping", [1.0, 0.0, 0.2, 0.0]),
    ("t3", "Sleeping Bag", "Camping", [0.9, 0.1, 0.0, 0.0]),
    ("f1", "Hiking Boots", "Footwear", [0.5, 1.0, 0.0, 0.0]),
    ("f2", "Hiking Socks", "Footwear", [0.3, 1.0, 0.0, 0.0]),
    ("f3", "Sandals", "Footwear", [0.0, 1.0, 0.0, 0.2]),
    ("k1", "Espresso Machine", "Kitchen", [0.0, 0.0, 1.0, 0.0]),
    ("k2", "Milk Frother", "Kitchen", [0.0, 0.0, 1.0, 0.1]),
    ("k3", "Camping Mug", "Kitchen", [0.4, 0.0, 0.8, 0.0]),
    ("b1", "Trail Guide", "Books", [0.55, 0.0, 0.0, 0.8]),
    ("b2", "Cookbook", "Books", [0.0, 0.0, 0.5, 1.0]),
    ("b3", "Novel", "Books", [0.0, 0.0, 0.0, 1.0]),
    ("n1", "New Trail Runner", "Footwear", [0.45, 1.0, 0.0, 0.0]),  # cold item: never bought
]
CATEGORIES = np.array(["Books", "Camping", "Footwear", "Kitchen"], dtype=object)


class FakeModel:
    """TrainedModel test double: user state = mean of history item vectors, fusion = sigmoid(dot + bias)."""

    name = "fake"

    def __init__(self, fusion_bias: dict[str, float] | None = None):
        self.item_ids = np.array([c[0] for c in CATALOGUE], dtype=object)
        self.item_titles = np.array([c[1] for c in CATALOGUE], dtype=object)
        self.category_names = CATEGORIES
        self.item_category = pd.Index(CATEGORIES).get_indexer([c[2] for c in CATALOGUE]).astype(np.int32)
        self.event_names = np.array(["view", "purchase"], dtype=object)
        self._vecs = np.array([c[3] for c in CATALOGUE], dtype=np.float32)
        pop = {"t1": 40, "t2": 30, "t3": 5, "f1": 50, "f2": 30, "f3": 2, "k1": 20, "k2": 8, "k3": 25,
               "b1": 3, "b2": 1, "b3": 4, "n1": 0}
        self.popularity = np.array([pop[i] for i in self.item_ids], dtype=np.float32)
        t = np.zeros((4, 4), dtype=np.float32)
        cam, foot, kit, books = 1, 2, 3, 0
        t[cam, foot], t[cam, kit], t[kit, kit], t[foot, cam], t[books, kit] = 10, 3, 5, 2, 1
        self.category_transitions = t
        self.bias = np.zeros(len(self.item_ids), dtype=np.float32)
        for item, b in (fusion_bias or {}).items():
            self.bias[list(self.item_ids).index(item)] = b
        self.calls: list[tuple[int, int]] = []

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def item_index(self, ids) -> np.ndarray:
        return pd.Index(self.item_ids).get_indexer([str(i) for i in ids]).astype(np.int64)

    def event_index(self, names) -> np.ndarray:
        idx = pd.Index(self.event_names).get_indexer([str(n) for n in names]).astype(np.int64)
        return np.where(idx < 0, 0, idx)

    def item_vectors(self) -> np.ndarray:
        return self._vecs

    def user_vectors(self, seqs: Sequences, users, ends) -> np.ndarray:
        row, pos = seqs.history_positions(np.asarray(users), np.asarray(ends))
        out = np.zeros((len(users), self._vecs.shape[1]), dtype=np.float32)
        np.add.at(out, row, self._vecs[seqs.items[pos]])
        n = np.bincount(row, minlength=len(users))[:, None]
        return out / np.maximum(n, 1)

    def score_histories(self, seqs, users, ends) -> np.ndarray:
        return self.user_vectors(seqs, users, ends) @ self._vecs.T

    def fusion_proba(self, seqs, users, ends, candidates) -> np.ndarray:
        self.calls.append(candidates.shape)
        u = self.user_vectors(seqs, users, ends)
        dot = np.einsum("bd,bnd->bn", u, self._vecs[candidates]) + self.bias[candidates]
        return (1.0 / (1.0 + np.exp(-dot))).astype(np.float32)


def sig(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture
def warm() -> Recommender:
    """Every history counts as warm (cold fallback off) so the dot-product pipeline is tested exactly."""
    return Recommender(FakeModel(), cold_max_events=0)


def test_cross_category_only_exact_list(warm):
    # state = mean(t1, t2) = (1, .1, .1, 0): dots t3 .91 (Camping), f1 .6, b1 .55, n1 .55, k3 .48, f2 .4
    recs = warm.recommend(["t1", "t2"], k=4, cross_category_only=True)
    cats = {r.category for r in recs}
    assert "Camping" not in cats
    assert recs.item_ids[0] == "f1"
    assert set(recs.item_ids) == {"f1", "b1", "n1", "k3"}  # b1 and n1 tie at dot .55
    assert len(recs) == 4


def test_without_cross_filter_same_category_items_come_back(warm):
    recs = warm.recommend(["t1", "t2"], k=2)
    assert recs.item_ids == ["t3", "f1"]  # t3 (Camping, dot .91) is allowed when the filter is off


def test_seen_items_never_returned(warm):
    history = ["t1", "f1", "k1", "b3"]
    recs = warm.recommend(history, k=20)
    assert not set(recs.item_ids) & set(history)
    assert len(recs) == len(CATALOGUE) - len(history)  # every other item, no more


def test_what_if_adding_an_item_changes_the_list(warm):
    before = warm.recommend(["k1"], k=3).item_ids
    after = warm.recommend(["k1", "t1"], k=3).item_ids
    assert before == ["k2", "k3", "b2"]
    assert after != before and "t1" not in after


def test_what_if_accepts_events_and_frames_and_reports_unknown_ids(warm):
    recs = warm.recommend([("k1", "purchase"), ("zz-unknown", "view")], k=2)
    assert recs.unknown_item_ids == ("zz-unknown",)
    assert recs.history_item_ids == ("k1",)
    assert any("not in the model" in n for n in recs.notes)
    frame = warm.recommend(pd.DataFrame({"item_id": ["k1"], "event": ["view"]}), k=2)
    assert frame.item_ids == recs.item_ids


def test_threshold_removes_items_below_p(warm):
    full = warm.recommend(["t1", "t2"], k=6, cross_category_only=True)
    p = sig(0.5)  # between k3 (dot .48) and b1/n1 (.55)
    cut = warm.recommend(["t1", "t2"], k=6, cross_category_only=True, threshold=p)
    assert [r.item_id for r in full if r.probability >= p] == cut.item_ids
    assert set(cut.item_ids) == {"f1", "b1", "n1"}
    assert all(r.probability >= p for r in cut)


def test_ranking_uses_fusion_probability_not_only_retrieval():
    model = FakeModel(fusion_bias={"b3": 5.0})  # the fusion scorer loves the novel
    recs = Recommender(model, cold_max_events=0).recommend(["t1", "t2"], k=3)
    assert recs.item_ids[0] == "b3"
    probs = [r.probability for r in recs]
    assert probs == sorted(probs, reverse=True)
    assert recs.items[0].score == pytest.approx(0.0)  # retrieval score stays the dot product


def test_per_category_cap_respected(warm):
    recs = warm.recommend(["t1"], k=4, per_category_cap=1)
    counts = pd.Series([r.category for r in recs]).value_counts()
    assert counts.max() == 1 and len(recs) == 4
    capped2 = warm.recommend(["t1"], k=6, per_category_cap=2)
    assert pd.Series([r.category for r in capped2]).value_counts().max() == 2


def test_diversity_one_gives_more_distinct_categories_than_zero(warm):
    plain = warm.recommend(["t1"], k=3, diversity=0.0)
    diverse = warm.recommend(["t1"], k=3, diversity=1.0)
    assert plain.item_ids == ["t2", "t3", "f1"]
    assert len({r.category for r in diverse}) > len({r.category for r in plain})
    assert diverse.item_ids[0] == "t2"  # the first pick is still the most relevant


def test_explanation_names_the_top_contributing_history_item(warm):
    recs = warm.recommend(["b3", "t1"], k=8)
    f1 = next(r for r in recs if r.item_id == "f1")
    assert f1.explanation.because_item_ids[0] == "t1"
    # the novel is unrelated (cosine 0); Footwear is a step into a new category, and the flow says from where
    assert f1.explanation.sentence == ("Because of Trail Tent 2P (Camping); Footwear is new to this shopper, "
                                       "and shoppers often move there after Camping")
    novel_led = next(r for r in recs if r.item_id == "b1")  # Trail Guide: both history items pull it in
    assert novel_led.explanation.because_item_ids == ("b3", "t1")
    assert "<" not in f1.explanation.sentence


def test_explanation_of_an_item_in_a_category_of_the_history_names_no_category_step(warm):
    recs = warm.recommend(["t1"], k=8)
    stove = next(r for r in recs if r.item_id == "t2")
    assert stove.explanation.sentence == "Because of Trail Tent 2P (Camping)"
    idx = warm.model.item_index(["b3", "t1"]).astype(np.int32)
    seqs = one_user_sequences(idx, np.zeros(2, np.int16), None)
    table = warm.recommend_batch(seqs, np.zeros(1, np.int64), np.array([2]), k=8, explain=True)
    boots = table.loc[table["item_idx"] == int(warm.model.item_index(["f1"])[0]), "explanation"].iloc[0]
    assert boots.endswith("; Footwear is new to this shopper, and shoppers often move there after Camping")


def test_a_whatif_purchase_is_cited_first_when_it_pulls_the_item_in(warm):
    """An added product is the newest event and, as the history's strongest kind (a purchase), outweighs older
    purchases in the reasons: the what-if edit is visibly why the list changed."""
    history = pd.DataFrame({"item_id": ["t1", "b3", "k1"], "event": ["purchase", "purchase", "purchase"]})
    mug = next(r for r in warm.recommend(history, k=20) if r.item_id == "k3")
    assert mug.explanation.because_item_ids[0] == "k1"
    # the same addition as a weak "view" after purchases: an older purchase is cited first
    weak = history.assign(event=["purchase", "purchase", "view"])
    mug = next(r for r in warm.recommend(weak, k=20) if r.item_id == "k3")
    assert mug.explanation.because_item_ids[0] == "t1"


def test_explanation_recency_weight_prefers_recent_item(warm):
    # k3 (Camping Mug) is equally explained by nothing else; t1 bought long ago vs k1 just now
    history = ["t1"] + ["b3"] * 12 + ["k1"]
    recs = warm.recommend(history, k=20)
    mug = next(r for r in recs if r.item_id == "k3")
    assert mug.explanation.because_item_ids[0] == "k1"


def test_cold_user_explanation_mentions_popularity():
    rec = Recommender(FakeModel())  # 1 event <= 2: cold
    recs = rec.recommend(["t1"], k=3, cross_category_only=True)
    assert recs.cold_start
    assert all(r.explanation.cold_start for r in recs)
    assert all("Popular" in r.explanation.sentence for r in recs)
    boots = next(r for r in recs if r.category == "Footwear")
    assert "a category shoppers often move to after Camping" in boots.explanation.sentence
    empty = rec.recommend([], k=3)
    assert len(empty) == 3 and "no history" in empty.items[0].explanation.sentence


def test_cold_user_pool_follows_category_flow():
    rec = Recommender(FakeModel())
    recs = rec.recommend(["t1"], k=2, cross_category_only=True)
    # Camping -> Footwear is the strongest flow and f1 is the most popular footwear
    assert recs.items[0].category == "Footwear"


def test_cold_items_can_be_recommended(warm):
    model = warm.model
    assert model.popularity[list(model.item_ids).index("n1")] == 0
    recs = warm.recommend(["f1", "f2"], k=3)
    assert "n1" in recs.item_ids


def test_filters_widen_the_pool_so_k_items_come_back(warm):
    recs = warm.recommend(["t1", "t2"], k=5, cross_category_only=True, n_candidates=1)
    assert len(recs) == 5 and "Camping" not in {r.category for r in recs}
    capped = warm.recommend(["t1"], k=4, per_category_cap=1, n_candidates=2)
    assert len(capped) == 4


def test_include_and_exclude_categories(warm):
    only_books = warm.recommend(["t1"], k=5, include_categories=["Books"])
    assert {r.category for r in only_books} == {"Books"} and len(only_books) == 3
    no_foot = warm.recommend(["t1"], k=5, exclude_categories=["Footwear"])
    assert "Footwear" not in {r.category for r in no_foot}
    with pytest.raises(ConfigError, match="Unknown category 'Toys'"):
        warm.recommend(["t1"], k=5, exclude_categories=["Toys"])


def test_bad_options_raise_config_error():
    for kwargs in ({"k": 0}, {"threshold": 1.5}, {"diversity": -0.1}, {"per_category_cap": 0}, {"n_candidates": 0}):
        with pytest.raises(ConfigError):
            RecommendOptions(**kwargs)


def test_one_options_object_drives_single_and_batch(warm):
    """RecommendOptions is the one place the knobs live: an options object, names given beside it
    (which win), and a typo that says what the options are instead of doing nothing."""
    opts = RecommendOptions(k=3, cross_category_only=True, per_category_cap=1)
    by_object = warm.recommend(["t1", "t2"], options=opts)
    by_names = warm.recommend(["t1", "t2"], k=3, cross_category_only=True, per_category_cap=1)
    assert by_object.item_ids == by_names.item_ids and len(by_object) == 3
    assert len({r.category for r in by_object}) == 3 and "Camping" not in {r.category for r in by_object}
    wider = warm.recommend(["t1", "t2"], options=opts, k=5, per_category_cap=None)
    assert len(wider) == 5 and wider.item_ids[:1] == by_object.item_ids[:1]
    seqs = one_user_sequences(warm.model.item_index(["t1", "t2"]))
    batch = warm.recommend_batch(seqs, np.array([0]), np.array([2]), options=opts)
    assert list(warm.model.item_ids[batch["item_idx"]]) == by_object.item_ids
    with pytest.raises(ConfigError, match="Unknown recommendation option.*cross_category_olny.*the options are"):
        warm.recommend(["t1"], cross_category_olny=True)
    with pytest.raises(ConfigError, match="Unknown recommendation option"):
        warm.recommend_batch(seqs, np.array([0]), np.array([2]), treshold=0.5)


def test_known_user_from_dataset_and_unknown_user():
    inter = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["t1", "t2", "k1"], "timestamp": [1, 2, 3]})
    items = pd.DataFrame({"item_id": [c[0] for c in CATALOGUE], "category": [c[2] for c in CATALOGUE],
                          "title": [c[1] for c in CATALOGUE]})
    ds = from_frames(inter, items)
    rec = Recommender(FakeModel(), ds, cold_max_events=0)
    by_user = rec.recommend("u1", k=4, cross_category_only=True)
    by_list = rec.recommend(["t1", "t2"], k=4, cross_category_only=True)
    assert by_user.item_ids == by_list.item_ids and by_user.user_id == "u1"
    with pytest.raises(UnknownItemError, match="User 'nobody'"):
        rec.recommend("nobody")
    with pytest.raises(UnknownItemError, match="no dataset"):
        Recommender(FakeModel()).recommend("u1")


def test_to_frame_columns_and_plain_text():
    recs = Recommender(FakeModel(), cold_max_events=0).recommend(["t1"], k=3)
    frame = recs.to_frame()
    assert list(frame.columns) == ["rank", "item_id", "title", "category", "score", "probability", "explanation", "because"]
    assert frame["rank"].tolist() == [1, 2, 3]
    assert frame["title"].iloc[0] == "Camp Stove"


@pytest.mark.parametrize("cold_max_events", [0, 2])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"cross_category_only": True}, {"threshold": 0.6}, {"per_category_cap": 1}, {"diversity": 0.7}],
)
def test_batch_equals_single_user_api(kwargs, cold_max_events):
    histories = [["t1", "t2"], ["k1"], [], ["f1", "b3", "k2"], ["t1", "f1", "k1", "b1"]]
    rec = Recommender(FakeModel(), cold_max_events=cold_max_events)
    model = rec.model
    items = np.concatenate([model.item_index(h) for h in histories]).astype(np.int32)
    lengths = np.array([len(h) for h in histories])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    seqs = Sequences(offsets, items, np.arange(len(items), dtype=np.int64), np.zeros(len(items), np.int16))
    users = np.arange(len(histories))
    batch = rec.recommend_batch(seqs, users, offsets[1:], k=4, batch_size=2, **kwargs)
    assert list(batch.columns) == ["user_idx", "rank", "item_idx", "score", "probability", "category"]
    for u, h in enumerate(histories):
        single = rec.recommend(h, k=4, **kwargs)
        rows = batch[batch["user_idx"] == u].sort_values("rank")
        assert list(model.item_ids[rows["item_idx"]]) == single.item_ids
        assert rows["rank"].tolist() == list(range(1, len(single) + 1))
        np.testing.assert_allclose(rows["probability"], [r.probability for r in single], rtol=1e-6)
        assert rows["category"].tolist() == [r.category for r in single]


def test_batch_respects_end_positions_and_extra_categories():
    rec = Recommender(FakeModel(), cold_max_events=0)
    seqs = one_user_sequences(rec.model.item_index(["t1", "t2", "f1"]))
    # history cut before f1: f1 may be recommended (it is the future), t1/t2 not
    out = rec.recommend_batch(seqs, np.array([0]), np.array([2]), k=3)
    ids = list(rec.model.item_ids[out["item_idx"]])
    assert "f1" in ids and not {"t1", "t2"} & set(ids)
    foot = int(pd.Index(CATEGORIES).get_loc("Footwear"))
    out2 = rec.recommend_batch(seqs, np.array([0]), np.array([2]), k=3, cross_category_only=True,
                               extra_history_categories=(np.array([0]), np.array([foot])))
    assert not {"Camping", "Footwear"} & set(out2["category"])


def test_batch_progress_callback_and_empty():
    rec = Recommender(FakeModel(), cold_max_events=0)
    seqs = one_user_sequences(rec.model.item_index(["t1"]))
    seen = []
    rec.recommend_batch(seqs, np.array([0, 0, 0]), np.array([1, 1, 1]), k=2, batch_size=2,
                        on_batch=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 3), (3, 3)]
    empty = rec.recommend_batch(seqs, np.array([], np.int64), np.array([], np.int64), k=2)
    assert len(empty) == 0 and list(empty.columns)[0] == "user_idx"


def test_batch_explanations_match_single_user_sentences():
    histories = [[("t1", "purchase"), ("b3", "view")], [("k1", "view")]]
    rec = Recommender(FakeModel(), cold_max_events=1)  # the second history is cold
    model = rec.model
    flat = [i for h in histories for i, _ in h]
    ev = model.event_index([e for h in histories for _, e in h]).astype(np.int16)
    seqs = Sequences(np.array([0, 2, 3], np.int64), model.item_index(flat).astype(np.int32), np.arange(3, dtype=np.int64), ev)
    out = rec.recommend_batch(seqs, np.array([0, 1]), np.array([2, 3]), k=3, explain=True)
    for u, h in enumerate(histories):
        single = rec.recommend(h, k=3)
        assert out.loc[out["user_idx"] == u, "explanation"].tolist() == [r.explanation.sentence for r in single]
    assert out.loc[out["user_idx"] == 1, "explanation"].str.startswith("Popular").all()
    assert "explanation" not in rec.recommend_batch(seqs, np.array([0]), np.array([2]), k=3).columns


def test_novel_candidates_bring_popular_items_of_untouched_categories_into_the_pool():
    """With fusion_novel_candidates = m, the last m candidate slots hold the most popular unseen items of
    categories the history never touched (never a duplicate, never a seen item); 0 keeps retrieval only."""
    from types import SimpleNamespace

    model = FakeModel()
    model.config = SimpleNamespace(dim=4, train=SimpleNamespace(fusion_candidates=6, fusion_novel_candidates=2))
    rec = Recommender(model, cold_max_events=0)
    seqs = one_user_sequences(model.item_index(["t1", "t2"]))  # Camping only
    pool = rec.candidates(seqs, np.array([0]), np.array([2]))
    ids = list(model.item_ids[pool.cand[0]])
    assert len(set(ids)) == 6 and not {"t1", "t2"} & set(ids) and pool.valid[0].all()
    retrieval_only = Recommender(FakeModel(), cold_max_events=0).candidates(seqs, np.array([0]), np.array([2]), 6)
    base = list(model.item_ids[retrieval_only.cand[0]])
    assert ids[:4] == base[:4]
    # the two most popular items outside Camping that the first four do not hold
    outside = [i for i in sorted(model.item_ids, key=lambda i: -model.popularity[list(model.item_ids).index(i)])
               if model.category_names[model.item_category[list(model.item_ids).index(i)]] != "Camping" and i not in ids[:4]]
    assert ids[4:] == outside[:2]
    one = SimpleNamespace(dim=4, train=SimpleNamespace(fusion_candidates=6, fusion_novel_candidates=1))
    model.config = one  # one slot: the best such item, then the first displaced retrieval item
    ids1 = list(model.item_ids[Recommender(model, cold_max_events=0).candidates(seqs, np.array([0]), np.array([2])).cand[0]])
    best_outside = next(i for i in sorted(model.item_ids, key=lambda i: -model.popularity[list(model.item_ids).index(i)])
                        if model.category_names[model.item_category[list(model.item_ids).index(i)]] != "Camping"
                        and i not in base[:5] and i not in ("t1", "t2"))
    assert ids1 == base[:5] + [best_outside]
    # a shopper who touched every category has no such item: the slots keep their retrieval items
    every = one_user_sequences(model.item_index(["t1", "f2", "k2", "b3"]))
    assert list(rec.candidates(every, np.array([0]), np.array([4])).cand[0]) == list(
        Recommender(FakeModel(), cold_max_events=0).candidates(every, np.array([0]), np.array([4]), 6).cand[0])


def _listed(recs) -> list[tuple[str, float]]:
    return [(r.item_id, round(r.probability, 6)) for r in recs]


def test_one_history_encoded_once_and_filters_never_leak_into_the_cached_state():
    """The studio moves K / threshold / filters on one history: the user state is encoded once, and the
    cross-category and exclude filters (which write -inf into the scores) leave the cached state as it was."""
    rec = Recommender(FakeModel(), cold_max_events=0)
    encoded = []
    plain_retrieve = rec._retrieve  # encodes the history and scores the whole catalogue
    rec._retrieve = lambda *a: (encoded.append(1), plain_retrieve(*a))[1]
    history = ["t1", "t2"]
    first = _listed(rec.recommend(history, k=6))
    crossed = rec.recommend(history, k=6, cross_category_only=True, exclude_categories=("Kitchen",))
    assert "Camping" not in {r.category for r in crossed} and "Kitchen" not in {r.category for r in crossed}
    assert _listed(rec.recommend(history, k=6)) == first  # same list after the filters ran on the cache
    assert _listed(rec.recommend(history, k=3, diversity=0.5)) == _listed(Recommender(FakeModel(), cold_max_events=0).recommend(history, k=3, diversity=0.5))
    assert len(encoded) == 1  # four lists, one encoding
    rec.recommend(["t1", "t2", "k1"], k=3)  # a what-if edit is a new history: encoded again
    assert len(encoded) == 2
    cached = next(iter(rec._retrieved.values()))
    with pytest.raises(ValueError, match="read-only"):
        cached.retrieval[0, 0] = 0.0  # shared by sessions: a write must fail loudly


# -- which shoppers get the cold-start list: chosen on validation (training/tuning.py) -------------------

def _short_histories(first: list[str], nexts: list[str]) -> tuple[Sequences, np.ndarray, np.ndarray, np.ndarray]:
    """Users u with history [first[u]] and validation target nexts[u]: (seqs, users, ends, targets)."""
    model = FakeModel()
    hist = model.item_index(first)
    items = np.stack([hist, model.item_index(nexts)], axis=1).reshape(-1).astype(np.int32)
    n = len(first)
    seqs = Sequences(np.arange(0, 2 * n + 1, 2, dtype=np.int64), items, np.arange(2 * n, dtype=np.int64), np.zeros(2 * n, np.int16))
    users = np.arange(n, dtype=np.int64)
    return seqs, users, users * 2 + 1, model.item_index(nexts)


@pytest.mark.parametrize("target, chosen", [("f1", 2), ("t2", 0)])
def test_the_cold_threshold_is_the_list_that_finds_the_next_item_on_validation(target, chosen):
    from crossrec_core.training.tuning import select_cold_threshold

    # after a tent: the cold list leads with the popular Footwear step (f1), the encoders' with a stove (t2)
    model = FakeModel()
    seqs, users, ends, targets = _short_histories(["t1"] * 6, [target] * 6)
    assert Recommender(model, cold_max_events=2).retrieval_scores(seqs, users[:1], ends[:1])[0].argmax() == model.item_index(["f1"])[0]
    assert Recommender(model, cold_max_events=0).retrieval_scores(seqs, users[:1], ends[:1])[0].argmax() == model.item_index(["t2"])[0]
    t, figures = select_cold_threshold(model, seqs, users, ends, targets, novel_weight=2.0)
    assert t == chosen and figures["n"] == 6


def test_a_recommender_follows_the_models_chosen_cold_threshold_unless_told_otherwise():
    model = FakeModel()
    assert Recommender(model).cold_max_events == 2  # a model without a choice: the fixed rule
    model.cold_max_events = 0
    assert Recommender(model).cold_max_events == 0
    assert Recommender(model, cold_max_events=1).cold_max_events == 1


@pytest.mark.parametrize("seed", range(6))
def test_novel_slots_are_each_rows_first_eligible_items_in_popularity_order(seed):
    """novel_in_order against a brute-force reading of the whole order: rows that touched every category get no
    slot, rows with fewer eligible items than slots get what there is, the rest the first m in order."""
    from crossrec_core.serving.retrieval import novel_in_order

    rng = np.random.default_rng(seed)
    B, N, C, m, E = 40, 300, 5, 8, 12
    item_category = rng.integers(0, C, N)
    user_cats = rng.random((B, C)) < 0.5
    user_cats[:5] = True  # every category touched: nothing to bring
    user_cats[5:10] = True
    user_cats[5:10, 0] = False  # one untouched category, made nearly empty of eligible items below
    retrieval = rng.normal(size=(B, N)).astype(np.float32)
    retrieval[rng.random((B, N)) < 0.2] = -np.inf  # seen items
    retrieval[5:10, np.flatnonzero(item_category == 0)[3:]] = -np.inf  # at most 3 eligible items for those rows
    exclude = np.stack([rng.choice(N, E, replace=False) for _ in range(B)])
    pop_order = rng.permutation(N)
    items, ok = novel_in_order(pop_order, item_category, user_cats, retrieval, exclude, m)
    for b in range(B):
        want = [i for i in pop_order if np.isfinite(retrieval[b, i]) and not user_cats[b, item_category[i]] and i not in exclude[b]][:m]
        assert items[b][ok[b]].tolist() == want and ok[b].tolist() == [True] * len(want) + [False] * (m - len(want))
    assert not ok[:5].any() and (ok[5:10].sum(axis=1) < m).all() and ok[10:].any()
