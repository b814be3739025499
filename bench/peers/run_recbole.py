"""Train one RecBole sequential model (SASRec or GRU4Rec) on pre-split atomic files and export its top-K.

Runs INSIDE the peer venv (bench/peers/.venv, made by setup_recbole.sh); it must not import
crossrec_core. Input: a folder written by recbole_convert.write_atomic_split
(``<data_path>/<name>/<name>.{train,valid,test}.inter``, sequential format with ``item_id_list``).

    bench/peers/.venv/bin/python bench/peers/run_recbole.py --data-path DIR --dataset NAME \
        --model SASRec --out OUTDIR [--epochs 30] [--stopping-step 10] [--seed 2020]

Protocol: RecBole's own model yaml defaults (SASRec: 2 layers, 2 heads, 64-d, dropout 0.5, CE loss;
GRU4Rec: 64-d embeddings, 128-d GRU, dropout 0.3, CE loss) and overall defaults (adam, lr 1e-3,
batch 2048), an epoch cap (``--epochs``, RecBole's default is 300) with RecBole's early stopping
(``stopping_step`` epochs without improvement) on the validation file, valid_metric NDCG@10, full
ranking. The best epoch's checkpoint is reloaded for the test export.

Seen items: RecBole's FullSortEvalDataLoader only masks history items for *general* models; for
sequential models ``collate_fn`` returns ``history_index=None`` (recbole/data/dataloader/
general_dataloader.py), so its own test metrics can rank items the user already had. We keep those
numbers as ``recbole_test`` for reference, but the exported lists mask every item of the user's
history (all train/valid/test rows of the user) before taking the top K, like crossrec does.

Outputs in OUTDIR: ``<model>.topk.csv`` (user_id,rank,item_id with the atomic files' tokens) and
``<model>.json`` (timings, peak memory, epochs, RecBole's own metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

# --- run-time compatibility shims (RecBole 1.2.x was written for numpy < 1.24 and torch < 2.6) ------
import numpy as np

# 1) numpy removed the builtin-type aliases (np.float, np.int, np.bool, np.long, np.object, np.str,
#    1.24) and in 2.0 also np.float_ / np.complex_ / np.unicode_. RecBole's Config.compatibility_settings
#    re-creates the old aliases FROM np.float_ & co, so on numpy 2 it dies with AttributeError before
#    it can help; recbole/evaluator/metrics.py then uses np.float / np.bool at call time. Restore both
#    generations of aliases before RecBole is imported.
for _alias, _target in {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "float": np.float64,
    "int": np.int_,
    "bool": np.bool_,
    "long": np.int_,
    "object": np.object_,
    "str": np.str_,
    "complex": np.complex128,
}.items():
    if _alias not in np.__dict__:
        setattr(np, _alias, _target)

import torch  # noqa: E402

# 2) torch >= 2.6 defaults torch.load(weights_only=True); RecBole's checkpoints hold its Config object
#    and numpy scalars, so Trainer.evaluate(load_best_model=True) fails to reload the best epoch.
#    Allow full unpickling ONLY for checkpoint files this script's RecBole run wrote itself (under
#    --out/checkpoints); every other torch.load keeps the safe default.
_CHECKPOINT_DIR: Path | None = None
_original_torch_load = torch.load


def _torch_load_own_checkpoints(f, *args, **kwargs):
    if _CHECKPOINT_DIR is not None and isinstance(f, (str, os.PathLike)):
        path = Path(f).resolve()
        if _CHECKPOINT_DIR in path.parents and "weights_only" not in kwargs:
            kwargs["weights_only"] = False
    return _original_torch_load(f, *args, **kwargs)


torch.load = _torch_load_own_checkpoints

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import get_model, get_trainer, init_seed  # noqa: E402

SUPPORTED = ("SASRec", "GRU4Rec")


class _TimeBudgetReached(Exception):
    """Raised from RecBole's epoch callback once --time-budget seconds of training have passed."""


