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
