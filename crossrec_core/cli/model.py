"""`crossrec train` and `crossrec models`: train a model from a log, list and delete saved models."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from crossrec_core.cli.columns import add_column_flags, column_mapping
from crossrec_core.config import default_config
from crossrec_core.data.item_vectors import attach_item_vectors, read_item_vectors
from crossrec_core.data.load import load_log
from crossrec_core.errors import ConfigError
from crossrec_core.storage.compress import CompressConfig, compress_model
from crossrec_core.storage import registry
from crossrec_core.training.ddp import init_distributed
from crossrec_core.training.pipeline import train_and_save
from crossrec_core.training.private import few_shoppers_warning, privacy_line, private_config
from crossrec_core.training.progress import Phase
from crossrec_core.training.warm_start import prepare_warm_start


def register(subparsers) -> None:
    """Add the `train`, `compress` and `models` subcommands."""
    p = subparsers.add_parser(
        "train",
        help="train a model on an interaction log and save it",
        description="Train the cross-category model on a log (leave-last-out early stopping) and save it to --out.",
    )
    p.add_argument("--interactions", required=True, help="interaction log (CSV/TSV/Parquet/JSONL)")
    p.add_argument("--items", default=None, help="optional items table (item_id, category, title, ...)")
    p.add_argument("--item-vectors", default=None, metavar="FILE",
                   help="Parquet/CSV of item_id + a vector per item (a list column or vec_* columns), e.g. image embeddings; "
                        "fused into the item encoder, cold items included")
    p.add_argument("--out", required=True, help="folder to save the model into")
    p.add_argument("--epochs", type=int, default=None, help="at most this many epochs (early stopping still applies)")
    p.add_argument("--encoder", choices=("transformer", "gru", "lstm"), default=None, help="user encoder: transformer (default), gru or lstm")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train (auto = GPU if present)")
    add_column_flags(p)
    p.add_argument("--checkpoint-dir", default=None, help="write a checkpoint every epoch here")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --checkpoint-dir")
    p.add_argument("--ddp", action="store_true", help="data-parallel training; launch with torchrun")
    p.add_argument("--warm-start", metavar="MODEL", default=None,
                   help="continue from this saved model on a newer log: its items keep their learned rows, new ones are appended")
    p.add_argument("--dp-epsilon", type=float, default=None, metavar="E",
                   help="train with differential privacy (DP-SGD, one shopper = the privacy unit) within this epsilon, "
                        "e.g. 1, 4 or 8; --epochs then sets the number of private passes (default 15). See docs/SECURITY.md")
    p.set_defaults(func=_train)

    c = subparsers.add_parser(
        "compress", help="write a smaller copy of a model for CPU serving (int8 item tables and layers)",
        description="Write a copy of --model to --out with the per-item tables (title and ID embeddings) and every "
                    "layer's weight matrix stored as int8 with a scale per row: about a quarter of their size. It "
                    "loads (back to float32) and recommends like any model; bench/RESULTS.md gives the quality change "
                    "measured on each log.")
    c.add_argument("--model", required=True, help="model folder (or workspace model name) to compress")
    c.add_argument("--out", required=True, help="new folder for the compressed copy")
    c.add_argument("--prune", type=float, default=0.0, help="also zero this share of the smallest weights of every dense layer (default 0)")
    c.add_argument("--layers", choices=("int8", "float32"), default="int8",
                   help="how the layers' weight matrices are stored (default int8; the item tables are int8 either way)")
    c.set_defaults(func=_compress)

    m = subparsers.add_parser("models", help="list or delete saved models in the workspace")
    m.add_argument("--delete", metavar="NAME", default=None, help="delete the saved model NAME")
    m.set_defaults(func=_models)


def _train(args: argparse.Namespace) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}.")
    if args.resume and not args.checkpoint_dir:
        raise ConfigError("--resume needs --checkpoint-dir (the folder with the checkpoint to continue).")
    interactions = Path(args.interactions)
    out = Path(args.out)
    cfg = default_config(encoder=args.encoder, epochs=args.epochs, seed=args.seed, device=args.device)
    if args.dp_epsilon is not None and args.warm_start:
        raise ConfigError("Private training (--dp-epsilon) starts from fresh weights: drop --warm-start, or train privately from scratch.")
    if args.dp_epsilon is not None:
        cfg = private_config(cfg, args.dp_epsilon, args.epochs)
    rank = 0
    if args.ddp:
        rank = init_distributed(cfg.train.device)
    ds = load_log(str(interactions), str(args.items) if args.items else None, mapping=column_mapping(args), name=out.name or interactions.stem)
    if args.item_vectors:
        ds = attach_item_vectors(ds, *read_item_vectors(args.item_vectors), label=f"'{Path(args.item_vectors).name}'")
    init = None
    if args.warm_start:  # the model's own settings; new items, categories and events appended (training/warm_start.py)
        cfg, ds, init = prepare_warm_start(args.warm_start, ds, encoder=args.encoder, epochs=args.epochs, seed=args.seed, device=args.device)
    show = rank == 0
    if show and args.dp_epsilon is not None and (few := few_shoppers_warning(ds.n_users)):
        print(f"warning: {few}", file=sys.stderr)
    if show:
        print(f"Training on {ds.name}: {ds.n_events:,} events, {ds.n_users:,} users, {ds.n_items:,} items, {ds.n_categories:,} categories", file=sys.stderr)
    bar = None
    state = {"phase": None}

    def on_progress(p) -> None:
        nonlocal bar
        if not show:
            return
        if p.phase == Phase.SAVE:
            return
        if p.phase != state["phase"] or (p.phase == "train" and bar is not None and bar.total != p.n_steps):
            if bar is not None:
                bar.close()
            desc = {"text": "encoding titles", "fusion": "fusion scorer", "fusion candidates": "fusion candidates",
                    "prior": "blend weights", "valid": "validating"}.get(p.phase, "training")
            bar = tqdm(total=p.n_steps or None, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
            state["phase"] = p.phase
        if p.phase in ("text", "train", "fusion", "fusion candidates"):
            bar.n = p.step
            post = {"epoch": f"{p.epoch}/{p.n_epochs}" + (f" {p.run}" if getattr(p, "run", "") else "")}
            if p.loss is not None:
                post["loss"] = f"{p.loss:.3f}"
            if state.get("ndcg") is not None:
                post["valid_ndcg10"] = f"{state['ndcg']:.4f}"
            bar.set_postfix(post, refresh=False)
            bar.refresh()
        if p.phase == "valid" and p.valid_ndcg10 is not None:
            state["ndcg"] = p.valid_ndcg10
            run = f" ({p.run})" if getattr(p, "run", "") else ""
            tqdm.write(f"epoch {p.epoch}{run}: loss {p.loss:.4f}  valid NDCG@10 {p.valid_ndcg10:.4f}", file=sys.stderr)

    t0 = time.perf_counter()
    try:
        model, path = train_and_save(
            ds,
            cfg,
            out,
            on_progress=on_progress,
            checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
            resume=args.resume,
            name=out.name or ds.name,
            init=init,
        )
    finally:
        if bar is not None:
            bar.close()
    if rank != 0:
        return 0
    v = model.metrics.get("valid", {})
    private = "privacy" in model.metrics
    print(
        f"{'last' if private else 'best'} epoch {model.metrics.get('best_epoch')}  valid NDCG@10 {v.get('ndcg10', 0.0):.4f}  "
        f"HR@10 {v.get('hr10', 0.0):.4f}  ({v.get('n', 0)} users)  time {time.perf_counter() - t0:.0f}s\n"
        + (f"most popular products on the same shoppers: valid NDCG@10 {v['popularity_ndcg10']:.4f}\n" if "popularity_ndcg10" in v else "")
        + (privacy_line(model.metrics["privacy"]) + "\nfusion re-rank, prior and item-kNN off (not private)\n" if private else
           f"fusion re-rank {'on' if v.get('fusion_rerank') else 'off'}: held-out NDCG@10 {v.get('ndcg10_fusion_oof', 0.0):.4f} "
           f"vs retrieval {v.get('ndcg10_retrieval_oof', 0.0):.4f} ({v.get('fusion_users', 0)} users, out of fold)\n")
        + (f"batches kept: {'random' if v.get('random_batches') else 'length buckets'} (valid NDCG@10 "
           + ", ".join(f"{k} {float(x):.4f}" for k, x in v["batch_choice"].items())
           + "".join(f"; {k} dropped after epoch {e}" for k, e in (v.get("batch_dropped") or {}).items()) + ")\n"
           if isinstance(v.get("batch_choice"), dict) else "")
        + f"model saved to {path}"
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.delete:
        registry.delete_model(args.delete)
        print(f"deleted model '{args.delete}'")
        return 0
    models = registry.list_models()
    if not models:
        print("no saved models (train one with `crossrec train`)")
        return 0
    print(f"{'name':30s} {'items':>8s} {'encoder':>11s} {'best epoch':>10s} {'valid NDCG@10':>13s} {'size MB':>8s}")
    for m in models:
        nd = f"{m.valid_ndcg10:.4f}" if m.valid_ndcg10 is not None else "-"
        print(f"{m.name:30s} {m.n_items:>8d} {m.encoder:>11s} {str(m.best_epoch or '-'):>10s} {nd:>13s} {m.size_bytes / 1e6:>8.1f}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    report = compress_model(args.model, args.out, CompressConfig(prune=args.prune, int8_layers=args.layers == "int8"))
    mb = lambda n: f"{n / 2**20:.1f} MB"  # noqa: E731
    print(f"compressed {args.model} -> {args.out}: {mb(report['source_bytes'])} -> {mb(report['compressed_bytes'])} "
          f"({len(report['int8_tables'])} item tables and {len(report['int8_layers'])} layer weights in int8"
          + (f", {report['pruned_layers']} layers pruned {report['prune']:.0%}" if report["prune"] else "") + ")",
          file=sys.stderr)
    return 0
