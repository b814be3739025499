"""Workspace persistence: round trip, listing, deletion, damage, extras and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from crossrec_core.data.load import load_log
from crossrec_core.storage.datasets import delete_dataset, list_datasets, load_dataset, load_extra, save_dataset
from crossrec_core.errors import ConfigError, DataError


def _same(a, b):
    assert a.name == b.name
    for attr in ("user_ids", "item_ids", "category_names", "event_names", "item_category"):
        assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr
    for attr in ("offsets", "items", "times", "events"):
        assert np.array_equal(getattr(a.seqs, attr), getattr(b.seqs, attr)), attr
    pd.testing.assert_frame_equal(a.items.reset_index(drop=True), b.items.reset_index(drop=True), check_dtype=False)
    assert a.attribute_columns == b.attribute_columns and a.vector_columns == b.vector_columns
    assert a.has_timestamps == b.has_timestamps and a.event_weights == b.event_weights
    assert a.report.to_dict() == b.report.to_dict()


def test_round_trip_and_fingerprint(workspace, tiny_frames):
    ds = load_log(*tiny_frames, name="tiny", event_weights={"cart": 4.0})
    path = save_dataset(ds)
    assert path == workspace / "datasets" / "tiny"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["n_events"] == 10 and manifest["fingerprint"] == ds.fingerprint()
    back = load_dataset("tiny")
    _same(ds, back)
    back.__dict__.pop("_fingerprint_cache")
    assert back.fingerprint() == ds.fingerprint()  # recomputed from the loaded arrays


def test_vectors_round_trip(workspace):
    log = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["x", "y"]})
    items = pd.DataFrame({"item_id": ["x", "y"], "vec_0": [0.25, 1.5], "brand": ["A", "B"]})
    ds = load_log(log, items, name="vec")
    save_dataset(ds)
    back = load_dataset("vec")
    assert back.vector_columns == ("vec_0",) and back.items["vec_0"].tolist() == [0.25, 1.5]


def test_list_delete_extras(workspace, tiny_frames):
    ds = load_log(*tiny_frames)
    save_dataset(ds, "b-set")
    journeys = pd.DataFrame({"journey_id": [0, 0], "step": [1, 2], "item_ids": [["i1"], ["i2", "i4"]]})
    save_dataset(ds, "a-set", extras={"journeys": journeys})
    infos = list_datasets()
    assert [i.name for i in infos] == ["a-set", "b-set"]
    assert infos[0].n_events == 10 and infos[0].fingerprint == ds.fingerprint()
    extra = load_extra("a-set", "journeys")
    assert extra["item_ids"].map(list).tolist() == [["i1"], ["i2", "i4"]]
    assert load_extra("b-set", "journeys") is None
    delete_dataset("b-set")
    assert [i.name for i in list_datasets()] == ["a-set"]
    with pytest.raises(DataError, match="no dataset named 'b-set'"):
        load_dataset("b-set")
    with pytest.raises(DataError, match="no dataset named 'b-set' to delete"):
        delete_dataset("b-set")


def test_bad_names_refused(workspace, tiny_frames):
    ds = load_log(*tiny_frames)
    with pytest.raises(ConfigError):
        save_dataset(ds, "../escape")
    with pytest.raises(ConfigError):
        load_dataset("a/b")


def test_damaged_folders(workspace, tiny_frames, caplog):
    ds = load_log(*tiny_frames)
    save_dataset(ds, "good")
    path = save_dataset(ds, "bad")
    (path / "events.parquet").write_bytes(b"garbage")
    with pytest.raises(DataError, match="damaged"):
        load_dataset("bad")
    (workspace / "datasets" / "empty").mkdir()
    with caplog.at_level("WARNING"):
        assert [i.name for i in list_datasets()] == ["good"]
    assert "skipping damaged dataset" in caplog.text


def test_overwrite_replaces(workspace, tiny_frames):
    inter, items = tiny_frames
    save_dataset(load_log(inter, items), "x")
    save_dataset(load_log(inter.iloc[:4], items), "x")
    assert load_dataset("x").n_events == 4


@pytest.mark.slow
def test_sigkill_during_save_keeps_previous_version(workspace, tiny_frames, tmp_path):
    inter, items = tiny_frames
    save_dataset(load_log(inter, items), "x")
    marker = tmp_path / "writing"
    script = textwrap.dedent(
        f"""
        import time, pathlib
        import pandas as pd
        import crossrec_core.storage.datasets as store
        from crossrec_core.data.load import load_log
        real = store._write
        def slow(path, columns):
            real(path, columns)
            pathlib.Path({str(marker)!r}).write_text("go")
            time.sleep(60)
        store._write = slow
        ds = load_log(pd.DataFrame({{"user_id": ["a", "a"], "item_id": ["1", "2"]}}))
        store.save_dataset(ds, "x")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "CROSSREC_HOME": str(workspace)})
    try:
        deadline = time.time() + 30
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "child never started writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load_dataset("x").n_events == 10
    assert [i.name for i in list_datasets()] == ["x"]


def test_workspace_that_is_a_file_gives_a_plain_error(tmp_path, monkeypatch):
    from crossrec_core.errors import ConfigError
    from crossrec_core.storage.workspace import workspace_root

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("CROSSREC_HOME", str(blocker))
    with pytest.raises(ConfigError, match="not a folder"):
        workspace_root()
