"""Train one RecBole sequential model (SASRec or GRU4Rec) on pre-split atomic files and export its top-K.

Runs INSIDE the peer venv (bench/peers/.venv, made by setup_recbole.sh); it must not import
crossrec_core. Input: a folder written by recbole_convert.write_atomic_split
(``<data_path>/<name>/<name>.{train,valid,test}.inter``, sequential format with ``item_id_list``).

    bench/peers/.venv/bin/python bench/peers/run_recbole.py --data-path DIR --dataset NAME \
        --model SASRec --out OUTDIR [--form allpos|stock] [--epochs 300] [--stopping-step 10] [--seed 42]

Two training forms (``--form``), the same model classes and yaml defaults:

* ``allpos`` (default): allpos.py's loop. One sequence per user (the latest 51 train events), every
  position predicts its next item, full-catalogue cross-entropy (SASRec+ / gSASRec); validation
  NDCG@10 each epoch with seen items masked; early stopping; best epoch's weights kept in memory.
* ``stock``: RecBole's own Trainer on its prefix-augmented samples (one target per training row).

Protocol of the stock form: RecBole's own model yaml defaults (SASRec: 2 layers, 2 heads, 64-d, dropout 0.5, CE loss;
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

import allpos  # noqa: E402  (bench/peers/allpos.py, next to this file)

SUPPORTED = ("SASRec", "GRU4Rec")


class _TimeBudgetReached(Exception):
    """Raised from RecBole's epoch callback once --time-budget seconds of training have passed."""


_cpu_seconds = allpos.cpu_seconds


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


def export_topk(model, uid: np.ndarray, hist: np.ndarray, seen: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """Return topk item ids int64 (U, k) from the last position of each history, padding and seen items masked."""
    top = np.zeros((len(uid), min(k, n_items - 1)), dtype=np.int64)
    for sl, t, _ in allpos.ranked(model, uid, hist, seen, n_items, k):
        top[sl] = t.cpu().numpy()
    return top


def split_arrays(ds) -> dict[str, np.ndarray]:
    """Return one split dataset's rows as numpy: uid, hist (n, max_len), target, pos (event position)."""
    inter = ds.inter_feat
    return {
        "uid": inter[ds.uid_field].numpy().astype(np.int64),
        "hist": inter[ds.item_id_list_field].numpy().astype(np.int64),
        "target": inter[ds.iid_field].numpy().astype(np.int64),
        "pos": inter[ds.time_field].numpy().astype(np.float64),
    }


def train_stock(args, config, out_dir: Path) -> tuple[object, dict]:
    """Train with RecBole's own Trainer (prefix-augmented samples); return (model with best weights, facts)."""
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_log: list[dict] = []
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()

    def on_epoch(epoch_idx: int, valid_score: float) -> None:
        epoch_log.append({"epoch": int(epoch_idx), "valid_ndcg": float(valid_score), "elapsed_s": time.perf_counter() - t0,
                          "cpu_s": _cpu_seconds() - cpu0})
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
    facts = {"train_seconds": time.perf_counter() - t0, "train_cpu_seconds": _cpu_seconds() - cpu0, "stopped_by": stopped_by,
             "epoch_log": epoch_log, "best_valid": {k_: float(v) for k_, v in (best_valid_result or {}).items()}}
    recbole_test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)  # reloads the best epoch
    facts["recbole_test_unmasked"] = {k_: float(v) for k_, v in (recbole_test or {}).items()}
    facts["datasets"] = (train_data._dataset, valid_data._dataset, test_data._dataset)
    return trainer.model, facts


def train_allpos(args, config, out_dir: Path) -> tuple[object, dict]:
    """Train in the all-positions full-softmax form (allpos.py); return (model with best weights, facts)."""
    dataset = create_dataset(config)
    datasets = dataset.build()  # the three benchmark files as they are: train, valid, test
    train, valid = split_arrays(datasets[0]), split_arrays(datasets[1])
    n_items = datasets[0].item_num
    seqs = allpos.user_train_sequences(train["uid"], train["hist"], train["target"], train["pos"], args.max_len, args.allpos_windows)
    # seen before the valid target: every train event (train histories + targets) and the valid history
    seen_valid = seen_codes([(train, True), (valid, False)], n_items)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, datasets[0]).to(config["device"])
    fit = allpos.fit(
        model, seqs, (valid["uid"], valid["hist"], valid["target"]), seen_valid, n_items,
        lr=config["learning_rate"], weight_decay=config["weight_decay"] or 0.0, batch_size=args.batch_size,
        epochs=args.epochs, stopping_step=args.stopping_step, seed=args.seed, time_budget=args.time_budget,
        log=lambda line: print(line, flush=True),  # one line per epoch (compare.py keeps it in the run's run.log)
    )
    facts = {"train_seconds": fit.train_seconds, "train_cpu_seconds": fit.train_cpu_seconds, "stopped_by": fit.stopped_by,
             "epoch_log": fit.epoch_log, "best_valid": {f"ndcg@{args.topk}": fit.best_valid},
             "n_train_sequences": int(len(seqs)), "n_train_positions": int((seqs[:, 1:] != 0).sum()),
             "n_train_targets_stock": int(len(train["uid"])), "allpos_windows": args.allpos_windows,
             "batch_sequences": args.batch_size, "allpos_forward_check": fit.forward_check, "datasets": datasets}
    return model, facts


