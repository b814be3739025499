"""`crossrec train` / `crossrec models`: canonical CSV trains and saves a loadable model; bad input exits 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from crossrec_core.storage import registry
from crossrec_core.cli import build_parser, main


def _write_log(folder, user_col="user_id"):
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{int(x)}", t, "view") for u in range(30) for t, x in enumerate(rng.choice(10, 4, replace=False))]
    inter = pd.DataFrame(rows, columns=[user_col, "item_id", "timestamp", "event"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(10)], "category": ["A", "B"] * 5, "title": [f"thing {i}" for i in range(10)]})
    inter.to_csv(folder / "log.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)


def test_train_canonical_csv_writes_loadable_model(tmp_path, workspace, capsys):
    _write_log(tmp_path)
    out = tmp_path / "models" / "shop"
    rc = main(["train", "--interactions", str(tmp_path / "log.csv"), "--items", str(tmp_path / "items.csv"), "--out", str(out), "--epochs", "2", "--seed", "1", "--device", "cpu", "--encoder", "gru"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "best epoch" in captured.out and str(out) in captured.out
    model = registry.load_model(out)
    assert model.n_items == 10 and model.config.user.kind == "gru" and model.config.train.epochs == 2
    kept = "random" if model.metrics["valid"]["random_batches"] else "length buckets"
    assert f"batches kept: {kept} (valid NDCG@10 length buckets " in captured.out  # both runs' figures, which one ships
    assert len(model.metrics["history"]) <= 2


def test_train_accepts_every_encoder_kind_and_refuses_others():
    base = ["train", "--interactions", "log.csv", "--out", "m"]
    for kind in ("transformer", "gru", "lstm"):
        assert build_parser().parse_args(base + ["--encoder", kind]).encoder == kind
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(base + ["--encoder", "rnn"])
    assert exc.value.code == 2


def test_column_mapping_flags_work_the_same_in_train_recommend_and_evaluate(tmp_path, workspace):
    _write_log(tmp_path, user_col="shopper_code")
    log, items, out = str(tmp_path / "log.csv"), str(tmp_path / "items.csv"), tmp_path / "m2"
    rc = main(["train", "--interactions", log, "--items", items, "--out", str(out), "--epochs", "1", "--user-col", "shopper_code", "--device", "cpu"])
    assert rc == 0 and (out / "model.safetensors").is_file()
    recs = tmp_path / "recs.csv"
    assert main(["recommend", "--model", str(out), "--interactions", log, "--k", "3", "--out", str(recs), "--user-col", "shopper_code"]) == 0
    frame = pd.read_csv(recs)
    assert set(frame["user_id"]) == {f"u{u}" for u in range(30)}  # the shopper_code column was read as users
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(out), "--interactions", log, "--items", items, "--k", "3", "--json", str(report),
                 "--user-col", "shopper_code", "--no-baselines"]) == 0
    assert report.is_file()


def test_bad_input_exits_2_without_traceback(tmp_path, workspace):
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "crossrec_core", "train", "--interactions", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "crossrec: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()
    rc = main(["train", "--interactions", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m")])
    assert rc == 2


def test_models_list_and_delete(tmp_path, workspace, capsys):
    assert main(["models"]) == 0
    assert "no saved models" in capsys.readouterr().out
    _write_log(tmp_path)
    out = workspace / "models" / "shop"
    assert main(["train", "--interactions", str(tmp_path / "log.csv"), "--out", str(out), "--epochs", "1", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "shop" in capsys.readouterr().out
    assert main(["models", "--delete", "shop"]) == 0
    assert not out.exists()
    assert main(["models", "--delete", "shop"]) == 2
