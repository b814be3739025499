"""What training reports while it runs: a phase and the counters of that phase."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Phase(str, Enum):
    """The phases of a training run, in order, as shown by the CLI, the Train page and job files.

    A str: ``Phase.TRAIN == "train"``, and ``str()``/f-strings/JSON give the plain name.
    """

    LOAD = "load"  # reading the dataset (background jobs)
    TEXT = "text"  # encoding titles with the text model (step/n_steps = items)
    TRAIN = "train"  # fitting the encoders (step/n_steps = batches of this epoch)
    VALID = "valid"  # NDCG@10 on the validation targets after an epoch
    PRIOR = "prior"  # choosing the blend weights (log-prior, item-kNN) on validation
    FUSION_CANDIDATES = "fusion candidates"  # mining the validation users' candidates (step/n_steps = users)
    FUSION = "fusion"  # fitting the fusion scorer and the probability mapping
    SAVE = "save"  # writing the model (background jobs)
    DONE = "done"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class TrainProgress:
    """One progress report: the phase (Phase) and its counters."""

    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    loss: float | None
    # the epoch's validation NDCG@10 early stopping compares: the encoders plus the item-neighbour term at its
    # best weight (training/stopping.py); the encoders' own figure is in the model's history
    valid_ndcg10: float | None
    elapsed_s: float
    phase: str
    # validation NDCG@10 of the most popular products on the same shoppers: what a figure of the model is worth
    reference_ndcg10: float | None = None
    # which of the two fit runs this epoch belongs to ("length buckets" / "random batches", training/batch_race.py;
    # they take turns, an epoch each), "" outside the epochs
    run: str = ""
