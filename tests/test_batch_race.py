"""The race of the two fit runs (training/batch_race.py): turns, drops, and which run ships."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from crossrec_core.training.batch_race import RaceRun, race, winner

N_SHOPPERS = 400


@dataclass
class _State:
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"ndcg10": -1.0})
    best_per_user: np.ndarray | None = None
    bad_epochs: int = 0
    start_epoch: int = 1


class _Scripted:
    """A fit run whose epochs give scripted validation shares: share s = the first s of the shoppers hit first place."""

    def __init__(self, net: torch.nn.Module, shares: list[float], patience: int, log: list, name: str) -> None:
        self.state, self.net, self.shares, self.patience, self.log, self.name = _State(), net, shares, patience, log, name
        self.best = -1.0

    @property
    def done(self) -> bool:
        return self.state.bad_epochs >= self.patience or self.state.start_epoch > len(self.shares)

    def run_epoch(self) -> None:
        epoch = self.state.start_epoch
        self.log.append((self.name, epoch, float(self.net.w.detach()[0])))
        with torch.no_grad():
            self.net.w += 1.0 if self.name == "a" else 100.0  # each run moves its own weights
        share = self.shares[epoch - 1]
        self.state.history.append({"epoch": epoch, "share": share})
        if share > self.best:
            self.best, self.state.bad_epochs = share, 0
            self.state.best = {"ndcg10": share}
            self.state.best_per_user = (np.arange(N_SHOPPERS) < share * N_SHOPPERS).astype(float)
        else:
            self.state.bad_epochs += 1
        self.state.start_epoch = epoch + 1


def _race(shares_a: list[float], shares_b: list[float], drop_after: int, patience: int = 3):
    net = torch.nn.Module()
    net.w = torch.nn.Parameter(torch.zeros(1))
    log: list = []
    runs = []
    for name, shares in (("a", shares_a), ("b", shares_b)):
        runs.append(RaceRun(name, None, _Scripted(net, shares, patience, log, name), {"w": torch.zeros(1)}))
    rounds: list[dict] = []
    race(runs, net, drop_after, rounds)
    return runs, rounds, log


def test_the_runs_take_turns_each_on_its_own_weights():
    runs, rounds, log = _race([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], drop_after=3)
    assert [(n, e) for n, e, _ in log] == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]
    # each turn starts from that run's own weights, never from the other run's
    assert [w for n, _, w in log if n == "a"] == [0.0, 1.0, 2.0] and [w for n, _, w in log if n == "b"] == [0.0, 100.0, 200.0]
    assert [r["epoch"] for r in rounds] == [1, 2, 3] and all(r["z"] == 0.0 for r in rounds)
    assert winner(runs)[0] is runs[0]  # level: the configured first run ships


def test_a_run_clearly_behind_for_three_rounds_is_dropped_and_the_other_runs_on():
    runs, rounds, log = _race([0.2, 0.3, 0.4, 0.5, 0.6, 0.6, 0.6, 0.6], [0.05, 0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.7], drop_after=3)
    assert runs[1].dropped_at == 3 and runs[0].dropped_at is None
    assert [e for n, e, _ in log if n == "b"] == [1, 2, 3]  # no epoch after the drop (it would have won at epoch 5)
    assert [e for n, e, _ in log if n == "a"] == [1, 2, 3, 4, 5, 6, 7, 8]  # the survivor runs to its own early stopping
    assert all(r["z"] < -1 for r in rounds) and len(rounds) == 3
    shipped, z = winner(runs)
    assert shipped is runs[0] and z < -1


def test_the_second_run_ships_when_it_clearly_leads_and_never_drops_without_a_streak():
    # behind twice, then ahead twice: no three-round streak either way, so both run to the end (4 epochs)
    runs, rounds, _ = _race([0.3, 0.3, 0.3, 0.3], [0.1, 0.1, 0.5, 0.5], drop_after=3)
    assert runs[0].dropped_at is None and runs[1].dropped_at is None
    assert [r["z"] < -1 for r in rounds[:2]] == [True, True] and rounds[2]["z"] > 1
    assert winner(runs)[0] is runs[1]


@pytest.mark.parametrize("drop_after", [0, 10])
def test_without_a_drop_both_runs_go_to_their_own_early_stopping(drop_after):
    runs, rounds, log = _race([0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5], [0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], drop_after=drop_after)
    assert runs[1].dropped_at is None
    assert [e for n, e, _ in log if n == "b"] == [1, 2, 3, 4, 5]  # best at 2, then patience 3
    assert winner(runs)[0] is runs[0]


def test_a_resumed_race_replays_the_drops_its_log_holds():
    net = torch.nn.Module()
    net.w = torch.nn.Parameter(torch.zeros(1))
    log: list = []
    a, b = _Scripted(net, [0.5] * 6, 3, log, "a"), _Scripted(net, [0.1] * 6, 3, log, "b")
    for fit, share in ((a, 0.5), (b, 0.1)):  # both had three epochs before the crash
        fit.state.start_epoch, fit.state.history = 4, [{"epoch": e} for e in (1, 2, 3)]
        fit.best, fit.state.bad_epochs, fit.state.best = share, 2, {"ndcg10": share}
        fit.state.best_per_user = (np.arange(N_SHOPPERS) < share * N_SHOPPERS).astype(float)
    rounds = [{"epoch": e, "z": -5.0, "gap": -0.8} for e in (1, 2, 3)]
    runs = [RaceRun("a", None, a, {"w": torch.zeros(1)}), RaceRun("b", None, b, {"w": torch.zeros(1)})]
    race(runs, net, 3, rounds)
    assert runs[1].dropped_at == 3 and [e for n, e, _ in log if n == "b"] == []
    assert [e for n, e, _ in log if n == "a"] == [4]  # its patience ran out at epoch 4


def test_a_lead_beyond_the_noise_but_too_small_to_matter_drops_nobody():
    # 9 of 4,000 shoppers better every round: several standard errors, yet a 0.5 % gap (chain-d's case)
    net = torch.nn.Module()
    net.w = torch.nn.Parameter(torch.zeros(1))
    log: list = []
    a, b = _Scripted(net, [0.45] * 6, 6, log, "a"), _Scripted(net, [0.45] * 6, 6, log, "b")
    runs = [RaceRun("a", None, a, {"w": torch.zeros(1)}), RaceRun("b", None, b, {"w": torch.zeros(1)})]
    base = np.zeros(4000)
    base[:1800] = 1.0
    ahead = base.copy()
    ahead[1800:1809] = 1.0
    for fit, per_user in ((a, base), (b, ahead)):
        fit.state.best_per_user, fit.state.best, fit.best = per_user, {"ndcg10": float(per_user.mean())}, 1.0  # never improves again
    rounds: list[dict] = []
    race(runs, net, 3, rounds)
    assert all(r["z"] > 2 and 0 < r["gap"] < 0.01 for r in rounds) and len(rounds) == 6
    assert runs[0].dropped_at is None and runs[1].dropped_at is None
    assert winner(runs)[0] is runs[1]  # at the end it is still clearly better, and ships
