"""Warm start (issue 15, 3c): continue training a saved model on a newer log instead of starting again.

    crossrec train --warm-start MODEL --interactions NEW_LOG [--items ITEMS] --out DIR

The new log is re-indexed into the model's index space (``reindex_to_model``): the model's items,
categories and event types keep their index, so each keeps its learned row, and the log's new ones are
appended after them. Items of the model absent from the new log stay in the catalogue (as in the model).
The network is built for the grown sizes as usual (training/loop.py) and then, before the first epoch,
``warm_init`` copies every learned tensor from the saved model: the ID rows of old items (new items get a
zero ID row, so they start where a cold item sits: title + category), the category and event rows (new
categories and events keep their fresh initialisation), attribute-token rows matched by token, and every
other weight as it is. Users are not parameters (a user state is computed from the history), so new
shoppers need nothing. The optimiser starts fresh, the blend weights start at 0 as in a fresh model, and
the blends, the fusion scorer and its calibration are refit on the new log, exactly as in training.

A model's architecture settings (dimension, encoder, item parts) are kept: a warm start with other
settings, or on items whose attribute / vec_* columns differ from the model's, is refused with a sentence.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np
import pandas as pd
import torch

from crossrec_core.config import ModelConfig
from crossrec_core.data.dataset import InteractionDataset, Sequences
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.models.fusion import CrossRecNet
from crossrec_core.models.item_encoder import build_attribute_vocab
from crossrec_core.models.trained import TrainedModel
from crossrec_core.storage.registry import load_model
from crossrec_core.training.loop import train_model

log = logging.getLogger(__name__)

# tensors a warm start never copies: the blend weights are chosen again on validation (fresh models start at 0)
_NOT_COPIED = ("prior_weights",)


def warm_start_config(model: TrainedModel, *, encoder: str | None = None, epochs: int | None = None,
                      seed: int | None = None, device: str | None = None) -> ModelConfig:
    """Return the model's own settings with the training knobs replaced (epochs, seed, device).

    Raises ConfigError when ``encoder`` names another user encoder than the model's (its weights would not fit)."""
    cfg = model.config
    if encoder is not None and encoder != cfg.user.kind:
        raise ConfigError(f"Model '{model.name}' was trained with the {cfg.user.kind} user encoder, so a warm start "
                          f"cannot switch to {encoder}: leave --encoder out, or train a new model from scratch.")
    changes = {k: v for k, v in (("epochs", epochs), ("seed", seed), ("device", device)) if v is not None}
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes)) if changes else cfg


def check_warm_start(model: TrainedModel, ds: InteractionDataset, cfg: ModelConfig) -> None:
    """Raise ConfigError / ModelError (a sentence) when ``model`` cannot be continued on ``ds`` with ``cfg``."""
    for part in ("item", "user"):
        ours, theirs = dataclasses.asdict(getattr(cfg, part)), dataclasses.asdict(getattr(model.config, part))
        diff = sorted(k for k in ours if ours[k] != theirs.get(k))
        if diff:
            raise ConfigError(f"Model '{model.name}' was trained with {part} setting {diff[0]} = {theirs.get(diff[0])!r}, "
                              f"not {ours[diff[0]]!r}; a warm start keeps the model's settings. Train from scratch to change them.")
    enc = model.net.item_encoder
    if enc.use_vec and tuple(ds.vector_columns) != tuple(model.vector_columns):
        raise ModelError(f"Model '{model.name}' reads the vector columns {', '.join(model.vector_columns)} but the new items "
                         f"have {', '.join(ds.vector_columns) or 'none'}; give the same vec_* columns, or train from scratch.")
    if model.attribute_columns and set(ds.attribute_columns) != set(model.attribute_columns):
        raise ModelError(f"Model '{model.name}' reads the item attributes {', '.join(model.attribute_columns)} but the new items "
                         f"have {', '.join(ds.attribute_columns) or 'none'}; give the same columns, or train from scratch.")
    if ds.n_events and not (model.item_index(ds.item_ids[np.unique(ds.seqs.items)]) >= 0).any():
        raise ModelError(f"None of the items in '{ds.name}' is in model '{model.name}', so a warm start would learn every item "
                         "anew; train a new model on this log instead.")


