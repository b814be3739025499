"""Saved models: folders of safetensors + JSON + parquet, written atomically, loaded without any pickle.

Folder layout (format version 1)::

    model.safetensors   network weights and per-item input buffers
    aux.safetensors     popularity (n_items,), category_transitions (C, C), item_category (n_items,)
    config.json         {"format_version", "name", "config", "sizes", "attribute_columns", "vector_columns"}
    items.parquet       item_id, title, category, popularity
    vocab.json          categories, events, attribute tokens
    fingerprint.json    data fingerprint of the training log
    metrics.json        validation metrics, per-epoch history, best epoch, training time
    calibration.json    the fusion logit -> probability mapping (fitted on held-out positions), re-rank on/off
    threshold.json      optional: the probability threshold saved with the model (save_threshold)

Why one module of ~500 lines: writing and reading a model folder are the two halves of one format,
and import (a zip from elsewhere) must apply every check that loading does; keeping them together
keeps the format and its checks in one place (model listing lives in storage/catalog.py).
"""

from __future__ import annotations

import io
import logging
import lzma
import os
import shutil
import stat
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from crossrec_core.config import ModelConfig
from crossrec_core.device import pick_device
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.models import fusion
from crossrec_core.models.calibration import Calibration
from crossrec_core.models.features import N_FEATURES
from crossrec_core.models.trained import TrainedModel
from crossrec_core.storage.catalog import MODEL_FORMAT_VERSION, ModelInfo, list_models, read_json  # noqa: F401 (re-exported)
from crossrec_core.storage.int8 import COMPRESSION_FILE, restore_weights
from crossrec_core.storage.neighbour_tables import neighbour_tensors, neighbours_from_aux
from crossrec_core.storage.workspace import (
    atomic_dir,
    atomic_write_json,
    disk_full_is_plain,
    models_dir,
    name_lock,
    publish_dir,
    safe_name,
    workspace_root,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = MODEL_FORMAT_VERSION
MODEL_FILES = {
    "model.safetensors",
    "aux.safetensors",
    "config.json",
    "items.parquet",
    "vocab.json",
    "fingerprint.json",
    "metrics.json",
    "calibration.json",
}
# a saved threshold; a `crossrec compress` copy's record; the newest evaluation's figures (storage/model_card.py)
OPTIONAL_FILES = {"threshold.json", "compression.json", "test_figures.json"}
REQUIRED_FILES = ("model.safetensors", "aux.safetensors", "config.json", "items.parquet", "vocab.json", "calibration.json")
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".npz"}
MAX_ZIP_BYTES = 2 * 1024**3
MAX_ZIP_RATIO = 200  # uncompressed / compressed, beyond this the archive is treated as a zip bomb
_ZIP_ENCRYPTED = 0x1  # general-purpose flag bit 0: the member is encrypted (strong encryption sets it too)
_ZIP_SPLIT_MARKER = b"PK\x07\x08"  # the first part of a split (multi-part) zip starts with this
# Everything zipfile (and the bz2 / lzma decompressors under it) raises for an archive it cannot read:
# RuntimeError is how it reports encryption, OSError is bz2's "Invalid data stream".
_UNREADABLE_ZIP = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError, RuntimeError,
                   ValueError, OSError)
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


# -- safe primitives ------------------------------------------------------------------------
def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors to a safetensors file atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Return the tensors of a safetensors file; ModelError when it is missing, truncated or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path.name} is missing from {path.parent}. The model folder is incomplete: save or train it again.")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ModelError(
            f"{path.name} in {path.parent} is damaged or not a safetensors file ({str(err)[:120]}). "
            "Save or train the model again."
        ) from err


