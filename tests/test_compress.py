"""`crossrec compress` (issue 15.4): int8 item tables and layer weights that load and recommend like the original."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossrec_core.cli import main
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.serving.recommender import Recommender
from crossrec_core.storage.compress import CompressConfig, compress_model, prune_smallest
from crossrec_core.storage.int8 import dequantise_rows, quantise_rows
from crossrec_core.storage.registry import load_model, read_safetensors, save_model
from crossrec_core.training.loop import train_model
from journeys import journey_frames


def test_int8_rows_round_trip_within_half_a_step_of_each_row():
    t = torch.randn(500, 64) * torch.rand(500, 1) * 3
    t[7] = 0.0  # an all-zero row stays all zero
    q, scale = quantise_rows(t)
    assert q.dtype == torch.int8 and scale.shape == (500,)
    back = dequantise_rows(q, scale)
    assert ((back - t).abs() <= scale[:, None] / 2 + 1e-6).all()
    assert (back[7] == 0).all() and q.abs().max() == 127


def test_magnitude_pruning_zeroes_the_smallest_share():
    w = torch.arange(1, 101, dtype=torch.float32).reshape(10, 10) * torch.where(torch.rand(10, 10) < 0.5, -1.0, 1.0)
    p = prune_smallest(w, 0.3)
    assert int((p == 0).sum()) == 30 and (p[p != 0].abs() > 30).all()
    assert prune_smallest(w, 0.0) is w
    with pytest.raises(ConfigError, match="prune must be a share"):
        CompressConfig(prune=1.5)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    inter, items = journey_frames()
    ds = from_frames(inter, items, name="journeys")
    cfg = ModelConfig(item=ItemEncoderConfig(dim=16, use_text=False), user=UserEncoderConfig(dim=16, n_layers=1, max_len=8),
                      train=TrainConfig(epochs=3, device="cpu", fusion_epochs=2, seed=0))
    root = tmp_path_factory.mktemp("compress")
    return ds, save_model(train_model(ds, cfg, name="m"), root / "m"), root


def test_a_compressed_model_loads_and_recommends_like_the_original(saved):
    ds, folder, root = saved
    report = compress_model(folder, root / "m-int8")
    assert report["int8_tables"] == ["item_encoder.id_emb.weight"]
    record = json.loads((root / "m-int8" / "compression.json").read_text())
    assert record["int8_tables"] == report["int8_tables"] and record["source"] == "m"
    original, small = load_model(folder), load_model(root / "m-int8")
    # every weight matrix of the layers is int8 on disk too: the user encoder's and the fusion scorer's Linear layers
    layers = set(record["int8_layers"])
    linear = {f"{n}.weight" for n, m in original.net.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linear and linear <= layers and "item_encoder.id_emb.weight" not in layers
    on_disk = read_safetensors(root / "m-int8" / "model.safetensors")
    assert all(on_disk[k + ".int8"].dtype == torch.int8 and k not in on_disk for k in layers)
    for key in layers:  # back to float32 within half a step of each output row
        w, back = original.net.state_dict()[key], small.net.state_dict()[key]
        assert back.dtype == torch.float32
        assert ((back - w).abs() <= w.abs().amax(dim=1, keepdim=True) / 127 / 2 + 1e-6).all()
    users = np.arange(ds.n_users, dtype=np.int64)
    ends = ds.seqs.offsets[1:].astype(np.int64)
    a = Recommender(original).recommend_batch(ds.seqs, users, ends, 5)
    b = Recommender(small).recommend_batch(ds.seqs, users, ends, 5)
    same = (a["item_idx"].to_numpy() == b["item_idx"].to_numpy()).mean()
    assert same >= 0.9  # int8 rounding may swap near-ties, nothing more
    np.testing.assert_allclose(b["probability"].to_numpy(), a["probability"].to_numpy(), atol=0.02)
    emb = original.net.item_encoder.id_emb.weight
    step = emb.abs().amax(dim=1, keepdim=True) / 127
    assert ((small.net.item_encoder.id_emb.weight - emb).abs() <= step / 2 + 1e-6).all()


def test_the_command_writes_a_copy_and_refuses_what_it_cannot_do(saved, capsys):
    ds, folder, root = saved
    out = root / "m-small"
    assert main(["compress", "--model", str(folder), "--out", str(out), "--prune", "0.2", "--layers", "float32"]) == 0
    assert "item tables and 0 layer weights in int8" in capsys.readouterr().err
    record = json.loads((out / "compression.json").read_text())
    assert record["prune"] == 0.2 and record["pruned"]
    w = load_model(out).net.state_dict()[record["pruned"][0]]
    before = load_model(folder).net.state_dict()[record["pruned"][0]]
    k = int(0.2 * w.numel())  # the 20 % smallest entries (rounded down) become 0, no others
    assert int((w == 0).sum()) >= k and int(((w == 0) & (before != 0)).sum()) <= k
    assert torch.equal(w[w != 0], before[w != 0])
    both = root / "m-both"  # pruned, then int8: a pruned weight stays exactly 0
    assert main(["compress", "--model", str(folder), "--out", str(both), "--prune", "0.2"]) == 0
    assert record["pruned"][0] in json.loads((both / "compression.json").read_text())["int8_layers"]
    assert torch.equal(load_model(both).net.state_dict()[record["pruned"][0]] == 0, w == 0)
    assert main(["compress", "--model", str(out), "--out", str(root / "again")]) == 2
    assert "already compressed" in capsys.readouterr().err
    kept = (both / "model.safetensors").read_bytes()  # an existing folder is never replaced
    assert main(["compress", "--model", str(folder), "--out", str(both)]) == 2
    assert "already exists" in capsys.readouterr().err and (both / "model.safetensors").read_bytes() == kept
    assert main(["compress", "--model", str(root / "nope"), "--out", str(root / "x")]) == 2
    assert "No model folder" in capsys.readouterr().err
    (out / "compression.json").write_text(json.dumps({"int8_tables": ["item_encoder.missing.weight"]}))
    with pytest.raises(ModelError, match="compression.json does not match its weights"):
        load_model(out)
