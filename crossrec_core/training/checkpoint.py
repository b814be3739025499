"""Per-epoch checkpoints (safetensors + JSON, never pickle), written whole, and resuming from them."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import torch

from crossrec_core.errors import ConfigError
from crossrec_core.models.fusion import CrossRecNet
from crossrec_core.storage.registry import read_json, read_safetensors, write_safetensors
from crossrec_core.storage.workspace import atomic_write_json, disk_full_is_plain, publish_dir
from crossrec_core.training.optim import FitOptimizer


def save_checkpoint(ckpt: Path, net: CrossRecNet, best_state: dict, opt: FitOptimizer, state: dict, average: dict | None = None) -> None:
    """Write one epoch's checkpoint as a whole: all files go to a staging folder that then replaces
    ``ckpt/current`` in one atomic exchange, so a kill can never pair weights of one epoch with the
    state of another. ``average``: the weights' moving average (training/epochs.py WeightAverage), if any."""
    ckpt.mkdir(parents=True, exist_ok=True)
    staging = ckpt / f".next-{uuid.uuid4().hex[:8]}"
    try:
        # a full disk: StorageError, the previous checkpoint stays the one a resume reads
        with disk_full_is_plain("the training checkpoint", ckpt):
            staging.mkdir()
            write_safetensors(staging / "last.safetensors", net.state_dict())
            write_safetensors(staging / "best.safetensors", best_state)
            if average is not None:
                write_safetensors(staging / "average.safetensors", average)
            tensors, scalars = optimizer_to_flat(opt)
            write_safetensors(staging / "optimizer.safetensors", tensors)
            atomic_write_json(staging / "state.json", {**state, "optimizer": scalars})
        publish_dir(staging, checkpoint_folder(ckpt))
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def same_settings(saved: dict | None, current: dict) -> bool:
    """Return whether a checkpoint's config matches, ignoring the epoch cap (resuming may raise it)."""
    if not isinstance(saved, dict):
        return False

    def strip(d: dict) -> dict:
        d = json.loads(json.dumps(d))
        d.get("train", {}).pop("epochs", None)
        return d

    return strip(saved) == strip(current)


def checkpoint_folder(ckpt: Path) -> Path:
    """Return the folder holding the last complete checkpoint inside ``ckpt``."""
    return ckpt / "current"


def optimizer_to_flat(opt: FitOptimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (tensors, JSON scalars) of every optimiser's state; tensor keys are "i.param.name"."""
    tensors, scalars = {}, {"optimizers": []}
    for i, o in enumerate(opt.optimizers):
        sd = o.state_dict()
        sc = {"param_groups": sd["param_groups"], "state": {}}
        for pid, st in sd["state"].items():
            sc["state"][str(pid)] = {}
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    tensors[f"{i}.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    sc["state"][str(pid)][k] = float(v.item() if torch.is_tensor(v) else v)
        scalars["optimizers"].append(sc)
    return tensors, scalars


def optimizer_from_flat(opt: FitOptimizer, tensors: dict, scalars: dict) -> None:
    saved = scalars.get("optimizers", [])
    if len(saved) != len(opt.optimizers):
        raise ConfigError("The checkpoint's optimiser state does not match this training run; delete it or train without resume.")
    for i, (o, sc) in enumerate(zip(opt.optimizers, saved)):
        state = {}
        for pid, vals in sc["state"].items():
            st = {k: torch.tensor(v, dtype=torch.float32) for k, v in vals.items()}
            prefix = f"{i}.{pid}."
            st.update({key[len(prefix):]: t for key, t in tensors.items() if key.startswith(prefix)})
            state[int(pid)] = st
        o.load_state_dict({"state": state, "param_groups": sc["param_groups"]})


def load_checkpoint(ckpt: Path, net: CrossRecNet, opt: FitOptimizer, *, fingerprint: str, config: dict) -> tuple[dict, dict] | None:
    """Restore ``net`` and ``opt`` from the last checkpoint in ``ckpt``; return (best weights, state) or None
    (state["average"]: the weights' moving average, when the run keeps one).

    Raises ConfigError when the checkpoint was made with other data or settings (the epoch cap may differ).
    """
    folder = checkpoint_folder(ckpt)
    if not (folder / "state.json").is_file():
        return None
    state = read_json(folder / "state.json")
    if state.get("data_fingerprint") != fingerprint or not same_settings(state.get("config"), config):
        raise ConfigError(f"The checkpoint in {ckpt} was made with other data or settings; delete it or train without resume.")
    net.load_state_dict(read_safetensors(folder / "last.safetensors"))
    best_state = read_safetensors(folder / "best.safetensors")
    optimizer_from_flat(opt, read_safetensors(folder / "optimizer.safetensors"), state["optimizer"])
    if (folder / "average.safetensors").is_file():
        state["average"] = read_safetensors(folder / "average.safetensors")
    return best_state, state
