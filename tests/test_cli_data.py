"""`crossrec ingest`, `crossrec demo`, `crossrec datasets`."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from crossrec_core.cli import main
from crossrec_core.storage.datasets import list_datasets, load_dataset, load_extra


@pytest.fixture
def shop_csv(tmp_path):
    p = tmp_path / "export.csv"
    p.write_bytes(
        "\ufeffCustomer No;SKU;Date;Action\r\n"
        "7;A1;2024-03-07 14:02;pv\r\n7;A2;2024-03-07 14:05;buy\r\n8;A1;2024-03-08 09:00;pv\r\n"
        "8;A1;2024-03-08 09:00;pv\r\n".encode("utf-8")
    )
    items = tmp_path / "items.csv"
    items.write_text("sku,department,name\nA1,Camping,Dome Tent\nA2,Footwear,Hiking Boots\n")
    return p, items


def test_ingest_prints_profile_and_stores(workspace, shop_csv, capsys):
    log, items = shop_csv
    rc = main(["ingest", "--interactions", str(log), "--items", str(items), "--name", "shop"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "users                   2" in out and "Dropped 1 exact duplicate" in out
    assert "Saved dataset 'shop'" in out
    ds = load_dataset("shop")
    assert ds.n_events == 3 and sorted(ds.category_names) == ["Camping", "Footwear"]
    assert ds.event_names.tolist() == ["view", "purchase"]


def test_ingest_explicit_map_and_pseudonymize(workspace, tmp_path, capsys):
    p = tmp_path / "log.csv"
    p.write_text("a,b,c\nu1,i1,1700000000\nu1,i2,1700000060\n")
    rc = main(["ingest", "--interactions", str(p), "--map", "user_id=a", "--map", "item_id=b",
               "--map", "timestamp=c", "--pseudonymize"])
    assert rc == 0
    ds = load_dataset("log")
    assert ds.n_events == 2 and ds.user_ids[0] != "u1" and len(ds.user_ids[0]) == 16
    assert (workspace / "salt").exists()


def test_ingest_errors_exit_2_without_traceback(workspace, tmp_path, capsys):
    p = tmp_path / "log.csv"
    p.write_text("a,b\n1,2\n")
    assert main(["ingest", "--interactions", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossrec: error: log.csv has no 'user_id' column") and "Traceback" not in err
    assert main(["ingest", "--interactions", str(p), "--map", "user_id"]) == 2
    assert "CANONICAL=SOURCE" in capsys.readouterr().err
    assert list_datasets() == []


def test_demo_and_datasets_listing(workspace, capsys):
    assert main(["demo", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "tent -> hiking boots -> camp stove" in out and "Saved dataset 'demo-store'" in out
    assert load_extra("demo-store", "journeys")["journey_id"].nunique() == 8
    assert main(["datasets"]) == 0
    assert "demo-store" in capsys.readouterr().out
    assert main(["datasets", "--delete", "demo-store"]) == 0
    assert list_datasets() == []
    assert main(["datasets", "--delete", "demo-store"]) == 2


@pytest.mark.slow
def test_console_script_bad_file(workspace, tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(b"\x00\x01garbage\x00")
    exe = os.path.join(os.path.dirname(sys.executable), "crossrec")
    r = subprocess.run([exe, "ingest", "--interactions", str(p)], capture_output=True, text=True,
                       env={**os.environ, "CROSSREC_HOME": str(workspace)}, timeout=120)
    assert r.returncode == 2 and "binary" in r.stderr and "Traceback" not in r.stderr


def test_demo_export_writes_canonical_files_that_load_back(workspace, tmp_path):
    from crossrec_core.cli import main
    from crossrec_core.data.load import load_log

    out = tmp_path / "demo-files"
    assert main(["demo", "--export", str(out)]) == 0
    ds = load_log(out / "interactions.csv", out / "items.csv")
    assert (ds.n_users, ds.n_items, ds.n_categories) == (5000, 2000, 12)
    assert list(pd.read_csv(out / "interactions.csv", nrows=1).columns) == ["user_id", "item_id", "timestamp", "event"]
