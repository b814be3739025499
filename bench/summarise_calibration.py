"""Print the markdown tables of bench/calibration.py runs: mean and std over seeds, per log.

    .venv/bin/python bench/summarise_calibration.py bench/out/calibration-*.json
"""

from __future__ import annotations

import json
import sys

import numpy as np


def fmt(values, digits=4) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    return f"{np.mean(v):.{digits}f} ± {np.std(v):.{digits}f}" if len(v) > 1 else f"{v[0]:.{digits}f}"


def main(paths: list[str]) -> None:
    rows = [r for p in paths for r in json.loads(open(p).read())]
    logs = list(dict.fromkeys(r["log"] for r in rows))
    print("| log | seeds | NDCG@10 all (shipped) | same model, retrieval order | NDCG@10 novel (shipped) | retrieval order | "
          "ECE (test, top-10 rows) | mean probability | hit rate of rows | Brier | re-rank on | catalogue coverage | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for log in logs:
        rs = [r for r in rows if r["log"] == log]
        g = lambda k: [r.get(k) for r in rs]  # noqa: E731
        print(f"| {log} (users {rs[0]['users']}, novel {rs[0]['novel_users']}) | {','.join(str(r['seed']) for r in rs)} | "
              f"{fmt(g('ndcg'))} | {fmt(g('ndcg_retrieval_order'))} | {fmt(g('ndcg_novel'))} | {fmt(g('ndcg_novel_retrieval_order'))} | "
              f"{fmt(g('ece'))} | {fmt(g('mean_proba'))} | {fmt(g('hit_rate_rows'))} | {fmt(g('brier'))} | "
              f"{sum(bool(x) for x in g('fusion_rerank'))}/{len(rs)} | {fmt(g('coverage'), 3)} | {fmt(g('train_s'), 0)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
