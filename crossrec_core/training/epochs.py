"""One fit run's epochs (``Fit``): its batches, steps, validation after each epoch, early stopping and checkpoints.

training/loop.py builds what a run needs (the network, the windows, the validation targets) and hands the runs to
the race (training/batch_race.py), which calls ``Fit.run_epoch`` in turns. A run's state (``FitState``) is what
its checkpoint saves, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from crossrec_core.config import ModelConfig
from crossrec_core.data.dataset import InteractionDataset
from crossrec_core.models.fusion import CrossRecNet
from crossrec_core.models.trained import TrainedModel
from crossrec_core.training.checkpoint import load_checkpoint, save_checkpoint
from crossrec_core.training.loss import RetrievalLoss
from crossrec_core.training.optim import FitOptimizer, amp_plan, cpu_product_dtype
from crossrec_core.training.progress import Phase
from crossrec_core.training.stopping import NeighbourTerms, better, per_user_ndcg, stopping_figures

log = logging.getLogger(__name__)


@dataclass
class Windows:
    """The training windows as tensors, built once: inputs, next-item targets and their weights."""

    tensors: dict[str, torch.Tensor]
    length: np.ndarray  # int64 (n_windows,) real events per window
    n_targets: int  # positions with a positive weight

    @property
    def n(self) -> int:
        return len(self.length)


def epoch_batches(length: np.ndarray, n_batches: int, rng: np.random.Generator, buckets: bool) -> list[np.ndarray]:
    """Return one epoch's batches of window indices, in random order: windows of similar ``length`` together
    (less padding to encode), or, without ``buckets``, drawn at random (TrainConfig.length_buckets)."""
    shuffled = rng.random(len(length))
    order = np.lexsort((shuffled, length)) if buckets else np.argsort(shuffled)
    batches = [b for b in np.array_split(order, n_batches) if len(b)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class FitState:
    """What the epochs carry (and a checkpoint saves): the per-epoch log, the best epoch and its weights."""

    history: list[dict]
    best: dict
    best_state: dict
    bad_epochs: int = 0
    start_epoch: int = 1
    best_per_user: np.ndarray | None = None  # the best epoch's per-shopper validation NDCG@10 (the race compares them)
    rounds: list[dict] = field(default_factory=list)  # the race's log (training/batch_race.py), as checkpointed
    average: dict[str, torch.Tensor] | None = None  # the weights' moving average a resumed run starts from (WeightAverage)


class WeightAverage:
    """An exponential moving average of a network's parameters, updated after every step (TrainConfig.ema_half_life).

    Why: measured, the average ranks better where the encoders carry the list (drift-b +3.6 % over three seeds) and
    is level elsewhere (bench/RESULTS.md, session 17); the likely reason is that at lr 2e-3 the last step's weights
    wander around the minimum and their average sits nearer its middle. Training steps are unchanged: only the
    weights validation judges, and the best epoch keeps, are the average. It starts at the first step's weights.
    """

    def __init__(self, net: nn.Module, half_life_steps: float, average: dict[str, torch.Tensor] | None = None) -> None:
        self.params = dict(net.named_parameters())
        self.decay = 0.5 ** (1.0 / max(float(half_life_steps), 1e-9))
        self.average = average
        # Tables with a sparse gradient (the item-ID table on a large catalogue, training/optim.py) change only in the
        # rows a step touched: their rows' averages are brought up to date lazily (see before_step), not lerped
        # whole every step (the 500k-row table of the 10M-event log: 20 % of a step).
        self.sparse = {n for n, p in self.params.items() if _has_sparse_gradient(net, p)}
        self.steps = 0
        self.pending: dict[str, torch.Tensor] = {}  # the rows this step changes (before_step)
        self.last = {n: torch.zeros(self.params[n].shape[0], dtype=torch.int64, device=self.params[n].device) for n in self.sparse}

    def _catch_up(self, name: str, rows: torch.Tensor | None) -> None:
        """Bring ``rows`` (all when None) of a sparse table's average to step ``steps``: a row unchanged for m steps
        at weights p moves from a to p + decay**m (a - p), what m lerps towards the same p give."""
        p, a, last = self.params[name].detach(), self.average[name], self.last[name]
        if rows is None:
            rows = torch.arange(p.shape[0], device=p.device)
        m = (self.steps - last[rows]).to(p.dtype)
        a[rows] = p[rows] + torch.pow(torch.tensor(self.decay, dtype=p.dtype, device=p.device), m)[:, None] * (a[rows] - p[rows])
        last[rows] = self.steps

    def before_step(self) -> None:
        """Call between backward and the optimiser's step: the rows the step will change are caught up while they
        still hold the weights they held since their last change."""
        if self.average is None:
            return
        with torch.no_grad():
            for n in self.sparse:
                g = self.params[n].grad
                if g is not None:
                    self.pending[n] = torch.unique(g.coalesce().indices()[0])
                    self._catch_up(n, self.pending[n])

    def update(self) -> None:
        """Move the average towards the current weights (the first call copies them); a sparse table's untouched
        rows wait for their next change or for ``synced``."""
        with torch.no_grad():
            self.steps += 1
            if self.average is None:
                self.average = {n: p.detach().clone() for n, p in self.params.items()}
                for last in self.last.values():
                    last.fill_(self.steps)
                return
            for n, p in self.params.items():
                if n not in self.sparse:
                    self.average[n].lerp_(p.detach(), 1.0 - self.decay)
                    continue
                rows = self.pending.pop(n, None)
                if rows is not None:  # caught up in before_step, then changed by this step
                    self.average[n][rows] = torch.lerp(self.average[n][rows], p.detach()[rows], 1.0 - self.decay)
                    self.last[n][rows] = self.steps

    def synced(self) -> dict[str, torch.Tensor] | None:
        """Return the average with every row up to date (what validation and a checkpoint read)."""
        if self.average is not None:
            with torch.no_grad():
                for n in self.sparse:
                    self._catch_up(n, None)
        return self.average

    @contextlib.contextmanager
    def swapped_in(self):
        """Hold the average in the network's parameters for the block, then put the training weights back."""
        if self.synced() is None:
            yield
            return
        with torch.no_grad():
            current = {n: p.detach().clone() for n, p in self.params.items()}
            for n, p in self.params.items():
                p.copy_(self.average[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(current[n])


def _has_sparse_gradient(net: nn.Module, p: torch.Tensor) -> bool:
    """Return whether ``p`` is the weight of an embedding table that takes sparse gradients."""
    return any(isinstance(m, nn.Embedding) and m.sparse and m.weight is p for m in net.modules())


class Distributed:
    """This process's place under torch.distributed (torchrun): rank, world size; 0 and 1 when alone."""

    def __init__(self) -> None:
        self.on = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if self.on else 0
        self.world = torch.distributed.get_world_size() if self.on else 1


def restored_state(net: CrossRecNet, opt: FitOptimizer, ckpt: Path | None, ds: InteractionDataset, cfg: ModelConfig, start: dict) -> FitState:
    """Return a fresh fit state, or the one of the last checkpoint in ``ckpt`` (weights and optimiser restored)."""
    state = FitState(history=[], best={"ndcg10": -1.0, "encoders": -1.0, "epoch": 0}, best_state={k: v.clone() for k, v in start.items()})
    restored = load_checkpoint(ckpt, net, opt, fingerprint=ds.fingerprint(), config=cfg.to_dict()) if ckpt is not None else None
    if restored is not None:
        state.best_state, saved = restored
        state.history, state.best, state.bad_epochs = saved["history"], saved["best"], saved["bad_epochs"]
        state.start_epoch = int(saved["epoch"]) + 1
        state.best_per_user = None if saved.get("best_per_user") is None else np.asarray(saved["best_per_user"], dtype=np.float64)
        state.rounds = list(saved.get("rounds") or [])
        state.average = saved.get("average")
        log.info("resuming from epoch %d (best %s)", saved["epoch"], state.best)
    if state.bad_epochs >= cfg.train.patience:
        state.start_epoch = cfg.train.epochs + 1
    return state


class Fit:
    """One fit run's epochs: batches of similar length (or random) in random order, a validation NDCG@10 after
    each epoch (of retrieval with its neighbour term, training/stopping.py), early stopping after ``patience``
    epochs without a better one, a checkpoint per epoch. The race (training/batch_race.py) calls ``run_epoch``."""

    def __init__(
        self, model: TrainedModel, cfg: ModelConfig, ds: InteractionDataset, windows: Windows,
        valid: tuple[np.ndarray, np.ndarray, np.ndarray, NeighbourTerms | None], opt: FitOptimizer, mode: str, state: FitState,
        device: torch.device, dist: Distributed, ckpt: Path | None, report, label: str,
    ) -> None:
        self.model, self.cfg, self.ds, self.windows, self.valid, self.opt, self.mode = model, cfg, ds, windows, valid, opt, mode
        self.state, self.device, self.dist, self.ckpt, self.report, self.label = state, device, dist, ckpt, report, label
        tc = cfg.train
        self.loss_mod = RetrievalLoss(model.net, mode, tc.n_negatives)
        self.loss_mod.low = cpu_product_dtype(device.type, tc.cpu_bf16)  # the full softmax's products (training/softmax.py)
        self.loss_mod.sampled_low = self.loss_mod.low
        self.step_mod = (nn.parallel.DistributedDataParallel(self.loss_mod, device_ids=[device.index] if device.type == "cuda" else None)
                         if dist.on else self.loss_mod)
        self.use_amp, self.amp_dtype, scaled = amp_plan(device.type, device.type == "cuda" and torch.cuda.is_bf16_supported())
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaled)
        # a multiple of the world size, so every DDP rank runs the same number of steps (no hang)
        self.n_batches_total = -(-(-(-windows.n // tc.batch_size)) // dist.world) * dist.world
        self.n_steps = self.n_batches_total // dist.world
        if tc.step_mean == "target":  # every target weighs the same in whichever batch it falls
            self.loss_mod.norm = float(windows.tensors["weights"].sum()) / self.n_batches_total
        self.average = WeightAverage(model.net, tc.ema_half_life * self.n_steps, state.average) if tc.ema_half_life > 0 else None
        log.info("training %s (%s): %d windows, %d steps/epoch, loss=%s%s, device=%s", ds.name, label, windows.n, self.n_steps, mode,
                 " (sparse item-ID gradient)" if opt.is_sparse else "", device)

    @property
    def done(self) -> bool:
        """Whether early stopping (or the epoch cap) has ended this run."""
        return self.state.bad_epochs >= self.cfg.train.patience or self.state.start_epoch > self.cfg.train.epochs

    def run_epoch(self) -> None:
        """Train epoch ``state.start_epoch``, validate it, keep the best weights, checkpoint, and move on by one."""
        model, ds, windows, state, device, dist, tc = self.model, self.ds, self.windows, self.state, self.device, self.dist, self.cfg.train
        net, epoch, bs = model.net, int(state.start_epoch), tc.batch_size
        model.config = self.cfg
        # per-epoch seeds make resume reproduce an uninterrupted run exactly, and the runs' turns independent
        torch.manual_seed(tc.seed * 1009 + epoch)
        rng = np.random.default_rng([tc.seed, epoch])
        gen = torch.Generator().manual_seed(tc.seed * 7919 + epoch)
        batches = epoch_batches(windows.length, self.n_batches_total, rng, tc.length_buckets)
        if dist.on:
            batches = batches[dist.rank :: dist.world]
            if len(batches) < self.n_steps:  # fewer windows than ranks: repeat one so every rank steps
                batches = batches + batches[: self.n_steps - len(batches)] if batches else [np.arange(1)] * self.n_steps
        net.train()
        t_ep = time.perf_counter()
        losses = []
        progress = dict(epoch=epoch, n_epochs=tc.epochs, run=self.label)
        for step, b in enumerate(batches, start=1):
            L = int(windows.length[b].max())
            bt = {k: v.index_select(0, torch.from_numpy(b))[:, -L:].to(device) for k, v in windows.tensors.items()}
            negs = torch.randint(0, ds.n_items, (tc.n_negatives if self.mode == "sampled" else (bs * L if self.mode == "bce" else 1),), generator=gen).to(device)
            with torch.autocast(device_type=device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                loss = self.step_mod(bt["items"], bt["events"], bt["gaps"], bt["valid"], bt["targets"], bt["weights"], negs)
            self.opt.zero_grad()
            self.scaler.scale(loss).backward()  # fp16: the loss scaled so small gradients do not flush to 0
            if self.average is not None:
                self.average.before_step()
            self.opt.step(self.scaler)
            if self.average is not None:
                self.average.update()
            losses.append(float(loss.detach()))
            if step % tc.progress_every == 0 or step == len(batches):
                self.report(**progress, step=step, n_steps=len(batches), loss=float(np.mean(losses[-tc.progress_every:])), phase=Phase.TRAIN)
        train_s = time.perf_counter() - t_ep
        self.report(**progress, step=len(batches), n_steps=len(batches), loss=float(np.mean(losses)), phase=Phase.VALID)
        v_users, v_ends, v_targets, terms = self.valid
        with self.average.swapped_in() if self.average is not None else contextlib.nullcontext():
            model.invalidate_cache()
            vm = stopping_figures(model, ds.seqs, v_users, v_ends, v_targets, terms)
            ranks = vm.pop("stop_ranks")
            improved = better(vm, state.best)
            if improved:
                state.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        model.invalidate_cache()
        n_train_events = windows.n_targets // dist.world
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), **vm, "train_s": train_s, "events_per_s": n_train_events / max(train_s, 1e-9)}
        state.history.append(rec)
        if improved:
            state.best = {"ndcg10": vm["ndcg10_stop"], "encoders": vm["ndcg10"], "epoch": epoch}
            state.best_per_user = per_user_ndcg(ranks)
            state.bad_epochs = 0
        else:
            state.bad_epochs += 1
        log.info("%s epoch %d: loss %.4f valid ndcg@10 %.4f hr@10 %.4f, with item neighbours %.4f (%.1fs)", self.label, epoch, rec["loss"],
                 vm["ndcg10"], vm["hr10"], vm["ndcg10_stop"], train_s)
        self.report(**progress, step=len(batches), n_steps=len(batches), loss=rec["loss"], valid_ndcg10=vm["ndcg10_stop"], phase=Phase.VALID)
        if self.ckpt is not None and dist.rank == 0:
            save_checkpoint(
                self.ckpt, net, state.best_state, self.opt,
                {"epoch": epoch, "best": state.best, "bad_epochs": state.bad_epochs, "history": state.history,
                 "best_per_user": None if state.best_per_user is None else state.best_per_user.tolist(), "rounds": state.rounds,
                 "data_fingerprint": ds.fingerprint(), "config": self.cfg.to_dict()},
                average=None if self.average is None else self.average.synced(),
            )
        state.start_epoch = epoch + 1
