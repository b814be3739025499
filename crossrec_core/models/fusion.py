"""The network: item encoder + user encoder (retrieval is their dot product) + the fusion scorer.

Recommending = retrieve the top-N items by dot product over the whole catalogue, then re-rank them by
the fusion scorer, an MLP over the cross-category features of each (history, candidate) pair
(models/features.py) fitted on held-out positions; its calibrated output is the probability shown.
"""

from __future__ import annotations

import torch
from torch import nn

from crossrec_core.config import ModelConfig
from crossrec_core.models.features import FEATURES, N_FEATURES
from crossrec_core.models.item_encoder import ItemEncoder
from crossrec_core.models.text import TEXT_DIM
from crossrec_core.models.user_encoder import UserEncoder


RETRIEVAL = FEATURES.index("retrieval")


class FusionScorer(nn.Module):
    """MLP over the cross-category features of a (history, candidate) pair -> logit (models/features.py).

    logit = retrieval + linear(x) + MLP(x) on standardised features x (mean / std stored as buffers, so
    they are saved with the weights): a residual on the retrieval score, whose linear part and last MLP
    layer start at zero. Why: the fit starts from retrieval's own order and moves only as far as the
    held-out candidates carry it; learnt from scratch, the scorer had to rediscover retrieval from one
    target per user first, and its re-rank lost to retrieval on test on several logs (bench/RESULTS.md).
    ``base_weight`` (a buffer) is 1 for that residual and 0 for models saved before it (no retrieval
    term). ``n_features`` is N_FEATURES, or fewer for a scorer saved before the last features were
    appended (it reads the first ``n_features`` columns, which keep their meaning). Fitted on held-out
    positions by ``training.fusion_fit.fit_fusion``; the probability a user sees is this logit through
    the model's ``Calibration``.
    """

    def __init__(self, n_features: int = N_FEATURES, hidden: int = 32) -> None:
        super().__init__()
        self.n_features = n_features
        self.linear = nn.Linear(n_features, 1)
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.register_buffer("base_weight", torch.ones(()))

    def reset_parameters(self, seed: int) -> None:
        """Re-initialise every weight from ``seed`` (each fold of the fit starts from the same kind of state):
        the residual layers (``linear`` and the MLP's last) start at zero, so the logit starts at retrieval."""
        gen = torch.Generator().manual_seed(int(seed))
        mlp_layers = [m for m in self.mlp if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for layer in [self.linear, *mlp_layers]:
                bound = 1.0 / float(layer.in_features) ** 0.5
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=gen) * 2 * bound - bound)
                layer.bias.zero_()
            if float(self.base_weight) != 0.0:
                self.linear.weight.zero_()
                mlp_layers[-1].weight.zero_()

    def set_normalisation(self, rows) -> None:  # noqa: ANN001 (numpy (n, F))
        """Store the mean and standard deviation of the training rows (n, F)."""
        t = torch.as_tensor(rows, dtype=torch.float32)[:, : self.n_features]
        with torch.no_grad():
            self.mean.copy_(t.mean(dim=0) if len(t) else torch.zeros(self.n_features))
            sd = t.std(dim=0) if len(t) > 1 else torch.ones(self.n_features)
            self.std.copy_(torch.where(sd > 1e-6, sd, torch.ones_like(sd)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return float (B, N) logits for features (B, N, F)."""
        x = (features[..., : self.n_features] - self.mean) / self.std  # a scorer saved with fewer features
        return (self.linear(x) + self.mlp(x)).squeeze(-1) + self.base_weight * features[..., RETRIEVAL]


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
        self.fusion = FusionScorer()
        # the next-category head (TrainConfig.category_loss_weight > 0): user state -> category logits
        self.category_head = nn.Linear(cfg.user.dim, max(n_categories, 1)) if cfg.train.category_loss_weight > 0 else None
        # (w_pop, w_cat) of the log-prior blended into retrieval (models/prior.py); chosen on validation
        self.register_buffer("prior_weights", torch.zeros(2, dtype=torch.float32))

    def user_states(
        self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, valid: torch.Tensor, item_table: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Return float (B, T, d) user states for left-padded windows of item_idx (B, T); (B, d) of the last column with
        ``last_only``.

        ``item_table`` (n_items, d) may be given to reuse precomputed item vectors.
        """
        safe = items.clamp(min=0)
        vecs = self.item_encoder.input_vectors(safe, item_table)  # (B, T, d)
        return self.user_encoder(vecs, events, gaps, valid, last_only=last_only)


def build_net(cfg: ModelConfig, *, n_items: int, n_categories: int, n_event_types: int, attr_vocab_size: int, use_text: bool, n_vector_columns: int) -> CrossRecNet:
    """Return a fresh CrossRecNet sized for a vocabulary."""
    return CrossRecNet(
        cfg,
        n_items=n_items,
        n_categories=n_categories,
        n_event_types=n_event_types,
        attr_vocab_size=attr_vocab_size,
        text_dim=TEXT_DIM if use_text else 0,
        n_vector_columns=n_vector_columns,
    )
