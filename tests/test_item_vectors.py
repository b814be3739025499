"""Item vectors from other modalities (`crossrec train --item-vectors FILE`, data/item_vectors.py): read from
Parquet or CSV, fused into the item encoder (cold items too), plain errors for missing items or bad shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crossrec_core.cli import main
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.data.item_vectors import attach_item_vectors, read_item_vectors
from crossrec_core.errors import DataError
from crossrec_core.storage import registry
from crossrec_core.training.loop import train_model
from test_cli_model import _write_log

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from vector_logs import generate  # noqa: E402


def _vectors(n: int = 10, d: int = 4, seed: int = 0) -> pd.DataFrame:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "vector": list(v)})


def small_config(**item) -> ModelConfig:
    return ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False, **item), user=UserEncoderConfig(dim=16, max_len=8, n_layers=1),
                       train=TrainConfig(epochs=3, patience=3, batch_size=64, seed=1, device="cpu", fusion_epochs=0))


@pytest.mark.parametrize("form", ["parquet list", "csv list", "csv vec_ columns"])
def test_every_file_form_reads_the_same_vectors(tmp_path, form):
    frame = _vectors()
    want = np.stack(frame["vector"])
    if form == "parquet list":
        path = tmp_path / "v.parquet"
        frame.to_parquet(path)
    elif form == "csv list":
        path = tmp_path / "v.csv"
        frame.assign(vector=[str(list(map(float, v))) for v in frame["vector"]]).to_csv(path, index=False)
    else:
        path = tmp_path / "v.csv"
        pd.concat([frame[["item_id"]], pd.DataFrame(want, columns=[f"vec_{k}" for k in range(4)])], axis=1).to_csv(path, index=False)
    ids, vecs = read_item_vectors(path)
    assert list(ids) == [f"i{i}" for i in range(10)]
    np.testing.assert_allclose(vecs, want, rtol=1e-5)



@pytest.mark.parametrize("form", ["parquet list", "csv vec_ columns"])
def test_uploaded_bytes_read_like_the_file(tmp_path, form):
    frame = _vectors()
    path = tmp_path / ("v.parquet" if form.startswith("parquet") else "v.csv")
    if form.startswith("parquet"):
        frame.to_parquet(path)
    else:
        pd.concat([frame[["item_id"]], pd.DataFrame(np.stack(frame["vector"]), columns=[f"vec_{k}" for k in range(4)])], axis=1).to_csv(path, index=False)
    ids, vecs = read_item_vectors(path.read_bytes(), "upload" + path.suffix)
    want_ids, want = read_item_vectors(path)
    assert list(ids) == list(want_ids)
    np.testing.assert_array_equal(vecs, want)


def test_a_parquet_footer_declaring_too_much_is_refused_before_reading(tmp_path, monkeypatch):
    from crossrec_core.data import item_vectors

    _vectors(n=200, d=64).to_parquet(tmp_path / "v.parquet")
    monkeypatch.setattr(item_vectors, "DEFAULT_MAX_BYTES", 1000)  # the file's pages unpack to ~50 KB
    with pytest.raises(DataError, match="would unpack to more than"):
        read_item_vectors(tmp_path / "v.parquet")

def test_cli_trains_with_vectors_and_the_model_keeps_them(tmp_path, workspace, capsys):
    _write_log(tmp_path)
    _vectors().to_parquet(tmp_path / "v.parquet")
    out = tmp_path / "m"
    rc = main(["train", "--interactions", str(tmp_path / "log.csv"), "--items", str(tmp_path / "items.csv"), "--out", str(out),
               "--epochs", "1", "--device", "cpu", "--item-vectors", str(tmp_path / "v.parquet")])
    assert rc == 0
    model = registry.load_model(out)
    enc = model.net.item_encoder
    assert enc.use_vec and tuple(enc.extra_vecs.shape) == (10, 4) and len(model.vector_columns) == 4
    # the saved buffer holds each item's (standardised) vector, in the model's item order
    raw = np.stack(_vectors().set_index("item_id").loc[list(model.item_ids), "vector"])
    z = (raw - raw.mean(0)) / raw.std(0)
    np.testing.assert_allclose(enc.extra_vecs.numpy(), z, atol=1e-4)


def test_a_cold_item_is_carried_by_its_vector(tiny_frames):
    inter, items = tiny_frames
    ids = items["item_id"].astype(str).to_numpy()
    vecs = np.random.default_rng(0).normal(size=(len(ids), 3)).astype(np.float32)
    ds = attach_item_vectors(from_frames(inter, items, name="tiny"), ids, vecs)
    model = train_model(ds, small_config())
    enc = model.net.item_encoder
    cold = int(np.flatnonzero(enc.id_mask.numpy() == 0)[0])  # an item without training events
    with torch.no_grad():
        before = enc(torch.tensor([cold])).clone()
        enc.extra_vecs[cold] += 5.0
        after = enc(torch.tensor([cold]))
    assert not torch.allclose(before, after)  # its vector reaches its item vector through the projection


def test_missing_items_are_a_plain_error(tmp_path, workspace, capsys):
    _write_log(tmp_path)
    _vectors(n=7).to_parquet(tmp_path / "v.parquet")
    rc = main(["train", "--interactions", str(tmp_path / "log.csv"), "--out", str(tmp_path / "m"), "--item-vectors", str(tmp_path / "v.parquet")])
    err = capsys.readouterr().err
    assert rc == 2 and "3 of the log's 10 items have no vector in 'v.parquet'" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("cells, message", [
    (["[1, 2, 3]", "[1, 2]"], "differ in length: item b has 2 values, item a has 3"),
    (["[1, 2]", "[1, x]"], "empty or non-numeric values (first: item b)"),
    (["[]", "[]"], "have 0 values each"),
])
def test_bad_vectors_are_plain_errors(tmp_path, cells, message):
    pd.DataFrame({"item_id": ["a", "b"], "vector": cells}).to_csv(tmp_path / "v.csv", index=False)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_item_vectors(tmp_path / "v.csv")


def test_repeated_ids_and_missing_columns_are_plain_errors(tmp_path):
    pd.DataFrame({"item_id": ["a", "a"], "vec_0": [1.0, 2.0]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="more than one vector"):
        read_item_vectors(tmp_path / "dup.csv")
    pd.DataFrame({"sku": ["a"], "vec_0": [1.0]}).to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(DataError, match="no item_id column"):
        read_item_vectors(tmp_path / "noid.csv")
    with pytest.raises(DataError, match="does not exist"):
        read_item_vectors(tmp_path / "nowhere.parquet")


def test_generated_log_hides_the_style_from_ids_and_titles():
    inter, items, vecs = generate(users=200, items=300, categories=4, styles=3, seed=0)
    assert set(items["item_id"]) == set(vecs["item_id"]) == set(inter["item_id"])
    assert not items["title"].str.contains("style").any() and set(items.columns) == {"item_id", "category", "title", "brand"}
    v = np.stack(vecs["vector"])
    # the vectors cluster (three styles): nearest-centroid structure is far from noise
    sims = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    assert (sims > 0.8).mean() > 0.15


def test_vectors_that_carry_the_hidden_style_lift_the_model():
    inter, items, vecs = generate(users=400, items=240, categories=4, styles=3, seed=0, loyalty=0.95, new=0.0)
    ds = from_frames(inter, items, name="styles")
    with_vecs = attach_item_vectors(ds, vecs["item_id"].to_numpy(dtype=object), np.stack(vecs["vector"]))
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False, use_attributes=False), user=UserEncoderConfig(dim=16, max_len=8, n_layers=1),
                      train=TrainConfig(epochs=8, patience=8, batch_size=64, seed=1, device="cpu", fusion_epochs=0, prior_blend=False, knn_blend=False))
    plain = train_model(ds, cfg).metrics["valid"]["ndcg10"]
    fused = train_model(with_vecs, cfg).metrics["valid"]["ndcg10"]
    assert fused > plain + 0.03, (plain, fused)
