"""The RecBole converter (bench/peers/recbole_convert.py): a leave-last-out split -> sequential atomic files."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from crossrec_core.data.dataset import from_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "peers"))
from recbole_convert import HEADER, write_atomic_split  # noqa: E402


@pytest.fixture()
def tiny_ds():
    # u1: a b c d e (5 events), u2: b a (2 events: train 1, test 1), u3: c (1 event, cold: no rows),
    # u4: a a b (3 events, a repeat, all ties at one timestamp: row order decides)
    rows = [
        ("u1", "a", 10), ("u1", "b", 20), ("u1", "c", 30), ("u1", "d", 40), ("u1", "e", 50),
        ("u2", "b", 5), ("u2", "a", 6),
        ("u3", "c", 7),
        ("u4", "a", 1), ("u4", "a", 1), ("u4", "b", 1),
    ]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": list("abcde"), "category": list("xxyyz"), "title": list("ABCDE")})
    return from_frames(inter, items, name="tiny")


def _read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_atomic_files_hold_one_row_per_sample_with_exact_histories(tiny_ds, tmp_path):
    ds = tiny_ds
    u = {uid: str(i) for i, uid in enumerate(ds.user_ids)}
    it = {iid: str(i) for i, iid in enumerate(ds.item_ids)}
    s = write_atomic_split(ds, tmp_path, "tiny")
    folder = tmp_path / "tiny"
    assert s.folder == folder
    assert s.n_rows == {"train": 2 + 0 + 0, "valid": 2, "test": 3}
    a, b, c, d, e = (it[x] for x in "abcde")
    off = {uid: int(ds.seqs.offsets[int(u[uid])]) for uid in u}
    train = _read(folder / "tiny.train.inter")
    assert train[0] + "\n" == HEADER
    # u1 trains on a b c: samples <a>|b and <a b>|c ; u4 trains on a only -> no sample
    assert train[1:] == [
        f"{u['u1']}\t{a}\t{b}\t{off['u1'] + 1}",
        f"{u['u1']}\t{a} {b}\t{c}\t{off['u1'] + 2}",
    ]
    valid = _read(folder / "tiny.valid.inter")[1:]
    assert valid == [
        f"{u['u1']}\t{a} {b} {c}\t{d}\t{off['u1'] + 3}",
        f"{u['u4']}\t{a}\t{a}\t{off['u4'] + 1}",
    ]
    test = _read(folder / "tiny.test.inter")[1:]
    assert test == [
        f"{u['u1']}\t{a} {b} {c} {d}\t{e}\t{off['u1'] + 4}",
        f"{u['u2']}\t{b}\t{a}\t{off['u2'] + 1}",
        f"{u['u4']}\t{a} {a}\t{b}\t{off['u4'] + 2}",
    ]
    # the cold user (one event) appears in no file
    assert not any(line.split("\t")[0] == u["u3"] for line in train[1:] + valid + test)


def test_histories_are_cut_to_max_len_keeping_the_latest_events(tiny_ds, tmp_path):
    ds = tiny_ds
    it = {iid: str(i) for i, iid in enumerate(ds.item_ids)}
    write_atomic_split(ds, tmp_path, "tiny", max_len=2)
    test = _read(tmp_path / "tiny" / "tiny.test.inter")[1:]
    u1 = str(list(ds.user_ids).index("u1"))
    row = next(line for line in test if line.startswith(u1 + "\t"))
    assert row.split("\t")[1] == f"{it['c']} {it['d']}"


def test_train_rows_match_recbole_own_augmentation_count_on_a_real_slice(tmp_path):
    log = Path("/work/shared/data/hm-fashion-oneday/interactions.csv")
    if not log.is_file():
        pytest.skip("shared hm log not present")
    inter = pd.read_csv(log, dtype=str, nrows=3000)
    inter["timestamp"] = inter["timestamp"].astype("int64")
    ds = from_frames(inter[["user_id", "item_id", "timestamp"]], name="hm-slice")
    llo = ds.leave_last_out()
    s = write_atomic_split(ds, tmp_path, "hm")
    n_train = llo.train_end - ds.seqs.offsets[:-1]
    # RecBole's augmentation makes one sample per train event after a user's first one
    assert s.n_rows["train"] == int((n_train - 1).clip(min=0).sum())
    assert s.n_rows["valid"] == len(llo.valid_users)
    assert s.n_rows["test"] == len(llo.test_users)
    lines = _read(tmp_path / "hm" / "hm.test.inter")[1:]
    targets = [int(line.split("\t")[2]) for line in lines]
    assert targets == ds.seqs.items[llo.test_pos].tolist()


# -- compare.py / report.py / allpos.py (app venv only: RecBole is not imported) ---------------------
import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import allpos  # noqa: E402
import compare  # noqa: E402
import report  # noqa: E402


def test_a_folder_path_is_a_log_and_its_label_is_the_folder_name(tmp_path):
    folder = tmp_path / "dense-x"
    folder.mkdir()
    (folder / "interactions.csv").write_text("user_id,item_id,timestamp\n", encoding="utf-8")
    assert compare.log_folder(str(folder)) == folder.resolve()
    assert compare.log_label(str(folder)) == "dense-x"
    assert compare.log_folder(compare.DEMO) is None and compare.log_label(compare.DEMO) == compare.DEMO
    with pytest.raises(SystemExit):
        compare.log_folder(str(tmp_path / "missing"))


def test_cache_returns_a_run_only_for_the_identical_key(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "CACHE", tmp_path)
    key = {"log": "x", "method": "SASRec", "form": "allpos", "seed": 42, "split_sha256": "abc", "epochs": 300, "code": "c1"}
    folder = compare.cache_dir("x", "SASRec", "allpos", 42, key)
    assert compare.cached(folder, key) is None
    topk = pd.DataFrame({"user_idx": [0, 0], "rank": [1, 2], "item_idx": [5, 7]})
    compare.store(folder, key, {"train_seconds": 1.5}, topk)
    got = compare.cached(folder, key)
    assert got["reused"] and got["train_seconds"] == 1.5 and got["topk"].equals(topk)
    for change in ({"seed": 43}, {"code": "c2"}, {"split_sha256": "abd"}, {"form": "stock"}):
        other = {**key, **change}
        assert compare.cache_dir("x", "SASRec", other["form"], other["seed"], other) != folder
        assert compare.cached(folder, other) is None
    json.loads((folder / "key.json").read_text(encoding="utf-8"))


def _run(method, seed, ndcg, form="allpos"):
    masks = {f"mask_{s}": np.array([True, True, True, True]) if s == "all" else np.array([True, False, True, False]) for s in report.SUBSETS}
    row = {"method": method, "form": form, "seed": seed, "_per_user": {"NDCG": np.asarray(ndcg, dtype=float), **masks},
           "time_to_best_seconds": 10.0, "cpu_to_best_seconds": 20.0, "epochs_run": 5, "best_epoch": 2}
    for s in report.SUBSETS:
        m = masks[f"mask_{s}"]
        row[f"{s}_NDCG@10"] = float(np.mean(np.asarray(ndcg)[m]))
        row[f"{s}_HR@10"] = float(np.mean(np.asarray(ndcg)[m] > 0))
    return row


def test_summary_averages_seeds_picks_the_best_peer_and_bootstraps_against_it():
    runs = [
        _run("crossrec", 42, [1, 0, 1, 0], "-"), _run("crossrec", 43, [1, 1, 1, 0], "-"),
        _run("RecBole-SASRec", 42, [0, 0, 1, 0]), _run("RecBole-SASRec", 43, [0, 0, 1, 0]),
        _run("RecBole-GRU4Rec", 42, [0, 0, 0, 0]), {"method": "RecBole-GRU4Rec", "form": "allpos", "seed": 43, "error": "boom"},
    ]
    s = report.summarise(runs)
    c = s["methods"]["crossrec"]["all_NDCG@10"]
    assert c["mean"] == pytest.approx(0.625) and c["n"] == 2 and c["std"] == pytest.approx(np.std([0.5, 0.75], ddof=1))
    assert s["best_peer"] == "RecBole-SASRec"
    assert s["methods"]["RecBole-GRU4Rec"]["errors"] == ["seed 43: boom"]
    assert s["paired"]["RecBole-SASRec"]["all"]["diff"] == pytest.approx(0.625 - 0.25)
    assert s["ratios"]["ndcg_vs_best_peer"]["all"] == pytest.approx(2.5)
    assert s["ratios"]["time_to_best_vs_sasrec"] == {"wall": 1.0, "cpu": 1.0}
    md = report.markdown_section("x", {"n_users": 4, "n_items": 3, "n_events": 9, "epochs": 3}, s)
    assert "Best peer: **RecBole-SASRec**" in md and "0.6250 ± 0.1768" in md


def test_user_windows_are_the_latest_train_events_left_aligned():
    # user 1 has prefix rows with targets at positions 3, 4, 5 (histories of max_len 2); user 2 one row
    uid = np.array([1, 1, 1, 2])
    hist = np.array([[7, 8], [8, 9], [9, 10], [4, 0]])
    target = np.array([9, 10, 11, 5])
    pos = np.array([3.0, 4.0, 5.0, 9.0])
    seqs = allpos.user_train_sequences(uid, hist, target, pos, max_len=2)
    assert seqs.tolist() == [[9, 10, 11], [4, 5, 0]]
    # user 1's whole train sequence is 7 8 9 10 11: cut from the end into 3-event windows overlapping by one
    every = allpos.user_train_sequences(uid[::-1].copy(), hist[::-1].copy(), target[::-1].copy(), pos[::-1].copy(), max_len=2, windows="all")
    assert every.tolist() == [[9, 10, 11], [7, 8, 9], [4, 5, 0]]


class GRU4Rec(torch.nn.Module):
    """A tiny stand-in with RecBole GRU4Rec's attribute names (allpos dispatches on the class name)."""

    def __init__(self, n_items: int, d: int = 16):
        super().__init__()
        self.item_embedding = torch.nn.Embedding(n_items, d, padding_idx=0)
        self.emb_dropout = torch.nn.Dropout(0.0)
        self.gru_layers = torch.nn.GRU(d, d, batch_first=True)
        self.dense = torch.nn.Linear(d, d)

    def forward(self, item_seq, item_seq_len):
        out, _ = self.gru_layers(self.emb_dropout(self.item_embedding(item_seq)))
        return self.dense(out)[torch.arange(len(item_seq)), item_seq_len - 1]


