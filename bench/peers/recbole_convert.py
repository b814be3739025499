"""Write a crossrec leave-last-out split as RecBole pre-split *sequential* atomic files.

Runs with the APP venv (it reads an InteractionDataset); RecBole itself is never imported here.

RecBole's ``benchmark_filename: [train, valid, test]`` makes it load ``<name>.train.inter``,
``<name>.valid.inter`` and ``<name>.test.inter`` and use them as the three splits *as they are*.
For sequential models (SASRec, GRU4Rec) ``SequentialDataset`` then skips its own data augmentation
(recbole/data/dataset/sequential_dataset.py, ``_change_feat_format``), so every row must already be
one (user, history, target) sample:

    user_id:token   item_id_list:token_seq   item_id:token   timestamp:float

* train: one row per training event that has at least one earlier training event (the history is
  the previous events, at most ``max_len``, RecBole's MAX_ITEM_LIST_LENGTH default of 50). This is
  exactly the set of samples RecBole's own augmentation would build from the train events.
* valid: one row per user with a valid target (second-to-last event), history = all train events.
* test: one row per user with a test target (last event), history = everything before it.

Tokens are crossrec's integer indices (``item_idx`` / ``user_idx``), not the raw ids: raw ids can
contain spaces, which would split a ``token_seq``; the caller maps them back with ``ds.item_ids``.
``item_id_list`` must share the item id space, so the run config sets ``alias_of_item_id:
[item_id_list]``. The timestamp is the event's absolute position in the dataset's time-ordered
sequence arrays: strictly increasing per user even when the log has ties (hm: one timestamp for all
events) or no time at all (amazon: row order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossrec_core.data.dataset import InteractionDataset, LeaveLastOut

BENCHMARK_FILES: tuple[str, str, str] = ("train", "valid", "test")
HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float\n"


@dataclass(frozen=True)
class AtomicSplit:
    """Where the atomic files were written and how many sample rows each holds."""

    folder: Path  # the RecBole data_path/<name> folder
    name: str  # RecBole dataset name (file prefix)
    n_rows: dict[str, int]


def sample_positions(ds: InteractionDataset, split: LeaveLastOut) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return, per split file, (user_idx int64, absolute target position int64) of every sample row.

    train: every train event with >= 1 earlier train event; valid / test: the split's targets.
    """
    offsets = ds.seqs.offsets
    starts = offsets[:-1]
    n_train = split.train_end - starts  # (n_users,)
    n_rows = np.maximum(n_train - 1, 0)
    users = np.repeat(np.arange(ds.n_users, dtype=np.int64), n_rows)
    row_offsets = np.zeros(ds.n_users + 1, dtype=np.int64)
    np.cumsum(n_rows, out=row_offsets[1:])
    # target of the j-th train row of user u is event starts[u] + 1 + j
    within = np.arange(int(row_offsets[-1]), dtype=np.int64) - np.repeat(row_offsets[:-1], n_rows)
    train_pos = starts[users] + 1 + within
    return {
        "train": (users, train_pos),
        "valid": (split.valid_users.astype(np.int64), split.valid_pos.astype(np.int64)),
        "test": (split.test_users.astype(np.int64), split.test_pos.astype(np.int64)),
    }


def format_rows(
    ds: InteractionDataset, users: np.ndarray, target_pos: np.ndarray, *, max_len: int = 50
) -> str:
    """Return the body (no header) of one sequential .inter file: one line per (user, target position).

    The history of a row is the user's events in [max(start, target - max_len), target), oldest first.
    Built with whole-array string operations (no Python loop per row).
    """
    if len(users) == 0:
        return ""
    starts = ds.seqs.offsets[:-1][users]
    hist_start = np.maximum(starts, target_pos - max_len)
    lengths = target_pos - hist_start  # >= 1 by construction
    if np.any(lengths < 1):
        raise ValueError("every sample row needs at least one history event")
    row_off = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(lengths, out=row_off[1:])
    total = int(row_off[-1])
    gather = np.arange(total, dtype=np.int64) - np.repeat(row_off[:-1], lengths) + np.repeat(hist_start, lengths)
    tokens = ds.seqs.items[gather].astype(np.int64).astype(str).astype(object)  # (total,)
    first = row_off[:-1]
    last = row_off[1:] - 1
    # every token is followed by a space, except a row's last one, which is followed by the rest of the row
    seps = np.full(total, " ", dtype=object)
    tails = (
        "\t"
        + ds.seqs.items[target_pos].astype(np.int64).astype(str).astype(object)
        + "\t"
        + target_pos.astype(str).astype(object)
        + "\n"
    )
    seps[last] = tails
    heads = np.full(total, "", dtype=object)
    heads[first] = users.astype(str).astype(object) + "\t"
    return "".join((heads + tokens + seps).tolist())


def write_atomic_split(
    ds: InteractionDataset,
    data_path: str | Path,
    name: str,
    *,
    split: LeaveLastOut | None = None,
    max_len: int = 50,
) -> AtomicSplit:
    """Return the AtomicSplit after writing ``data_path/name/name.{train,valid,test}.inter``.

    Args:
        ds: the dataset; its leave-last-out split is used unless ``split`` is given.
        data_path: RecBole's ``data_path`` (the dataset folder is created inside it).
        name: RecBole dataset name (folder and file prefix).
        max_len: longest history written per row (RecBole's MAX_ITEM_LIST_LENGTH).
    """
    split = split or ds.leave_last_out()
    folder = Path(data_path) / name
    folder.mkdir(parents=True, exist_ok=True)
    n_rows: dict[str, int] = {}
    for part, (users, pos) in sample_positions(ds, split).items():
        body = format_rows(ds, users, pos, max_len=max_len)
        (folder / f"{name}.{part}.inter").write_text(HEADER + body, encoding="utf-8")
        n_rows[part] = int(len(users))
    return AtomicSplit(folder=folder, name=name, n_rows=n_rows)
