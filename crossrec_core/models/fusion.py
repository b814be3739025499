"""The retrieval head (dot product of user state and item vector) and the fusion scorer that re-ranks.

Recommending = retrieve the top-N items by dot product over the whole catalogue, then re-rank them by
the fusion MLP's probability. The MLP sees concat(user, item, user*item, dot) and is trained with BCE
on the retrieval head's own top-N candidates, so its probability means "chance this retrieved item is
the next one" and thresholds on it are meaningful.
"""

from __future__ import annotations

import torch
from torch import nn

from crossrec_core.config import ModelConfig
from crossrec_core.models.item_encoder import ItemEncoder
from crossrec_core.models.user_encoder import UserEncoder


class FusionScorer(nn.Module):
    """MLP over concat(user state, item vector, user*item, dot) -> logit, residual on a scaled dot product.

    logit = scale * dot + bias + MLP(...). The MLP's last layer starts at zero, so an untrained (or
    switched-off) MLP re-ranks exactly like retrieval and the probability is a Platt-scaled dot product.
    """

    def __init__(self, d: int, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * d + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.d = d
        self.scale = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, user: torch.Tensor, item: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Return float (B, C) logits for user (B, D) against item (B, C, D).

        D >= d: columns past d are the log-prior columns (models/prior.py); they count in the dot
        product but the MLP only sees the learned d columns. ``extra`` (B, C) is added to the retrieval
        score before scaling (the weighted item-kNN term), so the probability ranks like retrieval.
        """
        u = user.unsqueeze(1).expand_as(item)  # (B, C, D)
        dot = (u * item).sum(-1, keepdim=True)  # (B, C, 1)
        ub, ib = u[..., : self.d], item[..., : self.d]  # (B, C, d)
        x = torch.cat([ub, ib, ub * ib, dot], dim=-1)  # (B, C, 3d + 1)
        retrieval = dot.squeeze(-1) if extra is None else dot.squeeze(-1) + extra
        return self.scale * retrieval + self.bias + self.mlp(x).squeeze(-1)

    def reset_mlp(self) -> None:
        """Switch the MLP's correction off (keep the calibrated dot product only)."""
        with torch.no_grad():
            self.mlp[-1].weight.zero_()
            self.mlp[-1].bias.zero_()


class CrossRecNet(nn.Module):
    """Item encoder + user encoder + fusion scorer; builds only layers from its config."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        n_items: int,
        n_categories: int,
        n_event_types: int,
        attr_vocab_size: int,
        text_dim: int,
        n_vector_columns: int,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_encoder = ItemEncoder(
            cfg.item,
            n_items=n_items,
            n_categories=n_categories,
            attr_vocab_size=attr_vocab_size,
            text_dim=text_dim,
            n_vector_columns=n_vector_columns,
        )
        self.user_encoder = UserEncoder(cfg.user, n_event_types=n_event_types)
        self.fusion = FusionScorer(cfg.dim)
        # (w_pop, w_cat) of the log-prior blended into retrieval (models/prior.py); chosen on validation
        self.register_buffer("prior_weights", torch.zeros(2, dtype=torch.float32))

    def user_states(
        self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, valid: torch.Tensor, item_table: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return float (B, T, d) user states for left-padded windows of item_idx (B, T).

        ``item_table`` (n_items, d) may be given to reuse precomputed item vectors.
        """
        safe = items.clamp(min=0)
        vecs = item_table[safe] if item_table is not None else self.item_encoder(safe)  # (B, T, d)
        return self.user_encoder(vecs, events, gaps, valid)