def _cpu_seconds() -> float:
    """Return this process's user + system CPU time: less sensitive than wall time to other load."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_config(args: argparse.Namespace, checkpoint_dir: Path) -> Config:
    """Return RecBole's Config: model yaml defaults + the benchmark protocol overrides."""
    overrides = {
        "data_path": str(Path(args.data_path).resolve()),
        "benchmark_filename": ["train", "valid", "test"],
        # item_id_list must live in the same id space as item_id (see recbole_convert.py)
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "train_neg_sample_args": None,  # CE loss (the models' default) trains without sampled negatives
        "eval_args": {"group_by": "user", "order": "TO", "split": {"LS": "valid_and_test"}, "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [args.topk],
        "valid_metric": f"NDCG@{args.topk}",
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": args.device != "cpu",
        "device": args.device,
        "checkpoint_dir": str(checkpoint_dir),
        "show_progress": False,
        "state": "WARNING" if args.quiet else "INFO",
        "worker": 0,
    }
    return Config(model=args.model, dataset=args.dataset, config_dict=overrides)


def seen_pairs(datasets, uid_field: str, iid_field: str, list_field: str, n_items: int) -> np.ndarray:
    """Return sorted unique int64 codes uid * n_items + iid of every item in any user's rows.

    The union over the three files of history lists and train/valid targets is the user's whole history
    (before the test target), even when it is longer than MAX_ITEM_LIST_LENGTH.
    """
    codes = []
    for part, ds in zip(("train", "valid", "test"), datasets):
        inter = ds.inter_feat
        uid = inter[uid_field].numpy().astype(np.int64)
        lists = inter[list_field].numpy().astype(np.int64)  # (n, max_len), 0 = padding
        rows, cols = np.nonzero(lists)
        codes.append(uid[rows] * n_items + lists[rows, cols])
        if part != "test":
            codes.append(uid * n_items + inter[iid_field].numpy().astype(np.int64))
    return np.unique(np.concatenate(codes))


@torch.no_grad()
def export_topk(model, test_data, test_dataset, seen: np.ndarray, k: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Return (uid int64 (U,), topk item ids int64 (U, k)) with padding and seen items masked."""
    model.eval()
    n_items = test_dataset.item_num
    uids, tops = [], []
    for batch in test_data:
        interaction = batch[0].to(device)
        scores = model.full_sort_predict(interaction).view(-1, n_items)  # (B, n_items)
        scores[:, 0] = -torch.inf  # RecBole's padding item
        uid = interaction[test_dataset.uid_field].cpu().numpy().astype(np.int64)
        # mask seen items: all (row, item) with uid*n_items+item in `seen`
        lo = np.searchsorted(seen, uid * n_items, side="left")
        hi = np.searchsorted(seen, (uid + 1) * n_items, side="left")
        counts = hi - lo
        rows = np.repeat(np.arange(len(uid)), counts)
        idx = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
        items = seen[idx] - uid[rows] * n_items
        scores[torch.from_numpy(rows), torch.from_numpy(items)] = -torch.inf
        top = torch.topk(scores, k=min(k, n_items - 1), dim=1).indices  # (B, k)
        uids.append(uid)
        tops.append(top.cpu().numpy().astype(np.int64))
    return np.concatenate(uids), np.concatenate(tops)


def main(argv: list[str] | None = None) -> int:
    global _CHECKPOINT_DIR
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-path", required=True, help="folder that holds <dataset>/<dataset>.{train,valid,test}.inter")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True, choices=SUPPORTED)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--epochs", type=int, default=30, help="epoch cap (RecBole's own default is 300)")
    p.add_argument("--stopping-step", type=int, default=10, help="early-stopping patience (RecBole default 10)")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="stop after the first epoch that ends past this many seconds of training (0 = no budget); "
                        "the best epoch so far is kept and the result says stopped_by='time budget'")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = (out / "checkpoints").resolve()
    checkpoint_dir.mkdir(exist_ok=True)
    _CHECKPOINT_DIR = checkpoint_dir
    args.data_path = str(Path(args.data_path).resolve())
    # RecBole writes side files relative to the working directory (log_tensorboard/, log/): keep them in OUT
    os.chdir(out)

    t_start = time.perf_counter()
    config = build_config(args, checkpoint_dir)
    init_seed(config["seed"], config["reproducibility"])
    logging.getLogger().setLevel(logging.WARNING if args.quiet else logging.INFO)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    t_data = time.perf_counter() - t_start

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epoch_log: list[dict] = []
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()

    def on_epoch(epoch_idx: int, valid_score: float) -> None:
        epoch_log.append({"epoch": int(epoch_idx), "valid_ndcg": float(valid_score), "elapsed_s": time.perf_counter() - t0})
        # RecBole saves the best checkpoint before it calls back, so stopping here keeps the best epoch
        if args.time_budget and time.perf_counter() - t0 > args.time_budget:
            raise _TimeBudgetReached

    stopped_by = "early stopping"
    try:
        best_valid, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=on_epoch)
        if len(epoch_log) >= args.epochs:
            stopped_by = "epoch cap"
    except _TimeBudgetReached:
        best_valid, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
        stopped_by = "time budget"
    train_s = time.perf_counter() - t0
    train_cpu_s = _cpu_seconds() - cpu0
    best = max(epoch_log, key=lambda e: (e["valid_ndcg"], -e["epoch"])) if epoch_log else {"epoch": -1, "elapsed_s": train_s}

    recbole_test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)  # reloads the best epoch
    t1 = time.perf_counter()
    datasets = (train_data._dataset, valid_data._dataset, test_data._dataset)
    tds = test_data._dataset
    seen = seen_pairs(datasets, tds.uid_field, tds.iid_field, tds.item_id_list_field, tds.item_num)
    uids, top = export_topk(trainer.model, test_data, tds, seen, args.topk, torch.device(config["device"]))
    user_tok = tds.id2token(tds.uid_field, uids)
    item_tok = tds.id2token(tds.iid_field, top.reshape(-1)).reshape(top.shape)
    k = top.shape[1]
    lines = ["user_id,rank,item_id"]
    ranks = np.tile(np.arange(1, k + 1), len(uids)).astype(str)
    body = np.char.add(np.char.add(np.char.add(np.repeat(user_tok.astype(str), k), ","), np.char.add(ranks, ",")), item_tok.reshape(-1).astype(str))
    (out / f"{args.model}.topk.csv").write_text("\n".join(lines + body.tolist()) + "\n", encoding="utf-8")
    recommend_s = time.perf_counter() - t1

    result = {
        "model": args.model,
        "dataset": args.dataset,
        "recbole_version": __import__("recbole").__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "n_items": int(tds.item_num - 1),
        "n_test_users": int(len(uids)),
        "epochs_cap": args.epochs,
        "stopping_step": args.stopping_step,
        "epochs_run": len(epoch_log),
        "stopped_by": stopped_by,
        "time_budget_s": args.time_budget,
        # still improving = the best epoch is one of the last two: more time would probably have helped
        "still_improving": bool(epoch_log) and int(best["epoch"]) >= int(epoch_log[-1]["epoch"]) - 1,
        "best_epoch": int(best["epoch"]),
        "data_seconds": round(t_data, 3),
        "train_seconds": round(train_s, 3),
        "train_cpu_seconds": round(train_cpu_s, 3),
        "torch_threads": torch.get_num_threads(),
        "time_to_best_seconds": round(float(best["elapsed_s"]), 3),
        "recommend_seconds": round(recommend_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg": round(os.getloadavg()[1], 2),
        "best_valid": {k_: float(v) for k_, v in (best_valid_result or {}).items()},
        "recbole_test_unmasked": {k_: float(v) for k_, v in (recbole_test or {}).items()},
        "epoch_log": epoch_log,
    }
    (out / f"{args.model}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps({k_: v for k_, v in result.items() if k_ != "epoch_log"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