def _refuse_pickles(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.suffix.lower() in PICKLE_SUFFIXES or (p.is_file() and _looks_like_pickle(p)):
            raise ModelError(
                f"{folder.name} contains {p.name}, a pickle-style file. Pickles can run code when opened, so "
                "crossrec refuses them for safety. Use a model folder saved by crossrec (safetensors + JSON)."
            )


def _looks_like_pickle(p: Path) -> bool:
    if p.name in MODEL_FILES | OPTIONAL_FILES:
        with open(p, "rb") as fh:
            head = fh.read(9)
        if p.suffix == ".safetensors" and len(head) == 9 and head[8:9] == b"{":
            # a safetensors file: 8 bytes of header length, then its JSON header (a length whose low
            # bytes read 0x80 0x04 is not a pickle)
            return False
        return len(head) >= 2 and head[0] == 0x80 and head[1] <= 5  # pickle protocol opcode
    return False


# -- save -----------------------------------------------------------------------------------
def save_model(model, path: str | os.PathLike) -> Path:
    """Return the folder the model was written to, atomically (a crash never leaves half a model).

    ``path`` is any folder path; an existing model there is replaced in one rename.
    """
    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a folder. Choose another --out path.")
    staging = target.parent / f".staging-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        with name_lock(target):
            with disk_full_is_plain(f"'{target.name}'", target.parent):  # StorageError; the old model stays
                staging.mkdir()
                _write_folder(model, staging)
            if target.exists() and any(target.iterdir()) and not (target / "config.json").is_file():
                raise ConfigError(f"{target} is a non-empty folder that is not a crossrec model. Choose another --out path.")
            publish_dir(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("saved model '%s' to %s", model.name, target)
    return target


def save_model_to_workspace(model, name: str | None = None, root=None) -> Path:
    """Return the workspace folder models/<name> the model was saved to (atomically)."""
    name = safe_name(name or model.name)
    target = models_dir(root) / name
    with atomic_dir(target) as staging:
        _write_folder(model, staging)
    return target


def _category_history_tensors(model) -> dict:
    h = model.category_history
    return {
        "category_pair_keys": torch.from_numpy(np.array(h.pair_keys, dtype=np.int64)),
        "category_pair_counts": torch.from_numpy(np.array(h.pair_counts, dtype=np.float32)),
        "category_mix": torch.from_numpy(np.array(h.mix, dtype=np.float32)),
    }


def _cold_tensors(model) -> dict:
    cold = getattr(model, "cold_max_events", None)
    return {} if cold is None else {"cold_max_events": torch.tensor([int(cold)], dtype=torch.int64)}


def _category_history_from_aux(aux: dict, n_categories: int, folder: Path) -> tuple[tuple | None, np.ndarray | None]:
    """Return (pairs, mix) of the next-category estimate, (None, None) for models saved before it; ModelError when inconsistent."""
    if "category_mix" not in aux:
        return None, None
    keys = aux["category_pair_keys"].numpy() if "category_pair_keys" in aux else np.zeros(0, np.int64)
    counts = aux["category_pair_counts"].numpy() if "category_pair_counts" in aux else np.zeros(0, np.float32)
    mix = aux["category_mix"].numpy().reshape(-1)
    C = max(int(n_categories), 1)
    ok = (
        len(keys) == len(counts) and len(mix) == 3 and bool(np.all(np.isfinite(mix))) and bool(np.all(mix >= 0))
        and (len(keys) == 0 or (int(keys.min()) >= 0 and int(keys.max()) < C**3 and bool(np.all(np.diff(keys) > 0))))
    )
    if not ok:
        raise ModelError(f"{folder.name}/aux.safetensors holds an inconsistent next-category table. Save or train the model again.")
    return (keys, counts), mix


def _write_folder(model, folder: Path) -> None:
    folder = Path(folder)
    write_safetensors(folder / "model.safetensors", model.net.state_dict())
    write_safetensors(
        folder / "aux.safetensors",
        {
            "popularity": torch.from_numpy(np.array(model.popularity, dtype=np.float32)),
            "category_transitions": torch.from_numpy(np.array(model.category_transitions, dtype=np.float32)),
            "item_category": torch.from_numpy(np.array(model.item_category, dtype=np.int32)),
            **neighbour_tensors(model),
            **_category_history_tensors(model),
            **_cold_tensors(model),
            "train_event_hashes": torch.from_numpy(np.asarray(model.train_event_hashes, dtype=np.int64)),
        },
    )
    enc = model.net.item_encoder
    atomic_write_json(
        folder / "config.json",
        {
            "format_version": FORMAT_VERSION,
            "name": model.name,
            "config": model.config.to_dict(),
            "sizes": {
                "n_items": model.n_items,
                "n_categories": model.n_categories,
                "n_event_types": len(model.event_names),
                "attr_vocab_size": len(model.attr_vocab),
                "use_text": bool(enc.use_text),
                "n_vector_columns": int(enc.extra_vecs.shape[1]) if enc.use_vec else 0,
            },
            "attribute_columns": list(model.attribute_columns),
            "vector_columns": list(model.vector_columns),
        },
    )
    pd.DataFrame(
        {
            "item_id": pd.Series(model.item_ids, dtype=object).astype(str),
            "title": pd.Series(model.item_titles, dtype=object).astype(str),
            "category": pd.Series(model.category_names[model.item_category], dtype=object).astype(str),
            "popularity": model.popularity.astype(np.float32),
        }
    ).to_parquet(folder / "items.parquet", index=False)
    atomic_write_json(
        folder / "vocab.json",
        {
            "categories": [str(c) for c in model.category_names],
            "events": [str(e) for e in model.event_names],
            "attribute_tokens": list(model.attr_vocab),
        },
    )
    atomic_write_json(folder / "fingerprint.json", {"data_fingerprint": model.data_fingerprint})
    atomic_write_json(folder / "metrics.json", model.metrics)
    atomic_write_json(folder / "calibration.json", {"calibration": model.calibration.to_dict(), "rerank": bool(model.fusion_rerank)})
    if model.threshold is not None:
        atomic_write_json(folder / "threshold.json", {"threshold": float(model.threshold)})


# -- load -----------------------------------------------------------------------------------
def load_model(path: str | os.PathLike, device: str | torch.device | None = None):
    """Return the TrainedModel saved in ``path`` (a folder, or a workspace model name).

    Never unpickles: safetensors + JSON + parquet only. A folder holding pickle files is refused.
    """
    folder = Path(path).expanduser()
    if not folder.exists() and os.sep not in str(path) and "/" not in str(path):
        folder = models_dir() / str(path)
    if not folder.is_dir():
        raise ModelError(f"No model folder at {folder}. Train a model first, or check the path.")
    _refuse_pickles(folder)
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelError(f"{folder} is not a complete crossrec model: missing {', '.join(missing)}. Save or train it again.")
    meta = read_json(folder / "config.json")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{folder.name} has model format version {version!r}; this crossrec reads version {FORMAT_VERSION}.")
    try:
        cfg = ModelConfig.from_dict(meta["config"])
        sizes = meta["sizes"]
        vocab = read_json(folder / "vocab.json")
        items = pd.read_parquet(folder / "items.parquet")
    except (KeyError, TypeError, ConfigError) as err:
        raise ModelError(f"{folder.name}/config.json is not a valid crossrec model description ({err}).") from err
    except (OSError, ValueError) as err:
        raise ModelError(f"{folder.name}/items.parquet cannot be read ({str(err)[:120]}).") from err
    weights = read_safetensors(folder / "model.safetensors")
    if (folder / COMPRESSION_FILE).is_file():  # `crossrec compress`: int8 item tables and layer weights back to float32
        try:
            weights = restore_weights(weights, read_json(folder / COMPRESSION_FILE))
        except (KeyError, TypeError, AttributeError, RuntimeError) as err:
            raise ModelError(f"{folder.name}/{COMPRESSION_FILE} does not match its weights ({err}). Compress the model again.") from err
    aux = read_safetensors(folder / "aux.safetensors")
    # Check declared sizes against the vocabulary BEFORE building the network, so a folder that claims
    # 10^8 items cannot make us allocate gigabytes before being refused.
    try:
        n_items_declared = int(sizes["n_items"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{folder.name}/config.json has no valid item count ({err}).") from err
    if len(items) != n_items_declared:
        raise ModelError(f"{folder.name}/items.parquet has {len(items)} items but config.json declares {n_items_declared}.")
    if "item_category" in aux and int(aux["item_category"].shape[0]) != n_items_declared:
        raise ModelError(f"{folder.name}/aux.safetensors describes {int(aux['item_category'].shape[0])} items, not {n_items_declared}.")
    dev = pick_device(str(device)) if device is not None else pick_device(cfg.train.device if cfg.train.device == "cpu" else "auto")
    try:
        net = fusion.build_net(
            cfg,
            n_items=int(sizes["n_items"]),
            n_categories=int(sizes["n_categories"]),
            n_event_types=int(sizes["n_event_types"]),
            attr_vocab_size=int(sizes["attr_vocab_size"]),
            use_text=bool(sizes["use_text"]),
            n_vector_columns=int(sizes["n_vector_columns"]),
        )
        # models saved before the log-prior blend existed have no prior_weights: the blend is off
        weights.setdefault("prior_weights", torch.zeros(2, dtype=torch.float32))
        # ... and those saved before the residual fusion scorer have no retrieval term in its logit
        weights.setdefault("fusion.base_weight", torch.zeros((), dtype=torch.float32))
        # ... and a scorer saved before the last features were appended reads the first ones
        width = weights.get("fusion.linear.weight", torch.zeros(1, N_FEATURES)).shape[-1]
        if 1 <= width < N_FEATURES:
            net.fusion = fusion.FusionScorer(int(width))
        net.load_state_dict(weights, strict=True)
    except (RuntimeError, KeyError, ValueError) as err:
        raise ModelError(f"The weights in {folder.name} do not match its config.json ({' '.join(str(err).split())[:160]}).") from err
    metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
    fp = read_json(folder / "fingerprint.json").get("data_fingerprint", "") if (folder / "fingerprint.json").is_file() else ""
    knn, knn_weight, rules = neighbours_from_aux(aux, aux["popularity"].numpy(), n_items_declared, folder)
    n_cat = max(int(aux["category_transitions"].shape[0]), int(aux["item_category"].numpy().max(initial=-1)) + 1)
    pairs, mix = _category_history_from_aux(aux, n_cat, folder)
    try:
        cal = read_json(folder / "calibration.json")
        calibration, rerank = Calibration.from_dict(cal["calibration"]), bool(cal["rerank"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{folder.name}/calibration.json is not a valid probability calibration ({err}). Train the model again.") from err
    return TrainedModel(
        name=str(meta.get("name") or folder.name),
        config=cfg,
        net=net,
        item_ids=items["item_id"].astype(str).to_numpy(dtype=object),
        item_titles=items["title"].astype(str).to_numpy(dtype=object),
        category_names=np.asarray(vocab["categories"], dtype=object),
        item_category=aux["item_category"].numpy().astype(np.int32),
        event_names=np.asarray(vocab["events"], dtype=object),
        popularity=aux["popularity"].numpy().astype(np.float32),
        category_transitions=aux["category_transitions"].numpy().astype(np.float32),
        metrics=metrics,
        data_fingerprint=fp,
        attribute_columns=tuple(meta.get("attribute_columns", [])),
        vector_columns=tuple(meta.get("vector_columns", [])),
        attr_vocab=list(vocab.get("attribute_tokens", ["<pad>", "<unk>"])),
        device=dev,
        batch_size=cfg.train.eval_batch_size,
        knn=knn,
        rules=rules,
        knn_weight=knn_weight,
        calibration=calibration,
        fusion_rerank=rerank,
        train_event_hashes=aux["train_event_hashes"].numpy() if "train_event_hashes" in aux else None,
        threshold=_read_threshold(folder),
        category_pairs=pairs,
        category_mix=mix,
        cold_max_events=_cold_max_events_from_aux(aux, folder),
    )


def _cold_max_events_from_aux(aux: dict, folder: Path) -> int | None:
    """Return the validated cold-shopper threshold, None for models saved before it; ModelError when not 0..1000."""
    if "cold_max_events" not in aux:
        return None
    value = aux["cold_max_events"].numpy().reshape(-1)
    if len(value) != 1 or not 0 <= int(value[0]) <= 1000:
        raise ModelError(f"{folder.name}/aux.safetensors holds an invalid cold-shopper threshold. Save or train the model again.")
    return int(value[0])


def _read_threshold(folder: Path) -> float | None:
    """Return the threshold saved in ``folder``/threshold.json, or None; ModelError when it is not a probability."""
    path = folder / "threshold.json"
    if not path.is_file():
        return None
    try:
        t = float(read_json(path)["threshold"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{folder.name}/threshold.json holds no valid threshold ({err}). Save the threshold again.") from err
    if not 0.0 <= t <= 1.0:
        raise ModelError(f"{folder.name}/threshold.json holds {t}, which is not a probability between 0 and 1. Save the threshold again.")
    return t


def save_threshold(path: str | os.PathLike, threshold: float | None) -> Path:
    """Save ``threshold`` (a probability, or None to remove it) with the model in ``path`` (folder or
    workspace name); `crossrec recommend --threshold model` and the Recommendations page use it."""
    folder = _model_folder(path)
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"A threshold is a probability between 0 and 1, got {threshold}.")
    with name_lock(folder):
        if threshold is None:
            (folder / "threshold.json").unlink(missing_ok=True)
        else:
            atomic_write_json(folder / "threshold.json", {"threshold": float(threshold)})
    return folder


def _model_folder(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists() and os.sep not in str(path) and "/" not in str(path):
        folder = models_dir() / str(path)
    if not (folder / "config.json").is_file():
        raise ModelError(f"No model folder at {folder}. Train a model first, or check the path.")
    return folder


# -- workspace listing ----------------------------------------------------------------------
def delete_model(name: str, root=None) -> None:
    """Delete the workspace model ``name``; ModelError when there is none."""
    name = safe_name(name)
    target = models_dir(root) / name
    if not target.is_dir():
        raise ModelError(f"There is no saved model named '{name}'. `crossrec models` lists the saved models.")
    with name_lock(target):
        trash = workspace_root(root) / "tmp" / f".old-{name}-{uuid.uuid4().hex[:8]}"
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)


# -- zip import -----------------------------------------------------------------------------
def import_model_zip(zip_path_or_bytes, name: str, root=None) -> Path:
    """Return the workspace folder of a model imported from a zip (validated, then loaded, then renamed in).

    Refused with ModelError: absolute paths, '..', symlinks, unexpected files (pickles included), more
    than 2 GB uncompressed or a suspicious compression ratio (zip bomb), an encrypted, multi-part or
    otherwise unreadable zip, or a model that does not load. Every check on the listing runs before
    anything is unpacked.
    """
    name = safe_name(name)
    target = models_dir(root) / name
    if target.exists():
        raise ModelError(f"A model named '{name}' already exists. Delete it first or choose another name.")
    src = io.BytesIO(zip_path_or_bytes) if isinstance(zip_path_or_bytes, (bytes, bytearray, memoryview)) else zip_path_or_bytes
    _refuse_split_zip(src)
    try:
        zf = zipfile.ZipFile(src)
    except _UNREADABLE_ZIP as err:
        raise ModelError(
            f"The uploaded file is not a readable zip archive ({_first_line(err)}): zip the model folder again "
            "as one ordinary zip file."
        ) from err
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        total = 0
        names = []
        for m in members:
            fname = m.filename.replace("\\", "/")
            parts = [p for p in fname.split("/") if p]
            if fname.startswith("/") or (len(fname) > 1 and fname[1] == ":") or ".." in parts:
                raise ModelError(f"The zip contains the unsafe path '{m.filename}' (absolute or with '..'); refused.")
            if stat.S_ISLNK(m.external_attr >> 16):
                raise ModelError(f"The zip contains a symbolic link '{m.filename}'; refused.")
            base = parts[-1]
            if base.lower().endswith(tuple(PICKLE_SUFFIXES)):
                raise ModelError(f"The zip contains {base}, a pickle-style file; pickles are refused for safety.")
            if base not in MODEL_FILES | OPTIONAL_FILES:
                raise ModelError(f"The zip contains an unexpected file '{m.filename}'. Expected only: {', '.join(sorted(MODEL_FILES | OPTIONAL_FILES))}.")
            if len(parts) > 2:
                raise ModelError(f"The zip nests '{m.filename}' too deep; zip the model folder itself.")
            if m.flag_bits & _ZIP_ENCRYPTED:
                raise ModelError(
                    f"The zip is password-protected ('{m.filename}' is encrypted), which crossrec cannot open: "
                    "zip the model folder again without a password."
                )
            if m.volume != 0:
                raise ModelError(
                    f"The zip is one part of a multi-part (split) archive ('{m.filename}' is on part {m.volume + 1}), "
                    "which crossrec cannot open: zip the model folder again as one file."
                )
            if m.compress_type not in _ZIP_METHODS:
                raise ModelError(
                    f"'{m.filename}' is compressed with a method crossrec cannot unpack (zip method "
                    f"{m.compress_type}): zip the model folder again with ordinary (deflate) compression."
                )
            total += m.file_size
            if total > MAX_ZIP_BYTES:
                raise ModelError("The zip would unpack to more than 2 GB; refused.")
            if m.file_size > 1_000_000 and m.file_size > MAX_ZIP_RATIO * max(m.compress_size, 1):
                raise ModelError(f"'{m.filename}' is compressed suspiciously well (a zip bomb?); refused.")
            names.append((m, base))
        if len({b for _, b in names}) != len(names):
            raise ModelError("The zip holds more than one model (duplicate file names); zip one model folder.")
        staging = workspace_root(root) / "tmp" / f".staging-import-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            for m, base in names:
                written = 0
                with open(staging / base, "wb") as fout:
                    for chunk in _member_chunks(zf, m):
                        written += len(chunk)
                        if written > m.file_size or written > MAX_ZIP_BYTES:
                            raise ModelError(f"'{m.filename}' unpacks to more than it declares; refused.")
                        fout.write(chunk)
            load_model(staging, device="cpu")  # validates everything; raises ModelError on any problem
            with name_lock(target):
                if target.exists():
                    raise ModelError(f"A model named '{name}' already exists. Delete it first or choose another name.")
                os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _member_chunks(zf: zipfile.ZipFile, member: zipfile.ZipInfo):
    """Yield the unpacked bytes of ``member`` in 1 MB chunks; ModelError when the archive cannot be read.

    Only reading is guarded here, so a full disk while writing the chunks is not reported as a damaged zip.
    """
    try:
        with zf.open(member) as fin:
            while chunk := fin.read(1 << 20):
                yield chunk
    except _UNREADABLE_ZIP as err:
        raise ModelError(
            f"The zip is damaged: '{member.filename}' cannot be unpacked ({_first_line(err)}). Zip the model folder again."
        ) from err


def _refuse_split_zip(src) -> None:
    """Refuse the first part of a split zip (.z01), which starts with the spanning marker, in plain words."""
    try:
        if hasattr(src, "read"):
            pos = src.tell()
            head = src.read(4)
            src.seek(pos)
        else:
            with open(src, "rb") as fh:
                head = fh.read(4)
    except (OSError, TypeError, ValueError, AttributeError):
        return  # not seekable, missing or not a path: zipfile reports it itself
    if head == _ZIP_SPLIT_MARKER:
        raise ModelError(
            "The uploaded file is one part of a multi-part (split) zip, which crossrec cannot open: "
            "zip the model folder again as one file."
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:160]
