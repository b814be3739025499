"""The optimisers of the fit loop: fused Adam for dense parameters, lazy Adam for a sparse item-ID table."""

from __future__ import annotations

import torch

from crossrec_core.device import cpu_has_native_bf16
from crossrec_core.errors import ConfigError
from crossrec_core.models.fusion import CrossRecNet


def make_adam(params, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Return Adam with its fused kernel where this torch has one (CPU and CUDA), else the default.

    Why: the item-ID table takes a dense Adam update every step; on a 500k-item catalogue the fused
    kernel does that step in about a third of the time of the per-tensor loop (bench/RESULTS.md).
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # e.g. a device without a fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class FitOptimizer:
    """The optimisers of the fit loop, stepped together: Adam for the dense parameters and, when the
    item-ID table has a sparse gradient, a lazy Adam (torch.optim.SparseAdam) for that table.

    Why: with a sampled loss a step touches a few thousand of the table's rows; a dense gradient and
    Adam update of all of them made a step cost grow with the catalogue (500k items: ~70 % of a step,
    bench/RESULTS.md). SparseAdam updates only the rows a batch touched.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        """Step every optimiser; with an enabled ``scaler`` (float16 on a GPU), through it, then update
        its scale once (a step with inf / NaN gradients is skipped, as GradScaler does)."""
        if scaler is None or not scaler.is_enabled():
            for o in self.optimizers:
                o.step()
            return
        for o in self.optimizers:
            scaler.step(o)
        scaler.update()

    @property
    def is_sparse(self) -> bool:
        return any(isinstance(o, torch.optim.SparseAdam) for o in self.optimizers)


def make_fit_optimizer(net: CrossRecNet, tc, *, mode: str, distributed: bool) -> FitOptimizer:
    """Return the fit loop's optimiser for every parameter but the fusion head's (trained after).

    The item-ID table takes the sparse path when the catalogue has at least tc.sparse_id_min_items
    items, the loss is sampled or BCE (the full softmax touches every row anyway), there is no
    weight decay (SparseAdam has none) and training is not distributed (DDP's all-reduce is for
    dense gradients). Sets the table's ``sparse`` flag to match; ``end_fit`` clears it.
    """
    if getattr(tc, "dp_epsilon", None) is not None:  # this optimiser would apply noiseless gradients
        raise ConfigError("Private training (dp_epsilon) runs through training/pipeline.train_and_save or training/private.train_private.")
    named = [(n, p) for n, p in net.named_parameters() if not n.startswith("fusion.")]
    id_emb = getattr(net.item_encoder, "id_emb", None)
    sparse = bool(
        id_emb is not None and id_emb.num_embeddings >= tc.sparse_id_min_items and mode in ("sampled", "bce")
        and tc.weight_decay == 0.0 and not distributed
    )
    if not sparse:
        return FitOptimizer([make_adam([p for _, p in named], lr=tc.lr, weight_decay=tc.weight_decay)])
    id_emb.sparse = True
    dense = [p for _, p in named if p is not id_emb.weight]
    return FitOptimizer([make_adam(dense, lr=tc.lr, weight_decay=0.0), torch.optim.SparseAdam([id_emb.weight], lr=tc.lr)])


def end_fit(net: CrossRecNet) -> None:
    """Return the item-ID table to dense gradients (what fine-tuning and the fusion head expect)."""
    id_emb = getattr(net.item_encoder, "id_emb", None)
    if id_emb is not None:
        id_emb.sparse = False


def cpu_product_dtype(device_type: str, cpu_bf16: bool) -> torch.dtype | None:
    """Return the dtype of the full softmax's products in a CPU training step (TrainConfig.cpu_bf16): bfloat16 where
    the CPU multiplies it natively, else None (float32). A GPU runs the whole step under autocast instead (amp_plan)."""
    return torch.bfloat16 if device_type == "cpu" and cpu_bf16 and cpu_has_native_bf16() else None


def amp_plan(device_type: str, bf16_supported: bool) -> tuple[bool, torch.dtype, bool]:
    """Return (autocast on, its dtype, whether gradients need a GradScaler) for a device.

    On a GPU the steps run under autocast: in bfloat16 where the GPU has it (same exponent range as
    float32, no scaling), else in float16, whose small gradients underflow to 0 unless the loss is
    scaled first (torch.amp.GradScaler). On CPU: float32, no autocast.
    """
    if device_type != "cuda":
        return False, torch.float32, False
    return (True, torch.bfloat16, False) if bf16_supported else (True, torch.float16, True)
