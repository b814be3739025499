"""Length buckets and random batches trained side by side, an epoch of each in turn; one clearly behind is dropped.

How a training step weighs its targets moves quality either way by log (bench/RESULTS.md, session 14).
Random batches weigh every target alike: dense logs gain up to a fifth, while hm-fashion-oneday, where a few
long histories would then outweigh the many one-purchase shoppers the test counts once each, loses as much.
Validation, with the same shoppers' second-to-last events as the test's last, tells them apart.

Both runs start from the same weights and take turns, an epoch each, on the one network (each keeps its own
weights and optimiser between its turns). After every round the two best-so-far validation figures are
compared shopper by shopper (stopping.paired_z). A run that trails the other by more than one standard
error, and by at least MIN_GAP of the figure, for ``train.batch_drop_after`` rounds in a row is dropped, so a
log that clearly wants one weighting pays for the other only for those few epochs, not for a whole second
training (bench/RESULTS.md, session 15). When both runs end on their own early stopping, the second ships only
when clearly better (stopping.clearly_better).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from crossrec_core.config import ModelConfig
from crossrec_core.training.stopping import clearly_better, paired_z

BUCKETS, RANDOM = "length buckets", "random batches"
# A drop also needs the trailing run's best validation figure this far (relative) below the leader's. Why: with
# few shoppers whose lists differ, a gap of 0.2 % can be 1.3 standard errors for three rounds (chain-d, seed 42)
# and then close; a run is dropped only for a gap worth having (demo store 6 %, dense logs 10-20 %).
MIN_GAP = 0.01


class EpochRunner(Protocol):
    """One fit run's epochs (training/epochs.py ``Fit``): its state and one more epoch."""

    state: object  # FitState: history, best ({"ndcg10": ...}), best_per_user, bad_epochs, start_epoch

    @property
    def done(self) -> bool: ...

    def run_epoch(self) -> None: ...


@dataclass
class RaceRun:
    """A run of the race: its label, settings, epochs, and its weights while the other run holds the network."""

    label: str
    cfg: ModelConfig
    fit: EpochRunner
    weights: dict[str, torch.Tensor] | None = None
    dropped_at: int | None = None  # the round it was dropped in, clearly behind

    @property
    def finished(self) -> bool:
        return self.dropped_at is not None or self.fit.done


def batch_runs(cfg: ModelConfig, ckpt: Path | None) -> list[tuple[str, ModelConfig, Path | None]]:
    """Return the fit runs of a training, each (label, config, checkpoint folder): the configured batches, and,
    with ``train.batch_choice``, the other kind too (length buckets or random), in a checkpoint subfolder."""
    label = BUCKETS if cfg.train.length_buckets else RANDOM
    runs = [(label, cfg, ckpt)]
    if cfg.train.batch_choice:
        other = replace(cfg, train=replace(cfg.train, length_buckets=not cfg.train.length_buckets))
        folder = "random-batches" if cfg.train.length_buckets else "length-buckets"
        runs.append((RANDOM if label == BUCKETS else BUCKETS, other, None if ckpt is None else ckpt / folder))
    return runs


def race(runs: list[RaceRun], net: torch.nn.Module, drop_after: int, rounds: list[dict]) -> None:
    """Run every run's epochs, one epoch of each in turn, until each has ended (early stopping or dropped).

    ``rounds`` is the race's log ({"epoch", "z", "gap"}: the second run's best-so-far validation gain over the
    first's in standard errors and relative to the first's figure, after each round both took part in), carried
    over from checkpoints on a resume; it is extended in place. ``drop_after`` rounds in a row clearly behind
    drop the trailing run (0: never)."""
    params = dict(net.named_parameters())
    holder: RaceRun | None = None  # whose weights the network holds (each run's ``weights`` are set before)
    _replay_drops(runs, rounds, drop_after)  # a resumed race: the drops its log already holds
    while True:
        _score_round(runs, rounds, drop_after)
        active = [r for r in runs if not r.finished]
        if not active:
            break
        lagging = min(int(r.fit.state.start_epoch) for r in active)
        for run in (r for r in active if int(r.fit.state.start_epoch) == lagging):
            if holder is not run and run.weights is not None:
                with torch.no_grad():
                    for name, value in run.weights.items():
                        params[name].copy_(value)
            run.fit.run_epoch()
            holder = run
            if any(other is not run and not other.finished for other in runs):  # the other run takes the network next
                run.weights = {name: p.detach().clone() for name, p in params.items()}


def _score_round(runs: list[RaceRun], rounds: list[dict], drop_after: int) -> None:
    """After a round both runs finished, log the paired z of their best-so-far figures and drop a run clearly behind."""
    if len(runs) < 2 or any(r.dropped_at is not None for r in runs):
        return
    first, second = runs
    done = [len(r.fit.state.history) for r in runs]
    if min(done) == 0 or any(d != max(done) and not r.fit.done for d, r in zip(done, runs)):
        return  # a run has not caught up with this round yet
    epoch = max(done)
    if rounds and rounds[-1]["epoch"] >= epoch:
        return
    a, b = first.fit.state.best_per_user, second.fit.state.best_per_user
    if a is None or b is None:
        return
    fa, fb = float(first.fit.state.best["ndcg10"]), float(second.fit.state.best["ndcg10"])
    rounds.append({"epoch": epoch, "z": paired_z(b, a), "gap": (fb - fa) / fa if fa > 0 else 0.0})
    _replay_drops(runs, rounds, drop_after)


def _replay_drops(runs: list[RaceRun], rounds: list[dict], drop_after: int) -> None:
    """Mark the run the log says is clearly behind for ``drop_after`` rounds in a row (none when 0)."""
    if len(runs) < 2 or drop_after <= 0 or len(rounds) < drop_after:
        return
    for i in range(drop_after - 1, len(rounds)):
        streak = rounds[i - drop_after + 1 : i + 1]
        if all(r["z"] > 1.0 and r.get("gap", 0.0) >= MIN_GAP for r in streak):
            runs[0].dropped_at = rounds[i]["epoch"]
            return
        if all(r["z"] < -1.0 and r.get("gap", 0.0) <= -MIN_GAP for r in streak):
            runs[1].dropped_at = rounds[i]["epoch"]
            return


def winner(runs: list[RaceRun]) -> tuple[RaceRun, float | None]:
    """Return the run that ships and the second run's paired gain in standard errors (None for a single run).

    A dropped run never ships; otherwise the second ships only when clearly better than the first."""
    if len(runs) == 1:
        return runs[0], None
    first, second = runs
    a, b = first.fit.state.best_per_user, second.fit.state.best_per_user
    z = paired_z(b, a) if a is not None and b is not None else 0.0
    if first.dropped_at is not None:
        return second, z
    if second.dropped_at is not None:
        return first, z
    return (second if a is not None and b is not None and clearly_better(b, a) else first), z