def seen_codes(parts: list[tuple[dict, bool]], n_items: int) -> np.ndarray:
    """Return sorted unique uid * n_items + iid over the parts' histories (and targets where flagged)."""
    codes = []
    for a, with_target in parts:
        rows, cols = np.nonzero(a["hist"])
        codes.append(a["uid"][rows] * n_items + a["hist"][rows, cols])
        if with_target:
            codes.append(a["uid"] * n_items + a["target"])
    return np.unique(np.concatenate(codes)) if codes else np.zeros(0, dtype=np.int64)


def main(argv: list[str] | None = None) -> int:
    global _CHECKPOINT_DIR
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-path", required=True, help="folder that holds <dataset>/<dataset>.{train,valid,test}.inter")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True, choices=SUPPORTED)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--form", choices=("allpos", "stock"), default="allpos",
                   help="allpos: every position of the latest window predicts its next item, full softmax (default); "
                        "stock: RecBole's Trainer on prefix-augmented samples")
    p.add_argument("--epochs", type=int, default=300, help="epoch cap (RecBole's own default, 300)")
    p.add_argument("--stopping-step", type=int, default=10, help="early-stopping patience (RecBole default 10)")
    p.add_argument("--batch-size", type=int, default=128, help="allpos: user sequences per optimiser step")
    p.add_argument("--allpos-windows", choices=("last", "all"), default="last",
                   help="allpos: train on each user's latest max_len+1 train events (last, SASRec+) or on all of them cut into windows")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="stop after the first epoch that ends past this many seconds of training (0 = no budget); "
                        "the best epoch so far is kept and the result says stopped_by='time budget'")
    args = p.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
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
    train_fn = train_allpos if args.form == "allpos" else train_stock
    model, facts = train_fn(args, config, out)
    datasets = facts.pop("datasets")
    epoch_log = facts["epoch_log"]
    best = max(epoch_log, key=lambda e: (e["valid_ndcg"], -e["epoch"])) if epoch_log else {"epoch": -1, "elapsed_s": facts["train_seconds"], "cpu_s": facts["train_cpu_seconds"]}

    t1 = time.perf_counter()
    tds = datasets[2]
    n_items = tds.item_num
    arrays = [split_arrays(d) for d in datasets]
    # the user's whole history before the test target: all histories, train and valid targets
    seen = seen_codes([(arrays[0], True), (arrays[1], True), (arrays[2], False)], n_items)
    test = arrays[2]
    top = export_topk(model, test["uid"], test["hist"], seen, n_items, args.topk)
    user_tok = tds.id2token(tds.uid_field, test["uid"])
    item_tok = tds.id2token(tds.iid_field, top.reshape(-1)).reshape(top.shape)
    k = top.shape[1]
    ranks = np.tile(np.arange(1, k + 1), len(user_tok)).astype(str)
    body = np.char.add(np.char.add(np.char.add(np.repeat(user_tok.astype(str), k), ","), np.char.add(ranks, ",")), item_tok.reshape(-1).astype(str))
    (out / f"{args.model}.topk.csv").write_text("\n".join(["user_id,rank,item_id"] + body.tolist()) + "\n", encoding="utf-8")
    recommend_s = time.perf_counter() - t1

    result = {
        "model": args.model,
        "form": args.form,
        "dataset": args.dataset,
        "seed": args.seed,
        "recbole_version": __import__("recbole").__version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "n_items": int(n_items - 1),
        "n_test_users": int(len(user_tok)),
        "epochs_cap": args.epochs,
        "stopping_step": args.stopping_step,
        "epochs_run": len(epoch_log),
        "time_budget_s": args.time_budget,
        # still improving = the best epoch is one of the last two: more time would probably have helped
        "still_improving": bool(epoch_log) and int(best["epoch"]) >= int(epoch_log[-1]["epoch"]) - 1,
        "best_epoch": int(best["epoch"]),
        "setup_seconds": round(t1 - t_start - facts["train_seconds"], 3),  # data loading (+ stock: RecBole's own test)
        "torch_threads": torch.get_num_threads(),
        "time_to_best_seconds": round(float(best["elapsed_s"]), 3),
        "cpu_to_best_seconds": round(float(best.get("cpu_s", float("nan"))), 3),
        "recommend_seconds": round(recommend_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg": round(os.getloadavg()[1], 2),
        **{k_: (round(v, 3) if isinstance(v, float) else v) for k_, v in facts.items()},
    }
    (out / f"{args.model}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps({k_: v for k_, v in result.items() if k_ != "epoch_log"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
