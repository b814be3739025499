"""`crossrec recommend`: the CSV contract, on a test double and (when the model modules exist) a real tiny model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossrec_core.cli import main
from crossrec_core.cli.recommend import read_user_list, write_csv_atomic
from crossrec_core.data.dataset import Sequences, from_frames
from crossrec_core.errors import DataError, ModelError
from crossrec_core.serving.export import OUTPUT_COLUMNS, recommend_for_log
from test_recommend import CATALOGUE, FakeModel

HAVE_REAL_MODEL = all(
    importlib.util.find_spec(m) is not None
    for m in ("crossrec_core.training.loop", "crossrec_core.storage.registry", "crossrec_core.models.trained")
)


class AlignedFake(FakeModel):
    """FakeModel plus the TrainedModel data helpers the CLI uses."""

    def align(self, ds) -> Sequences:
        idx = self.item_index(ds.item_ids)[ds.seqs.items]
        keep = idx >= 0
        users = ds.seqs.user_of_event()[keep]
        offsets = np.zeros(ds.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=ds.n_users), out=offsets[1:])
        return Sequences(offsets, idx[keep].astype(np.int32), ds.seqs.times[keep], ds.seqs.events[keep])

    def check_compatible(self, ds) -> None:
        if (self.item_index(ds.item_ids) >= 0).mean() < 0.1:
            raise ModelError("too few items known")


ITEMS = pd.DataFrame(
    {"item_id": [c[0] for c in CATALOGUE], "category": [c[2] for c in CATALOGUE], "title": [c[1] for c in CATALOGUE]}
)
LOG = pd.DataFrame(
    {
        "user_id": ["u1", "u1", "u1", "u2", "u2", "u2", "u3", "u4", "u4", "u4", "u4"],
        "item_id": ["t1", "t2", "k1", "f1", "f2", "b3", "k1", "b1", "zz", "t3", "f3"],
        "timestamp": [1, 2, 3, 1, 2, 3, 1, 1, 2, 3, 4],
    }
)


def _ds():
    items = pd.concat([ITEMS, pd.DataFrame({"item_id": ["zz"], "category": ["Garden"], "title": ["Hose"]})])
    return from_frames(LOG, items)


def test_recommend_for_log_k_rows_per_user_no_seen_items():
    ds = _ds()
    out = recommend_for_log(AlignedFake(), ds, k=4)
    assert list(out.columns) == OUTPUT_COLUMNS
    assert out.groupby("user_id").size().to_dict() == {"u1": 4, "u2": 4, "u3": 4, "u4": 4}
    assert all(out.groupby("user_id")["rank"].apply(list).apply(lambda r: r == [1, 2, 3, 4]))
    seen = set(zip(LOG["user_id"], LOG["item_id"]))
    assert not any((u, i) in seen for u, i in zip(out["user_id"], out["item_id"]))
    # scores are the ranking key: non-increasing within a user
    assert all(out.groupby("user_id")["score"].apply(lambda s: bool((np.diff(s.to_numpy()) <= 1e-7).all())))


def test_recommend_for_log_cross_category_only_holds():
    ds = _ds()
    out = recommend_for_log(AlignedFake(), ds, k=3, cross_category_only=True)
    cat_of = dict(zip(ITEMS["item_id"], ITEMS["category"])) | {"zz": "Garden"}
    for user, rows in out.groupby("user_id"):
        hist_cats = {cat_of[i] for i in LOG.loc[LOG["user_id"] == user, "item_id"]}
        assert not set(rows["category"]) & hist_cats, user
        assert len(rows) == 3
        assert rows["category"].tolist() == [cat_of[i] for i in rows["item_id"]]


def test_recommend_for_log_unknown_users_get_cold_start_and_threshold_shortens():
    ds = _ds()
    out = recommend_for_log(AlignedFake(), ds, k=3, users=np.array(["u2", "new-user"], dtype=object))
    assert out["user_id"].tolist() == ["u2"] * 3 + ["new-user"] * 3
    cut = recommend_for_log(AlignedFake(), ds, k=5, threshold=0.62)
    assert (cut["score"] >= 0.62).all() and len(cut) < 5 * ds.n_users


def test_recommend_for_log_refuses_a_log_without_shared_items():
    other = from_frames(pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "timestamp": [1]}))
    with pytest.raises(ModelError, match="shares no items"):
        recommend_for_log(AlignedFake(), other, k=3)


def test_read_user_list_with_and_without_header(tmp_path):
    known = np.array(["u1", "u2"], dtype=object)
    (tmp_path / "h.csv").write_text("user_id\nu2\nu1\nu2\n")
    (tmp_path / "n.csv").write_text("u2\nghost\n")
    assert read_user_list(tmp_path / "h.csv", known).tolist() == ["u2", "u1"]
    assert read_user_list(tmp_path / "n.csv", known).tolist() == ["u2", "ghost"]
    (tmp_path / "two.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="exactly one"):
        read_user_list(tmp_path / "two.csv", known)


def test_write_csv_atomic_leaves_no_temp_files(tmp_path):
    out = tmp_path / "sub" / "recs.csv"
    write_csv_atomic(pd.DataFrame({"user_id": ["a"], "rank": [1], "item_id": ["x"], "score": [0.5], "category": ["C"]}), out)
    assert out.read_text().splitlines() == ["user_id,rank,item_id,score,category", "a,1,x,0.5,C"]
    assert [p.name for p in out.parent.iterdir()] == ["recs.csv"]


def test_cli_missing_model_folder_exits_2_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    log = tmp_path / "log.csv"
    LOG.to_csv(log, index=False)
    rc = main(["recommend", "--model", str(tmp_path / "nope"), "--interactions", str(log), "--k", "3",
               "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("crossrec: error: Model folder") and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


def test_cli_subprocess_missing_model_exit_status(tmp_path):
    env_log = tmp_path / "log.csv"
    LOG.to_csv(env_log, index=False)
    proc = subprocess.run(
        [sys.executable, "-m", "crossrec_core", "recommend", "--model", str(tmp_path / "missing"),
         "--interactions", str(env_log), "--k", "2", "--out", str(tmp_path / "o.csv")],
        capture_output=True, text=True, timeout=120, env={"CROSSREC_HOME": str(tmp_path / "ws"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "does not exist" in proc.stderr


def test_cli_help_documents_score(capsys):
    with pytest.raises(SystemExit):
        main(["recommend", "--help"])
    text = capsys.readouterr().out
    assert "user_id,rank,item_id,score,category" in text and "calibrated probability" in text
    for flag in ("--cross-category-only", "--threshold", "--users", "--items", "--user-col", "--title-col"):
        assert flag in text


# -- with a real tiny trained model -------------------------------------------------------------------
def _pattern_files(folder: Path) -> tuple[Path, Path, pd.DataFrame, pd.DataFrame]:
    """Users buy in Camping then Footwear (a_i -> b_i), some also in Kitchen; 30 users, 3 categories."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(30):
        pairs = rng.choice(8, 3, replace=False)
        seq = [x for p in pairs for x in (f"a{p}", f"b{p}")]
        if u % 3 == 0:
            seq.append(f"c{u % 8}")
        # uneven gaps (minutes to days) so the time-gap features matter for batch == single checks
        rows += [(f"u{u}", item, 1_700_000_000 + t * 60 * (1 + 97 * (u % 5)) ** 2, "purchase" if item[0] == "b" else "view")
                 for t, item in enumerate(seq)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    items = pd.DataFrame(
        {
            "item_id": [f"{p}{i}" for p in "abc" for i in range(8)] + ["cold1"],
            "category": ["Camping"] * 8 + ["Footwear"] * 8 + ["Kitchen"] * 8 + ["Kitchen"],
            "title": [f"tent {i}" for i in range(8)] + [f"boots {i}" for i in range(8)] + [f"mug {i}" for i in range(8)]
            + ["new mug"],
        }
    )
    inter_path, items_path = folder / "log.csv", folder / "items.csv"
    inter.to_csv(inter_path, index=False)
    items.to_csv(items_path, index=False)
    return inter_path, items_path, inter, items


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    if not HAVE_REAL_MODEL:
        pytest.skip("the model modules (train, registry, models.trained) are not in this tree")
    from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
    from crossrec_core.data.load import load_log
    from crossrec_core.storage.registry import save_model
    from crossrec_core.training.loop import train_model

    folder = tmp_path_factory.mktemp("real")
    inter_path, items_path, inter, items = _pattern_files(folder)
    ds = load_log(str(inter_path), str(items_path))
    cfg = ModelConfig(
        item=ItemEncoderConfig(dim=16, use_text=False, id_dropout=0.0),
        user=UserEncoderConfig(dim=16, max_len=8, dropout=0.0),
        train=TrainConfig(epochs=3, patience=3, batch_size=32, lr=5e-3, seed=1, device="cpu", fusion_epochs=1),
    )
    model = train_model(ds, cfg)
    model_dir = save_model(model, folder / "model")
    return {"dir": model_dir, "inter": inter_path, "items": items_path, "log": inter, "items_df": items,
            "model": model, "ds": ds, "folder": folder}


def _run(real, tmp_path, *extra: str, monkeypatch=None) -> tuple[int, pd.DataFrame | None]:
    out = tmp_path / "recs.csv"
    rc = main(["recommend", "--model", str(real["dir"]), "--interactions", str(real["inter"]), "--items",
               str(real["items"]), "--out", str(out), *extra])
    return rc, (pd.read_csv(out, dtype={"user_id": str, "item_id": str}) if out.exists() else None)


def test_cli_real_model_exact_header_k_rows_no_seen(real_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    rc, out = _run(real_model, tmp_path, "--k", "5")
    assert rc == 0
    assert (tmp_path / "recs.csv").read_text().splitlines()[0] == "user_id,rank,item_id,score,category"
    log = real_model["log"]
    assert out.groupby("user_id").size().to_dict() == {u: 5 for u in log["user_id"].unique()}
    assert all(r == [1, 2, 3, 4, 5] for r in out.groupby("user_id")["rank"].apply(list))
    seen = set(zip(log["user_id"], log["item_id"]))
    assert not any((u, i) in seen for u, i in zip(out["user_id"], out["item_id"]))
    assert out["score"].between(0, 1).all()
    by_user = out.groupby("user_id")["score"].apply(lambda s: bool((np.diff(s.to_numpy()) <= 1e-6).all()))
    assert by_user.all()  # score is the ranking key
    cat_of = dict(zip(real_model["items_df"]["item_id"], real_model["items_df"]["category"]))
    assert out["category"].tolist() == [cat_of[i] for i in out["item_id"]]


def test_cli_real_model_cross_category_only_holds(real_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    rc, out = _run(real_model, tmp_path, "--k", "3", "--cross-category-only")
    assert rc == 0
    log = real_model["log"]
    cat_of = dict(zip(real_model["items_df"]["item_id"], real_model["items_df"]["category"]))
    hist = log.assign(category=log["item_id"].map(cat_of)).groupby("user_id")["category"].apply(set)
    for user, rows in out.groupby("user_id"):
        assert not set(rows["category"]) & hist[user]
    # users with Camping+Footwear get exactly 3 Kitchen items; users with all 3 categories get nothing
    full = {u for u, cats in hist.items() if len(cats) == 3}
    assert not set(out["user_id"]) & full
    assert set(out["user_id"]) == set(hist.index) - full
    assert (out.groupby("user_id").size() == 3).all() and set(out["category"]) == {"Kitchen"}


def test_cli_real_model_users_file_threshold_and_cold_users(real_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    users = tmp_path / "users.csv"
    users.write_text("user_id\nu3\nstranger\n")
    rc, out = _run(real_model, tmp_path, "--k", "4", "--users", str(users))
    assert rc == 0
    assert out["user_id"].tolist() == ["u3"] * 4 + ["stranger"] * 4
    assert "not in the log" in capsys.readouterr().err
    p = float(out["score"].median())
    rc, cut = _run(real_model, tmp_path, "--k", "4", "--users", str(users), "--threshold", str(p))
    assert rc == 0 and (cut["score"] >= p - 1e-6).all() and len(cut) < len(out)


def test_cli_real_model_log_sharing_no_items_exits_2(real_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    other = tmp_path / "other.csv"
    pd.DataFrame({"user_id": ["x", "y"], "item_id": ["zz1", "zz2"], "timestamp": [1, 2]}).to_csv(other, index=False)
    rc = main(["recommend", "--model", str(real_model["dir"]), "--interactions", str(other), "--k", "3",
               "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "shares no items" in err and "Traceback" not in err
    assert not (tmp_path / "o.csv").exists()


def test_real_model_batch_equals_single_exactly(real_model):
    """Issue 14: single, batch and CLI lists agree item for item, ties included (untrained Kitchen
    items share one vector: exact ties, cut by the smaller item index everywhere)."""
    from crossrec_core.serving.recommender import Recommender

    model, ds = real_model["model"], real_model["ds"]
    rec = Recommender(model, ds)
    seqs = model.align(ds)
    users = np.arange(ds.n_users)
    for opts in ({"cross_category_only": True}, {}):
        batch = rec.recommend_batch(seqs, users, seqs.offsets[users + 1], 4, **opts)
        for u in users:
            single = rec.recommend(str(ds.user_ids[u]), k=4, **opts)
            rows = batch[batch["user_idx"] == u]
            assert list(model.item_ids[rows["item_idx"]]) == single.item_ids
            np.testing.assert_allclose(rows["probability"], [r.probability for r in single], rtol=1e-4, atol=1e-6)
            assert all(r.explanation.sentence for r in single)
    # every chunk size gives the same lists (float noise of different matrix shapes never reorders a tie)
    whole = rec.recommend_batch(seqs, users, seqs.offsets[users + 1], 4)
    chunked = rec.recommend_batch(seqs, users, seqs.offsets[users + 1], 4, batch_size=7)
    assert whole["item_idx"].tolist() == chunked["item_idx"].tolist()


def test_cli_real_model_on_a_slice_of_hm_fashion(tmp_path, monkeypatch):
    """A slice of the real H&M log (5 categories, all events at one timestamp): the contract holds."""
    if not HAVE_REAL_MODEL:
        pytest.skip("the model modules are not in this tree")
    from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
    from crossrec_core.data.load import load_log
    from crossrec_core.storage.registry import save_model
    from crossrec_core.training.loop import train_model

    src = Path("/work/shared/data/hm-fashion-oneday")
    if not (src / "interactions.csv").is_file():
        pytest.skip("real data not present")
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    log = pd.read_csv(src / "interactions.csv", dtype=str, nrows=1500)
    inter_path = tmp_path / "hm.csv"
    log.to_csv(inter_path, index=False)
    ds = load_log(str(inter_path), str(src / "items.csv"))
    cfg = ModelConfig(
        item=ItemEncoderConfig(dim=16, use_text=False),
        user=UserEncoderConfig(dim=16, max_len=8),
        train=TrainConfig(epochs=1, patience=1, seed=1, device="cpu", fusion_epochs=1),
    )
    model_dir = save_model(train_model(ds, cfg), tmp_path / "m")
    out_path = tmp_path / "recs.csv"
    rc = main(["recommend", "--model", str(model_dir), "--interactions", str(inter_path), "--items",
               str(src / "items.csv"), "--k", "10", "--out", str(out_path), "--cross-category-only"])
    assert rc == 0
    out = pd.read_csv(out_path, dtype={"user_id": str, "item_id": str})
    assert list(out.columns) == ["user_id", "rank", "item_id", "score", "category"]
    items = pd.read_csv(src / "items.csv", dtype=str)
    cat_of = dict(zip(items["item_id"], items["category"]))
    hist = log.assign(category=log["item_id"].map(cat_of)).groupby("user_id")["category"].apply(set)
    seen = set(zip(log["user_id"], log["item_id"]))
    assert not any((u, i) in seen for u, i in zip(out["user_id"], out["item_id"]))
    assert all(not set(rows["category"]) & hist[u] for u, rows in out.groupby("user_id"))
    # every user whose history leaves a category free gets exactly 10 items
    n_cats = items["category"].nunique()
    open_users = {u for u, c in hist.items() if len(c) < n_cats}
    assert out.groupby("user_id").size().to_dict() == {u: 10 for u in open_users}


def test_tiny_probabilities_keep_their_order_in_the_csv(tmp_path):
    """Scores are written with significant digits, so 3e-9 and 1e-9 stay distinct (not both 0.000000)."""
    from crossrec_core.cli.recommend import write_csv_atomic

    frame = pd.DataFrame({"user_id": ["u", "u"], "rank": [1, 2], "item_id": ["a", "b"], "score": [3e-9, 1e-9], "category": ["x", "y"]})
    out = tmp_path / "r.csv"
    write_csv_atomic(frame, out)
    back = pd.read_csv(out)
    assert back["score"].tolist() == [3e-9, 1e-9]
