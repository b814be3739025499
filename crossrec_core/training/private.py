"""Differentially private training (`crossrec train --dp-epsilon E`): DP-SGD with one shopper as the privacy unit.

What is private: the encoders' weights (item encoder: ID, category, attribute and text-projection
parameters; user encoder; category head), released after ``TrainConfig.dp_epochs`` passes of DP-SGD
(Abadi et al. 2016) at the (epsilon, delta) the RDP accountant of Opacus reports. Per step:

1. Poisson sampling of shoppers: each shopper is in a step's batch with probability ``q`` (the expected
   batch is ``TrainConfig.batch_size``), independently, as the accountant assumes.
2. Every shopper contributes ONE sample: the window of their most recent ``max_len`` training targets
   (the ordinary loop cuts long histories into several windows; here the older chunks are dropped), so a
   shopper's whole contribution to a step is one gradient.
3. That gradient is computed per shopper with torch.func (vmap over grad; a loop for the recurrent
   encoders, whose packed sequences vmap cannot batch), over every trained parameter including the
   catalogue re-encoding (Opacus's GradSampleModule hooks assume each layer sees the batch in its first
   dimension, which the catalogue pass does not), clipped to L2 norm ``dp_max_grad_norm``, summed, and
   Gaussian noise of std ``noise_multiplier * dp_max_grad_norm`` is added before the Adam step.
4. The noise multiplier is the smallest that keeps the planned steps within the requested epsilon
   (opacus.accountants.utils.get_noise_multiplier, RDP accountant); the accountant then reports the
   epsilon actually spent for the steps run, at delta = ``dp_delta`` or 1 / number of shoppers.

The loss is the sampled softmax (shared uniform negatives, drawn independently of the data): its
per-shopper gradient touches only the shopper's items and the negatives, where the full softmax would
make every per-shopper gradient pass through the whole catalogue.

What is switched off, because it would be fitted on shoppers' data without noise: the log-prior blend
(popularity and category flow counts), the item-kNN term, the fusion scorer and its calibration, early
stopping (the last epoch is kept; a best epoch chosen on validation would be a non-private choice),
the cold-item ID mask (which items anyone bought), the saved training-event hashes and the log's
fingerprint (so the studio cannot tell which workspace dataset a private model came from). The model keeps
zero popularity and category transitions. docs/SECURITY.md lists what this covers and what it does not.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from crossrec_core.config import ModelConfig
from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.device import pick_device, seed_everything
from crossrec_core.errors import ConfigError, DataError
from crossrec_core.evaluation.metrics import ndcg_hr
from crossrec_core.models.fusion import build_net
from crossrec_core.models.trained import TrainedModel
from crossrec_core.training.epochs import Windows
from crossrec_core.training.loop import _fill_buffers, build_windows, compute_item_features, training_windows, validation_targets
from crossrec_core.training.optim import make_adam
from crossrec_core.training.progress import Phase, TrainProgress
from crossrec_core.training.tuning import valid_ranks

log = logging.getLogger(__name__)

# RDP orders the accountant tries: Opacus's defaults plus larger ones, which give the tightest bound when
# the noise is small against the number of steps (Opacus warns "optimal order is the largest alpha")
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 192, 256, 384, 512, 1024]
MICRO_BATCH = 32  # shoppers whose per-shopper gradients are held at once (memory: 32 x every parameter)


@dataclass(frozen=True)
class PrivacyPlan:
    """The DP-SGD settings of one run: sampling rate, steps, noise and clipping, and the target budget."""

    epsilon: float  # requested
    delta: float
    sample_rate: float
    steps: int
    noise_multiplier: float
    max_grad_norm: float
    n_users: int


def private_config(cfg: ModelConfig, epsilon: float, epochs: int | None = None) -> ModelConfig:
    """Return cfg with private training on at ``epsilon`` (and ``epochs`` private passes when given)."""
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ConfigError(f"--dp-epsilon must be a number above 0 (for example 1, 4 or 8), got {epsilon!r}. Smaller means more private.")
    changes = {"dp_epsilon": float(epsilon)} | ({"dp_epochs": int(epochs)} if epochs is not None else {})
    return replace(cfg, train=replace(cfg.train, **changes))


# DP-SGD's noise is shared out over the shoppers of a step: below this many, expect most of the quality gone.
# Measured (bench/RESULTS.md "Private training"): hm-fashion-oneday, 2,954 shoppers, lost 66 % of NDCG@10 at
# epsilon 8; taobao-userbehavior, 833 shoppers, lost 97 %; amazon-food-kitchen, 9,398 shoppers, 81 % (3 passes).
FEW_SHOPPERS = 10_000


def few_shoppers_warning(n_users: int) -> str | None:
    """Return what to tell someone about to train privately on ``n_users`` shoppers, or None when they are enough."""
    if n_users >= FEW_SHOPPERS:
        return None
    return (f"This log has {n_users:,} shoppers: private training needs tens of thousands. On the logs measured "
            "(833, 2,954 and 9,398 shoppers) private models lost 66-97 % of their accuracy at epsilon 8, two of "
            "them below a plain popularity list. Train privately on a larger log, or train without it.")


def privacy_line(p: dict) -> str:
    """Return the one-line privacy report `crossrec train` prints."""
    eps = "not private (no noise)" if p.get("epsilon") is None else f"epsilon {p['epsilon']:.2f} spent (asked {p['requested_epsilon']:g})"
    return (f"differential privacy: {eps}, delta {p['delta']:.2g}, per shopper (whole history); noise {p['noise_multiplier']:.2f} x "
            f"clip {p['max_grad_norm']:g} over {p['steps']} steps (sampling rate {p['sample_rate']:.3f}, {p['accountant']} accountant)")


def plan_privacy(n_samples: int, n_users: int, cfg: ModelConfig) -> PrivacyPlan:
    """Return the noise multiplier that keeps ``dp_epochs`` passes of Poisson-sampled steps within dp_epsilon.

    ``n_samples``: the shoppers with a training window (2+ training events; the others have nothing to
    contribute, and whether a shopper has one depends on that shopper alone); ``n_users``: all shoppers.
    """
    tc = cfg.train
    if tc.dp_epsilon is None:
        raise ConfigError("Private training needs an epsilon: pass --dp-epsilon (for example 4).")
    if n_samples < 2:
        raise DataError("Private training needs at least 2 shoppers with 2 or more training events: the privacy unit is one shopper.")
    delta = float(tc.dp_delta) if tc.dp_delta is not None else 1.0 / n_users
    q = min(1.0, tc.batch_size / n_samples)
    steps = tc.dp_epochs * int(math.ceil(1.0 / q))
    from opacus.accountants.utils import get_noise_multiplier  # slow: opacus imports its privacy engine (~1.5 s)

    sigma = get_noise_multiplier(target_epsilon=float(tc.dp_epsilon), target_delta=delta, sample_rate=q, steps=steps, accountant="rdp", alphas=ALPHAS)
    return PrivacyPlan(float(tc.dp_epsilon), delta, q, steps, float(sigma), float(tc.dp_max_grad_norm), int(n_users))


class PerUserLoss(nn.Module):
    """The sampled-softmax next-item loss of each row (one row = one shopper's window): float (B,)."""

    def __init__(self, net) -> None:  # noqa: ANN001
        super().__init__()
        self.item_encoder = net.item_encoder
        self.user_encoder = net.user_encoder
        self.category_head = net.category_head
        self.category_weight = float(net.cfg.train.category_loss_weight) if net.category_head is not None else 0.0

    def forward(self, items, events, gaps, valid, targets, weights, negatives):  # noqa: ANN001
        h = self.user_encoder(self.item_encoder.input_vectors(items.clamp(min=0)), events, gaps, valid)  # (B, T, d)
        pos = (h * self.item_encoder(targets)).sum(-1, keepdim=True)  # (B, T, 1)
        neg = h @ self.item_encoder(negatives).T  # (B, T, K)
        neg = neg.masked_fill(negatives.view(1, 1, -1) == targets.unsqueeze(-1), float("-inf"))  # accidental hits
        logits = torch.cat([pos, neg], dim=-1).float()
        loss = -torch.log_softmax(logits, dim=-1)[..., 0]  # (B, T)
        if self.category_head is not None:
            cat = torch.log_softmax(self.category_head(h).float(), dim=-1)
            loss = loss - self.category_weight * cat.gather(-1, self.item_encoder.item_category[targets].unsqueeze(-1)).squeeze(-1)
        # positions without a target (padding, repeats) weigh 0; no boolean indexing, so vmap can batch it
        return (loss * weights).sum(-1) / weights.sum(-1).clamp(min=1e-6)


def per_user_gradients(core: PerUserLoss, batch: dict[str, torch.Tensor], negatives: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return {parameter name: (B, *shape)} the gradient of each row's loss, row by row."""
    names = [n for n, p in core.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in core.named_parameters() if p.requires_grad}
    buffers = dict(core.named_buffers())
    keys = ("items", "events", "gaps", "valid", "targets", "weights")
    if core.user_encoder.cfg.kind == "transformer":
        def one(p, items, events, gaps, valid, targets, weights):  # noqa: ANN001
            row = (items[None], events[None], gaps[None], valid[None], targets[None], weights[None], negatives)
            return functional_call(core, (p, buffers), row).sum()

        return vmap(grad(one), in_dims=(None,) + (0,) * len(keys), randomness="different")(params, *(batch[k] for k in keys))
    # GRU / LSTM: pack_padded_sequence has no vmap rule, so one backward per shopper
    out = {n: torch.zeros((len(batch["items"]),) + params[n].shape, device=params[n].device) for n in names}
    plist = [p for n, p in core.named_parameters() if p.requires_grad]
    for i in range(len(batch["items"])):
        loss = core(*(batch[k][i : i + 1] for k in keys), negatives).sum()
        for n, g in zip(names, torch.autograd.grad(loss, plist, allow_unused=True)):
            if g is not None:
                out[n][i] = g
    return out


def clip_and_sum(grads: dict[str, torch.Tensor], max_norm: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Return (sum over rows of each row's gradient scaled to L2 norm <= max_norm, the rows' norms before)."""
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads.values())
    norms = sq.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (B,)
    return {n: torch.einsum("b,b...->...", scale, g) for n, g in grads.items()}, norms


def noisy_gradient(core: PerUserLoss, batch: dict[str, torch.Tensor], negatives: torch.Tensor, plan: PrivacyPlan,
                   expected_batch: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Return the DP-SGD gradient of one step: (sum of clipped per-shopper gradients + noise) / expected batch."""
    params = {n: p for n, p in core.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    n = len(batch["items"])
    for a in range(0, n, MICRO_BATCH):
        g = per_user_gradients(core, {k: v[a : a + MICRO_BATCH] for k, v in batch.items()}, negatives)
        summed, _ = clip_and_sum(g, plan.max_grad_norm)
        for k in total:
            total[k] += summed[k]
    std = plan.noise_multiplier * plan.max_grad_norm
    # noise on every trained parameter, touched by this batch or not (an empty batch still gets its noise)
    return {k: (v + std * torch.randn(v.shape, generator=gen).to(v.device)) / expected_batch for k, v in total.items()}


def one_window_per_user(ds: InteractionDataset, split, cfg: ModelConfig) -> Windows:  # noqa: ANN001
    """Return build_windows' windows, keeping only each user's most recent one (its last max_len targets)."""
    windows = build_windows(ds, split, cfg)
    users, ends = training_windows(ds.seqs, split.train_end, cfg.user.max_len)  # the same rows, in order
    keep = torch.from_numpy(np.flatnonzero(ends == np.asarray(split.train_end, dtype=np.int64)[users]))
    assert len(users) == windows.n and len(np.unique(users[keep.numpy()])) == len(keep)
    tensors = {k: v[keep] for k, v in windows.tensors.items()}
    return Windows(tensors, windows.length[keep.numpy()], int(tensors["weights"].gt(0).sum()))


def train_private(ds: InteractionDataset, config: ModelConfig, *, on_progress: Callable[[TrainProgress], None] | None = None,
                  name: str | None = None, noise_free: bool = False) -> TrainedModel:
    """Return a TrainedModel fit with DP-SGD (module docstring); ``model.metrics["privacy"]`` has the epsilon spent.

    ``noise_free`` (benchmarks only) runs the same clipped steps without noise: it isolates the cost of the
    private setup from the cost of the noise, and is NOT private (its epsilon is reported as None).
    """
    cfg = replace(config, train=replace(config.train, prior_blend=False, knn_blend=False, fusion_epochs=0, loss="sampled"))
    tc = cfg.train
    if ds.n_events < 2 or ds.n_items < 2:
        raise DataError(f"'{ds.name}' has {ds.n_events} events on {ds.n_items} items; training needs at least 2 of each.")
    device = pick_device(tc.device)
    seed_everything(tc.seed)
    t0 = time.perf_counter()

    def report(**kw) -> None:
        if on_progress is not None:
            base = dict(epoch=0, n_epochs=tc.dp_epochs, step=0, n_steps=0, loss=None, valid_ndcg10=None)
            base.update(kw)
            on_progress(TrainProgress(elapsed_s=time.perf_counter() - t0, **base))

    feats = compute_item_features(ds, cfg, device, lambda done, total: report(step=done, n_steps=total, phase=Phase.TEXT))
    split = ds.leave_last_out()
    net = build_net(cfg, n_items=ds.n_items, n_categories=ds.n_categories, n_event_types=len(ds.event_names),
                    attr_vocab_size=len(feats["attr_vocab"]), use_text=feats["text"] is not None,
                    n_vector_columns=0 if feats["vectors"] is None else feats["vectors"].shape[1])
    # every ID row trainable: the set of items anyone bought is itself the shoppers' data
    _fill_buffers(net, ds, feats, np.ones(ds.n_items, dtype=np.float32), shrink=False)
    net.to(device)
    windows = one_window_per_user(ds, split, cfg)
    plan = plan_privacy(windows.n, ds.n_users, cfg)
    if noise_free:
        plan = replace(plan, noise_multiplier=0.0)
    v_users, v_ends, v_targets = validation_targets(ds, split, tc)
    zeros_c = np.zeros((ds.n_categories, ds.n_categories), dtype=np.float32)
    model = TrainedModel(
        name=name or ds.name, config=cfg, net=net, item_ids=ds.item_ids, item_titles=ds.item_titles,
        category_names=ds.category_names, item_category=ds.item_category, event_names=ds.event_names,
        popularity=np.zeros(ds.n_items, dtype=np.float32), category_transitions=zeros_c, train_event_hashes=None,
        # no data fingerprint: an exact hash of the log would tell which of two candidate logs it was fitted on
        metrics={}, data_fingerprint="",
        attribute_columns=ds.attribute_columns if len(feats["attr_vocab"]) > 2 else (),
        vector_columns=ds.vector_columns if feats["vectors"] is not None else (),
        attr_vocab=feats["attr_vocab"], device=device, batch_size=tc.eval_batch_size,
    )
    core = PerUserLoss(net)
    # Adam on the noisy gradient is post-processing: it costs no privacy
    opt = make_adam([p for p in core.parameters() if p.requires_grad], lr=tc.lr, weight_decay=tc.weight_decay)
    from opacus.accountants import RDPAccountant  # slow: opacus imports its privacy engine (~1.5 s)

    accountant = RDPAccountant()
    # the shopper sampling and the noise come from fresh OS randomness, never from tc.seed: the seed is saved
    # with the model, and noise anyone can regenerate protects nothing (so a private run is not reproducible)
    rng = np.random.default_rng(secrets.randbits(128))
    gen = torch.Generator().manual_seed(secrets.randbits(63))
    n_neg = min(tc.n_negatives, ds.n_items)
    expected = plan.sample_rate * windows.n
    steps_per_epoch = max(1, plan.steps // tc.dp_epochs)
    log.info("private training %s: %d shoppers, q=%.4f, %d steps, noise %.3f, clip %.2f", ds.name, ds.n_users, plan.sample_rate,
             plan.steps, plan.noise_multiplier, plan.max_grad_norm)
    history, step_no = [], 0
    for epoch in range(1, tc.dp_epochs + 1):
        net.train()
        t_ep, losses = time.perf_counter(), []
        for step in range(1, steps_per_epoch + 1):
            # Poisson sampling: each shopper with a training window in this step's batch with probability q
            pick = np.flatnonzero(rng.random(windows.n) < plan.sample_rate)
            L = max(int(windows.length[pick].max()) if len(pick) else 1, 1)
            bt = {k: v[torch.from_numpy(pick)][:, -L:].to(device) for k, v in windows.tensors.items()}
            negs = torch.randint(0, ds.n_items, (n_neg,), generator=gen).to(device)
            g = noisy_gradient(core, bt, negs, plan, expected, gen)
            opt.zero_grad()
            for n_, p in core.named_parameters():
                if n_ in g:
                    p.grad = g[n_]
            opt.step()
            accountant.step(noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate)
            step_no += 1
            if len(pick):
                with torch.no_grad():
                    losses.append(float(core(bt["items"], bt["events"], bt["gaps"], bt["valid"], bt["targets"], bt["weights"], negs).mean()))
            report(epoch=epoch, step=step, n_steps=steps_per_epoch, loss=float(np.mean(losses)) if losses else None, phase=Phase.TRAIN)
        model.invalidate_cache()
        net.eval()
        vm = ndcg_hr(valid_ranks(model, ds.seqs, v_users, v_ends, v_targets)) if len(v_users) else {"ndcg10": 0.0, "hr10": 0.0, "n": 0}
        rec = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else 0.0, **vm, "train_s": time.perf_counter() - t_ep}
        history.append(rec)
        log.info("private epoch %d: loss %.4f valid ndcg@10 %.4f", epoch, rec["loss"], vm["ndcg10"])
        report(epoch=epoch, step=steps_per_epoch, n_steps=steps_per_epoch, loss=rec["loss"], valid_ndcg10=vm["ndcg10"], phase=Phase.VALID)
    for p in net.parameters():
        p.grad = None
    spent = accountant.get_epsilon(plan.delta, alphas=ALPHAS) if plan.noise_multiplier > 0 else float("inf")
    last = history[-1]
    model.metrics = {
        "valid": {k: last[k] for k in ("ndcg10", "hr10", "n")} | {"fusion_rerank": False},
        "history": history,
        "best_epoch": int(last["epoch"]),  # the last epoch: no choice on validation under DP
        "train_seconds": float(time.perf_counter() - t0),
        "loss": "sampled",
        "n_train_windows": int(windows.n),
        "trained_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "privacy": {
            "epsilon": None if not math.isfinite(spent) else float(spent), "requested_epsilon": plan.epsilon, "delta": plan.delta,
            "unit": "shopper (whole history)", "noise_multiplier": plan.noise_multiplier, "max_grad_norm": plan.max_grad_norm,
            "sample_rate": plan.sample_rate, "steps": step_no, "accountant": "opacus RDP", "n_users": plan.n_users,
        },
    }
    report(epoch=tc.dp_epochs, phase=Phase.DONE)
    return model
