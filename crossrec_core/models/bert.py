"""A BERT sentence encoder run straight from its local folder: config.json, model.safetensors, tokenizer.json.

The bundled all-MiniLM-L6-v2 is a plain BERT (6 layers, 384 wide). Loading it through ``transformers`` cost every
new catalogue's training 3.3 s before the first title was encoded (the package's import and its model builder, at
one thread; loading here takes 0.02 s, and the titles then encode at the same speed: bench/RESULTS.md, session 25),
as much as several epochs of a small shop. This module reads the same weights
with ``safetensors`` and the same tokenizer file with ``tokenizers`` (both already installed with transformers) and
runs the forward pass with torch's own functions: it loads in well under a second and gives the same vectors
(tests/test_text.py compares them with transformers' to 1e-5). A folder that holds anything else (another
architecture, relative positions, no tokenizer.json) returns None from ``load_bert``, and TextEncoder keeps using
transformers for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class BertEncoder:
    """The encoder's weights by their safetensors names and the sizes from config.json; ``hidden`` runs it."""

    weights: dict[str, torch.Tensor]
    n_layers: int
    n_heads: int
    eps: float
    activation: str
    pad_id: int = 0  # config.json's pad_token_id: the padding the tokenizer appends

    def to(self, device: str) -> "BertEncoder":
        self.weights = {k: v.to(device) for k, v in self.weights.items()}
        return self

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weights[f"{name}.weight"], self.weights[f"{name}.bias"], self.eps)

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return (B, T, H) the last layer's states of token ids (B, T) whose real tokens ``mask`` (B, T) marks."""
        w, (B, T) = self.weights, ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T][None]
        x = self._norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        keys = mask.bool()[:, None, None, :]  # (B, 1, 1, T): every query attends to the real tokens only
        act = _ACTIVATIONS[self.activation]
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}"
            q, k, v = (self._linear(x, f"{p}.attention.self.{n}").view(B, T, self.n_heads, -1).transpose(1, 2) for n in ("query", "key", "value"))
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=keys).transpose(1, 2).reshape(B, T, -1)
            x = self._norm(x + self._linear(att, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            ff = self._linear(act(self._linear(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
            x = self._norm(x + ff, f"{p}.output.LayerNorm")
        return x


def load_bert(folder: Path):
    """Return (BertEncoder, tokenizers.Tokenizer) for a plain BERT folder, or None when the folder holds anything
    this module does not run exactly (the caller then loads it through transformers)."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    plain = (
        cfg.get("model_type") == "bert"
        and cfg.get("position_embedding_type", "absolute") == "absolute"
        and cfg.get("hidden_act") in _ACTIVATIONS
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
    )
    if not plain:
        return None
    weights = load_file(str(folder / "model.safetensors"))
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}  # a checkpoint saved from BertFor... has the prefix
    needed = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight", "embeddings.token_type_embeddings.weight"]
    needed += [f"encoder.layer.{i}.output.LayerNorm.bias" for i in range(int(cfg["num_hidden_layers"]))]
    if any(k not in weights for k in needed):
        return None
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    enc = BertEncoder(weights, int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"]), float(cfg.get("layer_norm_eps", 1e-12)), cfg["hidden_act"],
                      int(cfg.get("pad_token_id") or 0))
    return enc, tokenizer