def _appended(old: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Return ``old`` followed by the names of ``names`` not in it (first appearance order)."""
    old = np.asarray(old, dtype=object)
    extra = pd.unique(pd.Series(names, dtype=object).astype(str))
    extra = extra[pd.Index(old.astype(str)).get_indexer(extra) < 0]
    return np.concatenate([old, np.asarray(extra, dtype=object)])


def reindex_to_model(ds: InteractionDataset, model: TrainedModel) -> InteractionDataset:
    """Return ``ds`` in the model's index space: its items, categories and event types first, in the model's
    order (the same index as in the model), then the log's new ones; users and events are unchanged.

    Items of the model that the log does not mention stay, with the model's title and category."""
    old_ids = np.asarray(model.item_ids, dtype=object).astype(str)
    pos = pd.Index(old_ids).get_indexer(ds.item_ids.astype(str))
    new = pos < 0
    new_index = pos.copy()
    new_index[new] = len(old_ids) + np.arange(int(new.sum()))
    item_ids = np.concatenate([old_ids, ds.item_ids[new].astype(str)]).astype(object)
    # the item table: the log's rows (they win for titles and categories), plus the model's items it lacks
    missing = np.setdiff1d(np.arange(len(old_ids)), pos[~new], assume_unique=True)
    kept = pd.DataFrame({"item_id": old_ids[missing], "title": model.item_titles[missing],
                         "category": model.category_names[model.item_category[missing]]})
    for c in ds.attribute_columns:
        kept[c] = ""
    for c in ds.vector_columns:
        kept[c] = np.float32(0.0)
    table = pd.concat([ds.items.assign(_at=new_index), kept.assign(_at=missing)], ignore_index=True)
    table = table.sort_values("_at", kind="stable").drop(columns="_at").reset_index(drop=True)
    categories = _appended(model.category_names, np.sort(table["category"].astype(str).unique()))
    events = _appended(model.event_names, ds.event_names)
    ev_map = pd.Index(events.astype(str)).get_indexer(ds.event_names.astype(str))
    seqs = ds.seqs
    seqs = Sequences(seqs.offsets, new_index[seqs.items].astype(np.int32), seqs.times,
                     ev_map[seqs.events].astype(np.int16) if len(ev_map) else seqs.events)
    log.info("warm start: %d of the log's items are new (appended after the model's %d), %d new categories, %d new event types",
             int(new.sum()), len(old_ids), len(categories) - model.n_categories, len(events) - len(model.event_names))
    return dataclasses.replace(
        ds, item_ids=item_ids, category_names=categories, event_names=events,
        item_category=pd.Index(categories.astype(str)).get_indexer(table["category"].astype(str)).astype(np.int32),
        items=table, seqs=seqs,
    )


def warm_init(model: TrainedModel, ds: InteractionDataset, cfg: ModelConfig) -> Callable[[CrossRecNet], None]:
    """Return the function training calls on its freshly built network (``ds`` from reindex_to_model):
    it copies the model's learned tensors in, as described in the module docstring."""
    old_state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    old_vocab = list(model.attr_vocab)
    new_vocab = (build_attribute_vocab(ds.items, ds.attribute_columns, cfg.item.attr_vocab_max)
                 if cfg.item.use_attributes and ds.attribute_columns else ["<pad>", "<unk>"])
    n_old = model.n_items

    def init(net: CrossRecNet) -> None:
        state = net.state_dict()
        with torch.no_grad():
            for key, new in state.items():
                old = old_state.get(key)
                if old is None or key in _NOT_COPIED or key.startswith("item_encoder.") and key.split(".")[-1] in (
                        "item_category", "text_vecs", "attr_tokens", "extra_vecs"):
                    continue  # per-item inputs come from the new log (the same for old items); fresh tensors stay
                if key == "item_encoder.id_mask":
                    new[:n_old] = torch.maximum(new[:n_old], old.to(new.device))  # an old item keeps its learned ID part
                elif key == "item_encoder.id_emb.weight":
                    new[:n_old] = old.to(new.device, new.dtype)
                    new[n_old:] = 0.0  # like a cold item: the ID part starts at 0
                elif key == "item_encoder.attr_emb.weight":
                    src = pd.Index(old_vocab).get_indexer(new_vocab)
                    hit = np.flatnonzero(src >= 0)
                    new[torch.from_numpy(hit)] = old[torch.from_numpy(src[hit])].to(new.device, new.dtype)
                elif old.shape == new.shape:
                    new.copy_(old)
                elif old.dim() == new.dim() and all(o <= n for o, n in zip(old.shape, new.shape)):
                    new[tuple(slice(0, o) for o in old.shape)] = old.to(new.device, new.dtype)  # grown: categories, events
                else:
                    raise ModelError(f"The saved weight {key} of model '{model.name}' has shape {tuple(old.shape)}, which does not "
                                     f"fit {tuple(new.shape)}; train a new model from scratch.")
        net.load_state_dict(state)

    return init


def warm_start_train(model: TrainedModel, ds: InteractionDataset, config: ModelConfig | None = None, **train_kw) -> TrainedModel:
    """Return a model trained on ``ds`` starting from ``model`` (checks, re-index, init, then train_model)."""
    cfg = config or model.config
    check_warm_start(model, ds, cfg)
    grown = reindex_to_model(ds, model)
    return train_model(grown, cfg, init=warm_init(model, grown, cfg), **train_kw)


def prepare_warm_start(model_path: str, ds: InteractionDataset, *, encoder: str | None = None, epochs: int | None = None,
                       seed: int | None = None, device: str | None = None) -> tuple[ModelConfig, InteractionDataset, Callable[[CrossRecNet], None]]:
    """Return (config, re-indexed log, init) for `crossrec train --warm-start MODEL`: load, check, re-index."""
    model = load_model(model_path, device="cpu")
    cfg = warm_start_config(model, encoder=encoder, epochs=epochs, seed=seed, device=device)
    check_warm_start(model, ds, cfg)
    grown = reindex_to_model(ds, model)
    return cfg, grown, warm_init(model, grown, cfg)
