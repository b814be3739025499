"""The ceiling of a generated log: NDCG@10 of ranking by the TRUE next-item probability.

bench/chain_logs.py and bench/dense_logs.py know how every next event was drawn. This regenerates a log
from the command in its PROVENANCE.md, checks the regenerated events equal the files byte for byte in
content (so the ceiling belongs to exactly that log), and ranks every test shopper's unseen items by the
generator's own probability of being next, given the shopper's hidden taste and habits. No model can
expect more than that ranking: sorting by the true probability maximises the expected DCG of a list
with one relevant item. The figure is what a perfect model would score on the same split, the same
targets and the same metric code as every table in bench/RESULTS.md (`evaluate_rankers`), so a target
such as "1.1x the best peer" can be read against what the log allows.

    .venv/bin/python bench/oracle.py --logs /tmp/chain-a,/tmp/dense-a,/tmp/dense-b,/tmp/dense-c

The oracle knows the hidden tastes and habits; a real model must infer them from a history, so the
ceiling is above what is reachable, never below.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chain_logs  # noqa: E402
import dense_logs  # noqa: E402

from crossrec_core.data.dataset import InteractionDataset, Sequences  # noqa: E402
from crossrec_core.data.load import load_log  # noqa: E402
from crossrec_core.evaluation.baselines import PopularityRanker  # noqa: E402
from crossrec_core.evaluation.evaluator import evaluate_rankers  # noqa: E402
from crossrec_core.models.item_knn import BaselineRanker  # noqa: E402

YEAR = dense_logs.YEAR


def regenerate(folder: Path) -> tuple[str, dict]:
    """Return (generator kind, latents) of the generated log in ``folder``, after checking it reproduces the files."""
    text = (folder / "PROVENANCE.md").read_text()
    found = re.search(r"`bench/(chain_logs|dense_logs)\.py ([^`]*)`", text)
    if not found:
        raise SystemExit(f"{folder}: PROVENANCE.md names no bench/chain_logs.py or bench/dense_logs.py command.")
    kind, argv = found.group(1), shlex.split(found.group(2))
    args = dict(zip([a.lstrip("-").replace("-", "_") for a in argv[::2]], argv[1::2]))
    latents: dict = {}
    sizes = dict(users=int(args["users"]), items=int(args["items"]), categories=int(args["categories"]),
                 seed=int(args["seed"]), median_events=int(args["median_events"]))
    if kind == "chain_logs":
        inter, _ = chain_logs.generate(**sizes, follow=float(args["follow"]), latents=latents)
    else:
        inter, _ = dense_logs.generate(**sizes, latents=latents)
    on_disk = pd.read_csv(folder / "interactions.csv", dtype={"user_id": str, "item_id": str})
    if not inter.reset_index(drop=True).equals(on_disk[inter.columns].reset_index(drop=True)):
        raise SystemExit(f"{folder}: regenerating from PROVENANCE.md does not give the same events; regenerate the log.")
    return kind, latents


def _softmax_within(scores: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Return exp(scores) normalised within each group (scores is (n,), groups (n,) ints)."""
    top = np.full(n_groups, -np.inf)
    np.maximum.at(top, groups, scores)
    e = np.exp(scores - top[groups])
    return e / np.bincount(groups, weights=e, minlength=n_groups)[groups]


class OracleRanker(BaselineRanker):
    """Scores items by log P(next = item | history, hidden taste) under the generator of a log."""

    name = "oracle"

    def __init__(self, kind: str, latents: dict) -> None:
        super().__init__()
        self.kind, self.lat = kind, latents

    def fit(self, ds: InteractionDataset, seqs: Sequences) -> "OracleRanker":
        self._fit_popularity(ds, seqs)
        self.gen_item = np.array([int(i[1:]) for i in ds.item_ids], dtype=np.int64)
        self.gen_user = np.array([int(u[1:]) for u in ds.user_ids], dtype=np.int64)
        return self

    def score_histories(self, seqs: Sequences, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
        self._check_fitted()
        out = np.empty((len(users), self.n_items_), dtype=np.float32)
        for row, (u, end) in enumerate(zip(users, ends)):
            start = seqs.offsets[u]
            hist = self.gen_item[seqs.items[start:end]]
            p = self._chain(hist, self.gen_user[u]) if self.kind == "chain_logs" else \
                self._dense(hist, self.gen_user[u], float(seqs.times[end - 1]))
            out[row] = np.log(np.maximum(p[self.gen_item], 1e-30))
        return out

    def _chain(self, hist: np.ndarray, user: int) -> np.ndarray:
        lat = self.lat
        cat_of, pop = lat["cat_of"], lat["pop"]
        n = len(cat_of)
        comp_dist = np.zeros(n)
        sources = [(hist[-1], 1.0)] if len(hist) < 2 else [(hist[-1], 0.75), (hist[-2], 0.25)]
        for src, w in sources:
            np.add.at(comp_dist, lat["comp"][src], w * lat["comp_p"])
        within = _softmax_within(np.log(pop) + 1.5 * lat["item_vec"] @ lat["taste"][user], cat_of, int(cat_of.max()) + 1)
        cat_share = np.bincount(cat_of[hist], minlength=int(cat_of.max()) + 1) / len(hist)
        taste_dist = within * cat_share[cat_of]
        p = lat["follow"] * comp_dist + 0.25 * taste_dist + (1 - lat["follow"] - 0.25) * pop / pop.sum()
        p[hist[-3:]] = 0.0  # the generator never re-buys one of the last three
        return p

    def _dense(self, hist: np.ndarray, user: int, t: float) -> np.ndarray:
        lat = self.lat
        cat_of = lat["cat_of"]
        C = lat["chain"].shape[0]
        prev2, prev1 = (cat_of[hist[-2]], cat_of[hist[-1]]) if len(hist) >= 2 else (cat_of[hist[-1]],) * 2
        season = 1.0 + 0.8 * np.cos(2 * np.pi * (t % YEAR) / YEAR - lat["season_phase"])
        habit = lat["habit"][user]
        w = (0.55 * lat["chain"][prev2, prev1] + 0.45 * habit / habit.sum()) * season
        s = np.log(lat["pop"]) + 1.5 * lat["item_vec"] @ lat["taste"][user]
        s[np.unique(hist)] -= 3.0
        return (w / w.sum())[cat_of] * _softmax_within(s, cat_of, C)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", required=True, help="comma-separated folders made by chain_logs.py / dense_logs.py")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    print("| log | oracle NDCG@10, all | oracle, novel (n) | popularity, all | popularity, novel |")
    print("|---|---|---|---|---|")
    for name in args.logs.split(","):
        folder = Path(name)
        kind, latents = regenerate(folder)
        ds = load_log(str(folder / "interactions.csv"), str(folder / "items.csv"), name=folder.name)
        res = evaluate_rankers(ds, {"oracle": OracleRanker(kind, latents), "popularity": PopularityRanker()}, k=args.k)
        label = f"NDCG@{args.k}"
        o_all, o_nov = res.value("oracle", "all", label), res.value("oracle", "novel", label)
        p_all, p_nov = res.value("popularity", "all", label), res.value("popularity", "novel", label)
        print(f"| {folder.name} | {o_all:.4f} | {o_nov:.4f} ({res.subset_sizes['novel']:,}) | {p_all:.4f} | {p_nov:.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
