"""Ablation: each part of the default model switched off alone, test figures of what ships.

For each log and variant: train (defaults with one change), recommend for every test history through
the shipped path (bench/calibration.py's `measure`), report NDCG@10 on all / novel users, ECE, and what
the fusion re-rank adds (the same model's lists in retrieval order). Run one job at a time.

    .venv/bin/python bench/ablation.py --logs demo,hm-fashion-oneday --out bench/out/ablation.json
    .venv/bin/python bench/ablation.py --out bench/out/ablation.json --table    # the markdown tables
    # a variant of your own: NAME=section.field:value,... (sections: item, user, train)
    .venv/bin/python bench/ablation.py --logs /tmp/dense-a --variants default \
        --custom "patience 10=train.patience:10,train.epochs:200" --out bench/out/tune.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from calibration import log_paths, measure  # noqa: E402

from crossrec_core.config import ModelConfig, changed_config  # noqa: E402
from crossrec_core.data.load import load_log  # noqa: E402


def variants() -> dict[str, ModelConfig]:
    base = ModelConfig()
    item, user, train = base.item, base.user, base.train
    r = dataclasses.replace
    return {
        "default": base,
        "no ID embedding": r(base, item=r(item, use_id=False)),
        "no category embedding": r(base, item=r(item, use_category=False)),
        "no attributes": r(base, item=r(item, use_attributes=False)),
        "no text encoder": r(base, item=r(item, use_text=False)),
        "no time gaps": r(base, user=r(user, use_time_gaps=False)),
        "no prior blend": r(base, train=r(train, prior_blend=False)),
        "no item-kNN term": r(base, train=r(train, knn_blend=False)),
        "co-occurrence only (no next-item rules)": r(base, train=r(train, knn_choice=False)),
        "no category mix": r(base, train=r(train, category_mix=False)),
        "no cold-start choice": r(base, train=r(train, cold_choice=False)),
        "no novel-category candidates": r(base, train=r(train, fusion_novel_candidates=0)),
        "GRU encoder": r(base, user=r(user, kind="gru")),
        "LSTM encoder": r(base, user=r(user, kind="lstm")),
    }


def custom_variant(spec: str) -> tuple[str, ModelConfig]:
    """Return (name, config) from "NAME=section.field:value,..." (values parsed as JSON, else text)."""
    name, _, changes = spec.partition("=")
    return name.strip(), changed_config(changes)


def table(rows: list[dict]) -> str:
    """Return one markdown table per log: each variant's mean ± std over its seeds, the change against the
    default's mean, what the fusion re-rank adds on test (shipped minus retrieval order), ECE and time."""
    def ms(xs: list) -> str:
        xs = [x for x in xs if x is not None]
        return "–" if not xs else f"{np.mean(xs):.4f} ± {np.std(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"

    out = []
    for log in dict.fromkeys(r["log"] for r in rows):
        mine = [r for r in rows if r["log"] == log]
        base = [r for r in mine if r["variant"] == "default"]
        b_all = np.mean([r["ndcg"] for r in base]) if base else np.nan
        b_nov = np.mean([r["ndcg_novel"] for r in base if r["ndcg_novel"] is not None]) if base else np.nan
        first = mine[0]
        out += [f"**{log}** ({first['users']:,} test shoppers, {first['novel_users']:,} novel-category)", "",
                "| variant | seeds | NDCG@10 all | vs default | novel | vs default | fusion adds (all / novel) | fusion on | ECE | best epoch | train s |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for variant in dict.fromkeys(r["variant"] for r in mine):
            rs = [r for r in mine if r["variant"] == variant]
            a = np.mean([r["ndcg"] for r in rs])
            nv = [r["ndcg_novel"] for r in rs if r["ndcg_novel"] is not None]
            n = np.mean(nv) if nv else np.nan
            add_a = np.mean([r["ndcg"] - r["ndcg_retrieval_order"] for r in rs])
            add_n = np.mean([r["ndcg_novel"] - r["ndcg_novel_retrieval_order"] for r in rs if r["ndcg_novel"] is not None]) if nv else np.nan
            out.append(f"| {variant} | {len(rs)} | {ms([r['ndcg'] for r in rs])} | {a / b_all - 1:+.1%} | {ms(nv)} | "
                       f"{n / b_nov - 1:+.1%} | {add_a:+.4f} / {add_n:+.4f} | {sum(bool(r['fusion_rerank']) for r in rs)}/{len(rs)} | "
                       f"{np.mean([r['ece'] for r in rs]):.4f} | {np.mean([r['best_epoch'] for r in rs]):.0f} | {np.mean([r['train_s'] for r in rs]):.0f} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", default="demo,hm-fashion-oneday")
    ap.add_argument("--variants", default=None, help="comma-separated subset of the variant names")
    ap.add_argument("--demo-dir", default="/tmp/demo")
    ap.add_argument("--custom", action="append", default=[], help='extra variant "NAME=section.field:value,..." (repeatable)')
    ap.add_argument("--seeds", default="42", help="comma-separated training seeds")
    ap.add_argument("--out", default="bench/out/ablation.json")
    ap.add_argument("--table", action="store_true", help="print the markdown tables of --out and stop")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return
    chosen = variants()
    if args.variants is not None:
        chosen = {k: v for k, v in chosen.items() if k in args.variants.split(",")}
    chosen.update(custom_variant(s) for s in args.custom)
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.is_file() else []
    for name in args.logs.split(","):
        inter, items = log_paths(name, Path(args.demo_dir))
        ds = load_log(str(inter), str(items), name=Path(name).name)
        for label, cfg in chosen.items():
            for seed in (int(s) for s in args.seeds.split(",")):
                if any(x["log"] == ds.name and x["variant"] == label and x["seed"] == seed for x in rows):
                    continue  # measured already: a rerun only trains what is missing
                row = {"variant": label, **measure(name, Path(args.demo_dir), 10, seed, cfg=cfg, ds=ds)}
                rows = [x for x in rows if not (x["log"] == row["log"] and x["variant"] == label and x["seed"] == row["seed"])] + [row]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(rows, indent=1))  # after every run: a long job keeps what it finished


if __name__ == "__main__":
    main()
