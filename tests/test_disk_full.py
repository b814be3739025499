"""A full disk while saving (issue 17.4): the save fails with one plain sentence, the previous version stays
intact, nothing half-written is left. Run on a real, small tmpfs workspace (mounting needs root, as CI has);
where mounting is not allowed the tests skip and say why."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.dataset import from_frames
from crossrec_core.errors import StorageError
from crossrec_core.storage.datasets import load_dataset, save_dataset
from crossrec_core.storage.registry import load_model, save_model
from crossrec_core.storage.workspace import atomic_write_json
from crossrec_core.training.loop import train_model
from journeys import journey_frames

SIZE_MB = 16


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """Return a workspace on a SIZE_MB tmpfs (CROSSREC_HOME points to it); unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()[:120]}")
    root = mnt / "workspace"
    (root / "tmp").mkdir(parents=True)
    monkeypatch.setenv("CROSSREC_HOME", str(root))
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(root: Path, leave_kb: int) -> Path:
    """Fill the disk holding ``root`` until about ``leave_kb`` KB are free; return the filler file."""
    filler = root.parent / f"filler-{uuid.uuid4().hex[:6]}"
    free = shutil.disk_usage(root).free - leave_kb * 1024
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(free, 0))
    return filler


def leftovers(root: Path) -> list[str]:
    """Return anything half-written: staging folders, temporary files, unfinished checkpoints."""
    names = [p.name for p in root.rglob("*")]
    return [n for n in names if n.startswith((".staging-", ".next-", ".old")) or n.endswith(".tmp")]


def shop(n_users: int, seed: int):
    rng = np.random.default_rng(seed)
    inter = pd.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, n_users, 20 * n_users)],
                          "item_id": [f"i{i}" for i in rng.integers(0, 400, 20 * n_users)],
                          "timestamp": np.arange(20 * n_users)})
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(400)], "category": [f"c{i % 7}" for i in range(400)],
                          "title": [f"product {i} " + "x" * 40 for i in range(400)]})
    return from_frames(inter, items, name="shop")


def test_a_dataset_save_on_a_full_disk_keeps_the_previous_version(small_disk):
    save_dataset(shop(50, 0), "shop")
    before = load_dataset("shop")
    filler = fill(small_disk, leave_kb=64)
    with pytest.raises(StorageError, match=r"The disk is full \(.* MB free .*\): 'shop' could not be saved. Free some space"):
        save_dataset(shop(5000, 1), "shop")
    after = load_dataset("shop")
    assert after.n_events == before.n_events == 1000 and after.fingerprint() == before.fingerprint()
    assert leftovers(small_disk) == []
    filler.unlink()  # space again: the same save goes through
    save_dataset(shop(5000, 1), "shop")
    assert load_dataset("shop").n_events == 100_000


def test_a_model_save_on_a_full_disk_keeps_the_previous_version(small_disk):
    inter, items = journey_frames()
    ds = from_frames(inter, items, name="j")
    cfg = ModelConfig(item=ItemEncoderConfig(dim=8, use_text=False), user=UserEncoderConfig(dim=8, n_layers=1, max_len=8),
                      train=TrainConfig(epochs=1, device="cpu", fusion_epochs=1, seed=0))
    model = train_model(ds, cfg, name="m")
    folder = save_model(model, small_disk / "models" / "m")
    weights = (folder / "model.safetensors").read_bytes()
    big = train_model(ds, ModelConfig(item=ItemEncoderConfig(dim=256, use_text=False), user=UserEncoderConfig(dim=256, n_layers=2, max_len=8),
                                      train=TrainConfig(epochs=1, device="cpu", fusion_epochs=1, seed=0)), name="m")
    filler = fill(small_disk, leave_kb=200)
    with pytest.raises(StorageError, match="The disk is full .*'m' could not be saved"):
        save_model(big, small_disk / "models" / "m")
    assert (folder / "model.safetensors").read_bytes() == weights
    assert load_model(folder).config.item.dim == 8
    assert leftovers(small_disk) == []
    filler.unlink()


def test_a_checkpoint_or_a_json_write_on_a_full_disk_leaves_the_last_one(small_disk):
    from crossrec_core.training.checkpoint import checkpoint_folder, save_checkpoint
    from crossrec_core.training.optim import FitOptimizer

    import torch

    net = torch.nn.Linear(512, 512)  # 1 MB of weights: last + best + optimizer state ~ 4 MB per checkpoint
    adam = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(2, 512)).sum().backward()
    adam.step()
    opt = FitOptimizer([adam])
    ckpt = small_disk / "ckpt"
    save_checkpoint(ckpt, net, net.state_dict(), opt, {"epoch": 1})
    first = sorted((p.name, p.read_bytes()) for p in checkpoint_folder(ckpt).iterdir())
    filler = fill(small_disk, leave_kb=300)
    with pytest.raises(StorageError, match="the training checkpoint could not be saved"):
        save_checkpoint(ckpt, net, net.state_dict(), opt, {"epoch": 2})
    assert sorted((p.name, p.read_bytes()) for p in checkpoint_folder(ckpt).iterdir()) == first
    with pytest.raises(StorageError, match="'state.json' could not be saved"):
        atomic_write_json(small_disk / "state.json", {"x": "y" * 400_000})
    assert not (small_disk / "state.json").exists()
    assert leftovers(small_disk) == []
    filler.unlink()
