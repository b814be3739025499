"""Item encoder: item vector = sum of switchable parts (ID, category, attribute tokens, text, vec_* columns).

A sum (not a concat) keeps every part optional and lets cold items, whose ID embedding was never
trained, be carried by text and category: the ID table is zero-initialised and masked to zero for
items with no training interactions, and dropped at random during training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from crossrec_core.config import ItemEncoderConfig
from crossrec_core.models.gather import take_rows

PAD_TOKEN = 0
UNK_TOKEN = 1


def build_attribute_vocab(items: pd.DataFrame, columns: tuple[str, ...], max_vocab: int) -> list[str]:
    """Return the attribute token vocabulary: "column=value" tokens by frequency (index 0 pad, 1 unknown)."""
    if not columns:
        return ["<pad>", "<unk>"]
    tokens = pd.concat([_column_tokens(items, c) for c in columns], ignore_index=True)
    tokens = tokens[tokens.str.len() > 0]
    counts = tokens.value_counts(sort=True)
    counts = counts.iloc[np.lexsort((counts.index.to_numpy(dtype=str), -counts.to_numpy()))]  # ties by name
    return ["<pad>", "<unk>"] + counts.index.astype(str).tolist()[: max_vocab - 2]


def _column_tokens(items: pd.DataFrame, column: str) -> pd.Series:
    # values like "red, blue" or "a;b|c" are several tokens; each is prefixed by its column
    vals = items[column].astype(str).str.lower().str.split(r"[,;|/]")
    flat = vals.explode().str.strip()
    return (column + "=" + flat).where(flat.str.len() > 0, "")


def attribute_token_matrix(items: pd.DataFrame, columns: tuple[str, ...], vocab: list[str], max_tokens: int) -> np.ndarray:
    """Return int64 (n_items, max_tokens) token ids per item (0 = padding), vectorised with pandas."""
    n = len(items)
    out = np.zeros((n, max_tokens), dtype=np.int64)
    if not columns or n == 0:
        return out
    index = pd.Index(vocab)
    parts = []
    for c in columns:
        vals = items[c].astype(str).str.lower().str.split(r"[,;|/]").explode().str.strip()
        tok = (c + "=" + vals).where(vals.str.len() > 0, "")
        parts.append(pd.DataFrame({"row": tok.index.to_numpy(), "tok": tok.to_numpy(dtype=object)}))
    df = pd.concat(parts, ignore_index=True)
    df = df[df["tok"] != ""]
    ids = index.get_indexer(df["tok"].astype(str))
    ids = np.where(ids < 0, UNK_TOKEN, ids)
    rows = df["row"].to_numpy(dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    rows, ids = rows[order], ids[order]
    first = np.searchsorted(rows, rows, side="left")
    slot = np.arange(len(rows)) - first
    keep = slot < max_tokens
    out[rows[keep], slot[keep]] = ids[keep]
    return out


class ItemEncoder(nn.Module):
    """Maps item_idx to d-dim vectors.

    Buffers hold the per-item inputs (category, attribute tokens, text vectors, vec_* columns), so the
    saved weights contain everything needed to recompute item vectors.
    """

    def __init__(
        self,
        cfg: ItemEncoderConfig,
        *,
        n_items: int,
        n_categories: int,
        attr_vocab_size: int,
        text_dim: int,
        n_vector_columns: int,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.n_items = n_items
        self.register_buffer("item_category", torch.zeros(n_items, dtype=torch.long))
        self.register_buffer("id_mask", torch.ones(n_items, dtype=torch.float32))  # 0 for cold items
        if cfg.use_id:
            self.id_emb = nn.Embedding(n_items, d)
            # small (not zero: zero IDs never break symmetry) and masked to 0 for cold items via id_mask
            nn.init.normal_(self.id_emb.weight, std=0.05)
        if cfg.use_category:
            self.cat_emb = nn.Embedding(max(n_categories, 1), d)
            nn.init.normal_(self.cat_emb.weight, std=0.1)
        self.use_attr = cfg.use_attributes and attr_vocab_size > 2
        if self.use_attr:
            self.register_buffer("attr_tokens", torch.zeros(n_items, cfg.attr_max_tokens, dtype=torch.long))
            self.attr_emb = nn.Embedding(attr_vocab_size, d, padding_idx=PAD_TOKEN)
            nn.init.normal_(self.attr_emb.weight, std=0.1)
            with torch.no_grad():
                self.attr_emb.weight[PAD_TOKEN].zero_()
            if cfg.attr_encoder == "cnn":
                self.attr_conv = nn.Conv1d(d, d, kernel_size=cfg.attr_kernel, padding=cfg.attr_kernel // 2)
        self.use_text = cfg.use_text and text_dim > 0
        if self.use_text:
            self.register_buffer("text_vecs", torch.zeros(n_items, text_dim, dtype=torch.float32))
            self.text_proj = nn.Linear(text_dim, d)
        self.use_vec = cfg.use_vectors and n_vector_columns > 0
        if self.use_vec:
            self.register_buffer("extra_vecs", torch.zeros(n_items, n_vector_columns, dtype=torch.float32))
            self.vec_proj = nn.Linear(n_vector_columns, d)

    def input_vectors(self, idx: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Return float (..., d) vectors of HISTORY items: the scored-side vectors (from ``table`` when
        given, else computed) plus the category embedding when it sits on the input side only."""
        out = take_rows(table, idx) if table is not None else self(idx)
        if self.cfg.use_category and self.cfg.category_side == "input":
            out = out + self.cat_emb(take_rows(self.item_category, idx))
        return out

    def forward(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Return float (len(idx), d) vectors of the items as they are scored (the retrieval table), or
        (n_items, d) for every item when idx is None; history items go through ``input_vectors``."""
        if idx is None:
            idx = torch.arange(self.n_items, device=self.item_category.device)
        out = torch.zeros(idx.shape + (self.cfg.dim,), device=idx.device)
        for part in self.parts(idx).values():
            out = out + part
        return out

    def parts(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return each switched-on part's float (..., d) share of the scored vectors of ``idx``, by name (ID,
        category, attributes, title text, other vectors): ``forward`` is their sum."""
        out: dict[str, torch.Tensor] = {}
        if self.cfg.use_id:
            keep = take_rows(self.id_mask, idx)  # take_rows: index_select, ~7x faster than [idx] on a CPU (models/gather.py)
            if self.training and self.cfg.id_shrinkage > 0:
                # an item's ID row is used in a step with probability n / (n + k) and weighted by that
                # probability when scoring (dropout without rescaling): under Adam a fixed weight alone would
                # be undone by a larger row; dropping it makes text + category learn to carry rare items
                keep = torch.bernoulli(keep)
            if self.training and self.cfg.id_dropout > 0:
                keep = keep * (torch.rand(idx.shape, device=idx.device) >= self.cfg.id_dropout).float()
            out["ID"] = self.id_emb(idx) * keep.unsqueeze(-1)
        if self.cfg.use_category and self.cfg.category_side == "both":
            out["category"] = self.cat_emb(take_rows(self.item_category, idx))
        if self.use_attr:
            tok = take_rows(self.attr_tokens, idx)  # (..., L)
            flat = tok.reshape(-1, tok.shape[-1])
            if self.cfg.attr_encoder == "bag":
                # the pad row is zero, so the sum over all slots is the sum over real tokens
                n_tok = (flat != PAD_TOKEN).sum(dim=1, keepdim=True).clamp(min=1)  # (N, 1)
                h = self.attr_emb(flat).sum(dim=1) / n_tok  # (N, d)
            else:
                e = self.attr_emb(flat).transpose(1, 2)  # (N, d, L)
                h = torch.relu(self.attr_conv(e))  # (N, d, L)
                h = h.masked_fill((flat == PAD_TOKEN).unsqueeze(1), float("-inf")).amax(dim=2)  # (N, d)
                h = torch.where(torch.isfinite(h), h, torch.zeros_like(h))  # items without attributes
            out["attributes"] = h.reshape(idx.shape + (self.cfg.dim,))
        if self.use_text:
            out["title text"] = self.text_proj(take_rows(self.text_vecs, idx))
        if self.use_vec:
            out["other vectors"] = self.vec_proj(take_rows(self.extra_vecs, idx))
        return out

    def append_items(self, category_idx: torch.Tensor, text_vecs: torch.Tensor | None = None,
                     attr_tokens: torch.Tensor | None = None, extra_vecs: torch.Tensor | None = None) -> None:
        """Grow every per-item table by ``m = len(category_idx)`` items placed like cold items (no retraining).

        The new rows get ID part 0 (``id_mask`` 0 and a zero ID row), their category, and their title
        vectors (m, text_dim), attribute tokens (m, attr_max_tokens) and vec_* values (m, V) when given
        (else zeros / padding). Old rows are untouched, so old items keep their index and vector.
        """
        m = int(len(category_idx))
        dev = self.item_category.device

        def grown(old: torch.Tensor, new: torch.Tensor | None) -> torch.Tensor:
            add = torch.zeros((m,) + tuple(old.shape[1:]), dtype=old.dtype, device=dev) if new is None else new.to(dev, old.dtype)
            if tuple(add.shape) != (m,) + tuple(old.shape[1:]):
                raise ValueError(f"append_items: expected rows of shape {tuple(old.shape[1:])}, got {tuple(add.shape[1:])}")
            return torch.cat([old, add])

        self.item_category = grown(self.item_category, torch.as_tensor(category_idx, dtype=torch.long))
        self.id_mask = grown(self.id_mask, None)
        if self.use_attr:
            self.attr_tokens = grown(self.attr_tokens, attr_tokens)
        if self.use_text:
            self.text_vecs = grown(self.text_vecs, text_vecs)
        if self.use_vec:
            self.extra_vecs = grown(self.extra_vecs, extra_vecs)
        if self.cfg.use_id:
            w = self.id_emb.weight
            table = nn.Embedding(self.n_items + m, w.shape[1], sparse=self.id_emb.sparse).to(device=w.device, dtype=w.dtype)
            with torch.no_grad():
                table.weight.copy_(torch.cat([w.detach(), torch.zeros(m, w.shape[1], dtype=w.dtype, device=w.device)]))
            self.id_emb = table
        self.n_items += m
