"""Registry: safetensors + JSON round trip, pickles and damaged files refused, safe zip import, listing."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest

from crossrec_core.storage import registry
from crossrec_core.serving.recommender import Recommender
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import ModelError
from crossrec_core.training.loop import train_model


def _dataset(prefix: str = "i", n_users: int = 40):
    rng = np.random.default_rng(1)
    rows = [(f"u{u}", f"{prefix}{int(x)}", t, "view") for u in range(n_users) for t, x in enumerate(rng.integers(0, 12, 5))]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"]).drop_duplicates(["user_id", "item_id"])
    items = pd.DataFrame({"item_id": [f"{prefix}{i}" for i in range(14)], "category": ["A", "B"] * 7, "title": [f"thing {i}" for i in range(14)], "brand": ["x", "y"] * 7})
    return from_frames(inter, items, name="reg")


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(
        item=ItemEncoderConfig(dim=16, use_text=False),
        user=UserEncoderConfig(dim=16, max_len=6),
        train=TrainConfig(epochs=2, patience=2, batch_size=16, device="cpu", fusion_epochs=1),
    )
    return train_model(_dataset(), cfg, name="reg")


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_identical_scores(model, tmp_path):
    ds = _dataset()
    path = registry.save_model(model, tmp_path / "m")
    assert {p.name for p in path.iterdir()} == registry.MODEL_FILES  # threshold.json only once one is saved
    loaded = registry.load_model(path)
    users = np.arange(10)
    ends = ds.seqs.offsets[1:11]
    np.testing.assert_array_equal(model.score_histories(ds.seqs, users, ends), loaded.score_histories(ds.seqs, users, ends))
    got, want = Recommender(loaded).candidates(ds.seqs, users, ends, 5), Recommender(model).candidates(ds.seqs, users, ends, 5)
    np.testing.assert_array_equal(got.cand, want.cand)
    np.testing.assert_array_equal(got.probability, want.probability)
    assert loaded.calibration == model.calibration and loaded.fusion_rerank == model.fusion_rerank
    assert list(loaded.item_ids) == list(model.item_ids) and list(loaded.category_names) == list(model.category_names)
    np.testing.assert_array_equal(loaded.popularity, model.popularity)
    np.testing.assert_array_equal(loaded.category_transitions, model.category_transitions)
    assert loaded.config == model.config and loaded.metrics["best_epoch"] == model.metrics["best_epoch"]
    assert loaded.attribute_columns == ("brand",) and loaded.data_fingerprint == ds.fingerprint()
    # saving again over the same path replaces it atomically and leaves no staging folders
    registry.save_model(loaded, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"] or sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["m"]


def test_lstm_model_trains_saves_and_loads_with_identical_scores(tmp_path):
    cfg = ModelConfig(
        item=ItemEncoderConfig(dim=16, use_text=False),
        user=UserEncoderConfig(kind="lstm", dim=16, max_len=6),
        train=TrainConfig(epochs=2, patience=2, batch_size=16, device="cpu", fusion_epochs=1),
    )
    ds = _dataset()
    model = train_model(ds, cfg, name="reg-lstm")
    loaded = registry.load_model(registry.save_model(model, tmp_path / "lstm"))
    assert loaded.config.user.kind == "lstm"
    assert any(k.startswith("user_encoder.lstm.") for k in loaded.net.state_dict())
    users = np.arange(10)
    ends = ds.seqs.offsets[1:11]
    np.testing.assert_array_equal(model.score_histories(ds.seqs, users, ends), loaded.score_histories(ds.seqs, users, ends))


def test_pickle_model_refused_and_never_unpickled(model, tmp_path):
    marker = tmp_path / "pwned"
    folder = registry.save_model(model, tmp_path / "evil")
    (folder / "model.pkl").write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ModelError, match="pickle"):
        registry.load_model(folder)
    # a pickle disguised under an expected name is refused too
    folder2 = registry.save_model(model, tmp_path / "evil2")
    (folder2 / "metrics.json").write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ModelError):
        registry.load_model(folder2)
    pkl_only = tmp_path / "pkl_only"
    pkl_only.mkdir()
    (pkl_only / "model.pt").write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ModelError, match="refuses"):
        registry.load_model(pkl_only)
    assert not marker.exists()


def test_truncated_safetensors_refused(model, tmp_path):
    folder = registry.save_model(model, tmp_path / "t")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="damaged"):
        registry.load_model(folder)


def test_missing_file_refused(model, tmp_path):
    folder = registry.save_model(model, tmp_path / "t")
    (folder / "vocab.json").unlink()
    with pytest.raises(ModelError, match="vocab.json"):
        registry.load_model(folder)


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_import_round_trip_and_refusals(model, tmp_path, workspace):
    folder = registry.save_model(model, tmp_path / "z")
    good = {f"z/{p.name}": p.read_bytes() for p in folder.iterdir()}
    path = registry.import_model_zip(_zip(good), "imported")
    assert path == workspace / "models" / "imported"
    assert registry.load_model(path).n_items == model.n_items
    assert [m.name for m in registry.list_models()] == ["imported"]

    outside = tmp_path / "escaped.json"
    for bad, match in [
        ({**good, "../escaped.json": b"{}"}, "unsafe path"),
        ({**good, "/tmp/escaped.json": b"{}"}, "unsafe path"),
        ({**good, "z/model.pkl": b"x"}, "pickle"),
        ({**good, "z/run.sh": b"x"}, "unexpected file"),
        ({k: v for k, v in good.items() if not k.endswith("vocab.json")}, "vocab.json"),
    ]:
        with pytest.raises(ModelError, match=match):
            registry.import_model_zip(_zip(bad), "bad")
    assert not outside.exists() and not (workspace / "models" / "bad").exists()
    assert not list((workspace / "tmp").glob(".staging-*"))

    bomb = {**good, "z/metrics.json": b"0" * 50_000_000}
    with pytest.raises(ModelError, match="zip bomb"):
        registry.import_model_zip(_zip(bomb), "bomb")

    link = io.BytesIO()
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("z/config.json")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ModelError, match="symbolic link"):
        registry.import_model_zip(link.getvalue(), "link")


def test_list_and_delete(model, workspace):
    registry.save_model_to_workspace(model, "first")
    assert [m.name for m in registry.list_models()] == ["first"]
    info = registry.list_models()[0]
    assert info.n_items == model.n_items and info.best_epoch == model.metrics["best_epoch"]
    registry.delete_model("first")
    assert registry.list_models() == []
    with pytest.raises(ModelError, match="no saved model"):
        registry.delete_model("first")


def test_vocabulary_mismatch_is_model_error(model):
    other = _dataset(prefix="zz")
    with pytest.raises(ModelError, match="trained on another"):
        model.check_compatible(other)
    model.check_compatible(_dataset())  # its own log is fine


def test_align_reindexes_into_model_space(model):
    inter = pd.DataFrame({"user_id": ["p", "p", "p", "q"], "item_id": ["i3", "unknown", "i5", "i3"], "timestamp": [1, 2, 3, 1], "event": ["view", "view", "teleport", "view"]})
    ds = from_frames(inter)
    seqs = model.align(ds)
    assert seqs.offsets.tolist() == [0, 2, 3]
    assert seqs.items.tolist() == model.item_index(["i3", "i5", "i3"]).tolist()
    assert seqs.events.tolist() == [model.event_index(["view"])[0], model.default_event_index, model.event_index(["view"])[0]]


def test_the_validated_cold_threshold_is_saved_and_an_older_model_keeps_the_fixed_rule(model, tmp_path):
    assert model.cold_max_events in (0, 1, 2) and "cold_max_events" in model.metrics["valid"]
    kept = model.cold_max_events
    try:
        for value, expected_rule in ((0, 0), (None, 2)):  # None: saved as models before session 9 were
            model.cold_max_events = value
            loaded = registry.load_model(registry.save_model(model, tmp_path / f"m{value}"))
            assert loaded.cold_max_events == value and Recommender(loaded).cold_max_events == expected_rule
    finally:
        model.cold_max_events = kept
