"""Item neighbours alone, side by side: co-occurrence ("bought together") against next-item rules ("bought
next") in several settings, on the validation and test splits of each log (numpy only, seconds a log).

This is how the next-item rules' settings (ItemKNNRanker.next_items: window 3, last 3 items, decay 0.5)
were picked in session 11: the best validation NDCG@10 over chain-a, hm and the demo store, within a few
percent of each other. Training then chooses between co-occurrence and the rules per log on validation
(TrainConfig.knn_choice), so a log where order carries nothing (dense-c) keeps co-occurrence.

    .venv/bin/python bench/neighbour_rules.py --logs /tmp/chain-a,hm-fashion-oneday,demo,/tmp/dense-c
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from calibration import log_paths  # noqa: E402
from crossrec_core.data.load import load_log  # noqa: E402
from crossrec_core.evaluation.evaluator import evaluate_rankers  # noqa: E402
from crossrec_core.models.item_knn import ItemKNNRanker  # noqa: E402

# (window, n_recent, decay) of the directed tables compared
SETTINGS = [(1, 2, 0.5), (2, 2, 0.5), (2, 3, 0.5), (3, 3, 0.5), (2, 2, 0.3), (2, 2, 0.7), (5, 5, 0.5)]


def rankers() -> dict[str, ItemKNNRanker]:
    out = {"co-occurrence (shipped default)": ItemKNNRanker()}
    for w, r, d in SETTINGS:
        out[f"next-item rules w{w} last{r} decay{d}"] = ItemKNNRanker(window=w, n_recent=r, decay=d, directed=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", required=True, help="comma-separated: demo, a ../shared/data folder name, or a folder path")
    ap.add_argument("--demo-dir", default="/tmp/demo", type=Path)
    args = ap.parse_args()
    for name in args.logs.split(","):
        inter, items = log_paths(name, args.demo_dir)
        ds = load_log(str(inter), str(items), name=Path(name).name)
        for split in ("valid", "test"):
            table = evaluate_rankers(ds, rankers(), split=split).table()
            print(f"\n{Path(name).name}, {split} split")
            print(table[["HR@10", "NDCG@10", "coverage"]].round(4).to_string(), flush=True)


if __name__ == "__main__":
    main()