def test_all_positions_training_learns_a_deterministic_chain():
    # item i is always followed by i + 1 (1..n-1, cycling): every position teaches the chain
    torch.manual_seed(0)
    n_items, n_users = 12, 40
    rng = np.random.default_rng(0)
    rows, valid_hist, valid_target = [], [], []
    for _ in range(n_users):
        start = int(rng.integers(1, n_items))
        chain = [(start - 1 + j) % (n_items - 1) + 1 for j in range(8)]
        rows.append(np.array(chain[:6]))
        valid_hist.append(np.array(chain[:6]))
        valid_target.append(chain[6])
    seqs = allpos.left_aligned(rows, 6)
    valid = (np.arange(n_users, dtype=np.int64), allpos.left_aligned(valid_hist, 5), np.array(valid_target))
    model = GRU4Rec(n_items)
    res = allpos.fit(model, seqs, valid, np.zeros(0, dtype=np.int64), n_items, lr=0.05, weight_decay=0.0, batch_size=8,
                     epochs=30, stopping_step=5, seed=0, log=lambda *_: None)
    assert res.forward_check < 1e-5
    assert res.best_valid > 0.9
    assert allpos.ndcg_at_k(model, *valid, np.zeros(0, dtype=np.int64), n_items) == pytest.approx(res.best_valid)
