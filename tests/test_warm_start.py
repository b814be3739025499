"""Warm start (issue 15, 3c): `crossrec train --warm-start MODEL` continues a saved model on a newer log.

The old model is trained on the pattern log without the Kitchen items and without a7/b7; the newer log
is the whole pattern log plus a few "cart" events: new items, a new category and a new event type."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from crossrec_core.cli import main
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.load import load_log
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.serving.recommender import Recommender
from crossrec_core.storage.registry import load_model, save_model
from crossrec_core.training.loop import train_model
from crossrec_core.training.warm_start import check_warm_start, reindex_to_model, warm_init, warm_start_config, warm_start_train
from test_cli_recommend import _pattern_files


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("warm")
    inter_path, items_path, inter, items = _pattern_files(folder)
    old = inter[~inter["item_id"].str.match(r"^(c\d|a7|b7)$")]
    old_path = folder / "old.csv"
    old.to_csv(old_path, index=False)
    new = inter.copy()
    new.loc[new.index % 7 == 0, "event"] = "cart"
    new_path = folder / "new.csv"
    new.to_csv(new_path, index=False)
    old_items = items[items["item_id"].isin(old["item_id"])]
    old_items_path = folder / "old_items.csv"
    old_items.to_csv(old_items_path, index=False)
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(dim=16, n_layers=1, max_len=8),
                      train=TrainConfig(epochs=2, device="cpu", fusion_epochs=1, seed=0, category_loss_weight=0.5))
    model = train_model(load_log(str(old_path), str(old_items_path)), cfg, name="old")
    return {"model_dir": save_model(model, folder / "old_model"), "new": new_path, "items": items_path, "folder": folder}


@pytest.fixture()
def old(logs):
    return load_model(logs["model_dir"])


def test_the_new_log_is_reindexed_with_the_models_items_categories_and_events_first(old, logs):
    ds = load_log(str(logs["new"]), str(logs["items"]))
    grown = reindex_to_model(ds, old)
    n = old.n_items
    assert list(grown.item_ids[:n]) == list(old.item_ids)
    assert set(grown.item_ids[n:]) == {"a7", "b7", "cold1"} | {f"c{i}" for i in range(8)}
    assert list(grown.category_names[: old.n_categories]) == list(old.category_names) and grown.category_names[-1] == "Kitchen"
    assert list(grown.event_names[: len(old.event_names)]) == list(old.event_names) and "cart" in grown.event_names[len(old.event_names):]
    # the same events, only renumbered
    back = grown.interactions_frame().sort_values(["user_id", "timestamp", "item_id"]).reset_index(drop=True)
    orig = ds.interactions_frame().sort_values(["user_id", "timestamp", "item_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, orig)
    assert (grown.items["item_id"].to_numpy() == grown.item_ids).all()
    assert (grown.category_names[grown.item_category][:n] == old.category_names[old.item_category]).all()


def test_warm_start_starts_from_the_saved_rows_and_new_items_start_like_cold_items(old, logs):
    ds = reindex_to_model(load_log(str(logs["new"]), str(logs["items"])), old)
    cfg = dataclasses.replace(old.config, train=dataclasses.replace(old.config.train, epochs=1))
    init = warm_init(old, ds, cfg)
    seen = {}

    def spy(net):
        init(net)
        net.eval()
        with torch.no_grad():
            seen["vecs"] = net.item_encoder().numpy().copy()
        seen["state"] = {k: v.detach().clone() for k, v in net.state_dict().items()}

    new = train_model(ds, cfg, init=spy)
    n, old_state, start = old.n_items, old.net.state_dict(), seen["state"]
    # the starting point: every old item's vector is the saved model's, every learned weight copied
    np.testing.assert_allclose(seen["vecs"][:n], old.base_item_vectors(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(start["item_encoder.id_emb.weight"][:n], old_state["item_encoder.id_emb.weight"])
    assert float(start["item_encoder.id_emb.weight"][n:].abs().sum()) == 0.0
    assert (start["item_encoder.id_mask"][:n] == old_state["item_encoder.id_mask"]).all()
    c = old.n_categories
    torch.testing.assert_close(start["item_encoder.cat_emb.weight"][:c], old_state["item_encoder.cat_emb.weight"])
    torch.testing.assert_close(start["category_head.weight"][:c], old_state["category_head.weight"])
    e = old_state["user_encoder.event_emb.weight"].shape[0]
    torch.testing.assert_close(start["user_encoder.event_emb.weight"][:e], old_state["user_encoder.event_emb.weight"])
    assert start["user_encoder.event_emb.weight"].shape[0] == e + 1  # "cart" appended
    for k, v in old_state.items():
        if v.shape == start[k].shape and k.startswith("user_encoder.") and v.is_floating_point():
            torch.testing.assert_close(start[k], v)
    # and it trained on the grown catalogue
    assert new.n_items == ds.n_items and list(new.item_ids[:n]) == list(old.item_ids)
    assert not torch.equal(new.net.state_dict()["item_encoder.id_emb.weight"][:n], old_state["item_encoder.id_emb.weight"])


def test_warm_start_trains_saves_and_recommends_new_items(old, logs, tmp_path):
    ds = load_log(str(logs["new"]), str(logs["items"]))
    cfg = warm_start_config(old, epochs=2)
    model = warm_start_train(old, ds, cfg, name="warm")
    again = load_model(save_model(model, tmp_path / "warm"))
    assert list(again.item_ids[: old.n_items]) == list(old.item_ids) and "c3" in set(again.item_ids)
    recs = Recommender(again).recommend(["a7", "b7", "c1"], 5)
    assert len(recs.items) == 5 and not recs.unknown_item_ids
    assert all(0.0 <= r.probability <= 1.0 for r in recs.items)


def test_incompatible_settings_or_logs_are_refused_with_a_sentence(old, logs):
    with pytest.raises(ConfigError, match="trained with the transformer user encoder, so a warm start cannot switch to gru"):
        warm_start_config(old, encoder="gru")
    ds = load_log(str(logs["new"]), str(logs["items"]))
    wider = dataclasses.replace(old.config, item=dataclasses.replace(old.config.item, dim=32),
                                user=dataclasses.replace(old.config.user, dim=32))
    with pytest.raises(ConfigError, match="item setting dim = 16, not 32; a warm start keeps the model's settings"):
        check_warm_start(old, ds, wider)
    other = pd.DataFrame({"user_id": ["x", "x", "y", "y"], "item_id": ["p1", "p2", "p1", "p3"], "timestamp": [1, 2, 3, 4]})
    with pytest.raises(ModelError, match="None of the items in .* is in model 'old'"):
        check_warm_start(old, load_log(other), old.config)


def test_cli_train_warm_start(logs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path / "ws"))
    out = tmp_path / "warm_cli"
    rc = main(["train", "--warm-start", str(logs["model_dir"]), "--interactions", str(logs["new"]), "--items", str(logs["items"]),
               "--out", str(out), "--epochs", "1", "--device", "cpu"])
    assert rc == 0
    model = load_model(out)
    old = load_model(logs["model_dir"])
    assert list(model.item_ids[: old.n_items]) == list(old.item_ids) and model.n_items == old.n_items + 11
    assert model.config.item == old.config.item and model.config.user == old.config.user
    rc = main(["train", "--warm-start", str(logs["model_dir"]), "--interactions", str(logs["new"]), "--out", str(tmp_path / "x"),
               "--encoder", "gru"])
    assert rc == 2 and "cannot switch to gru" in capsys.readouterr().err
    rc = main(["train", "--warm-start", str(tmp_path / "nope"), "--interactions", str(logs["new"]), "--out", str(tmp_path / "y")])
    assert rc == 2 and "No model folder" in capsys.readouterr().err
