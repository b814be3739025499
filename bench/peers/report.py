"""Tables of compare.py's runs: mean +- std over seeds, paired-bootstrap intervals, ratios (APP venv).

``summarise(runs)`` turns the per-(method, seed) rows of one log into a JSON-ready summary;
``markdown_section`` renders it. Per-user NDCG@10 is averaged over a method's seeds first, then
crossrec minus the best peer (the RecBole model with the highest mean NDCG@10 on all users) is
bootstrapped over users (crossrec_core.evaluation.metrics.paired_bootstrap, 2,000 resamples).
"""

from __future__ import annotations

import math

import numpy as np

SUBSETS = ("all", "switch", "novel")
METRICS = ("NDCG@10", "HR@10")
REFERENCE = "crossrec"
PEER_PREFIX = "RecBole-"


def _mean_std(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and b > 0 else float("nan")


def summarise(runs: list[dict]) -> dict:
    """Return {"methods": {name: aggregates}, "best_peer", "paired", "ratios", "n_users"} for one log's runs."""
    from crossrec_core.evaluation.metrics import paired_bootstrap

    order: list[str] = []
    for r in runs:
        if r["method"] not in order:
            order.append(r["method"])
    methods, per_user, masks = {}, {}, {}
    for name in order:
        ok = [r for r in runs if r["method"] == name and "error" not in r]
        failed = [r for r in runs if r["method"] == name and "error" in r]
        agg: dict = {"form": (ok or failed)[0].get("form", "-"), "seeds": [r.get("seed") for r in ok],
                     "errors": [f"seed {r.get('seed')}: {r['error']}" for r in failed]}
        for s in SUBSETS:
            for m in METRICS:
                agg[f"{s}_{m}"] = _mean_std([r[f"{s}_{m}"] for r in ok])
        for f in ("time_to_best_seconds", "cpu_to_best_seconds", "train_seconds", "train_cpu_seconds", "epochs_run", "coverage"):
            agg[f] = _mean_std([r.get(f) for r in ok if isinstance(r.get(f), (int, float))])
        agg["epochs_run_list"] = [r.get("epochs_run") for r in ok]
        agg["best_epoch_list"] = [r.get("best_epoch") for r in ok]
        agg["stopped_by"] = sorted({r["stopped_by"] for r in ok if r.get("stopped_by")})
        agg["reused"] = sum(bool(r.get("reused")) for r in ok)
        methods[name] = agg
        if ok:
            per_user[name] = np.mean([r["_per_user"]["NDCG"] for r in ok], axis=0)
            masks = {s: ok[0]["_per_user"][f"mask_{s}"] for s in SUBSETS}
    n_users = {s: int(m.sum()) for s, m in masks.items()}
    peers = [n for n in per_user if n.startswith(PEER_PREFIX)]
    best_peer = max(peers, key=lambda n: methods[n]["all_NDCG@10"]["mean"]) if peers else None
    paired: dict = {}
    if REFERENCE in per_user:
        for other in per_user:
            if other == REFERENCE:
                continue
            paired[other] = {}
            for s in SUBSETS:
                if not masks[s].any():
                    continue
                d = paired_bootstrap(per_user[REFERENCE][masks[s]], per_user[other][masks[s]])
                paired[other][s] = {"diff": d.mean, "low": d.low, "high": d.high, "significant": d.significant, "n_users": d.n_users}
    ratios: dict = {}
    if REFERENCE in methods and best_peer:
        c, b = methods[REFERENCE], methods[best_peer]
        ratios["ndcg_vs_best_peer"] = {s: _ratio(c[f"{s}_NDCG@10"]["mean"], b[f"{s}_NDCG@10"]["mean"]) for s in SUBSETS}
    sas = f"{PEER_PREFIX}SASRec"
    if REFERENCE in methods and sas in methods:
        c, b = methods[REFERENCE], methods[sas]
        ratios["time_to_best_vs_sasrec"] = {"wall": _ratio(c["time_to_best_seconds"]["mean"], b["time_to_best_seconds"]["mean"]),
                                            "cpu": _ratio(c["cpu_to_best_seconds"]["mean"], b["cpu_to_best_seconds"]["mean"])}
    return {"methods": methods, "best_peer": best_peer, "paired": paired, "ratios": ratios, "n_users": n_users}


def _pm(a: dict, digits: int = 4) -> str:
    if not a or a["n"] == 0:
        return "-"
    return f"{a['mean']:.{digits}f}" + (f" ± {a['std']:.{digits}f}" if a["n"] > 1 else "")


def _epochs(agg: dict) -> str:
    runs, best = agg["epochs_run_list"], agg["best_epoch_list"]
    if not runs or all(r is None for r in runs):
        return "-"
    return ", ".join(f"{r} ({b})" for r, b in zip(runs, best))


def page_header(cmd: str, args) -> str:
    """Return the top of peers.md: title, the command and how to read the tables."""
    return (
        "## crossrec vs RecBole (leave-last-out, full ranking, K=10, seen items excluded)\n\n"
        f"Command: `{cmd}`\n\n"
        f"Seeds {', '.join(map(str, args.seeds))}; RecBole form **{args.recbole_form}** "
        + (("(all positions of " + ("each user's latest 50-event train window" if getattr(args, "allpos_windows", "last") == "last"
                                   else "every 50-event window of each user's train events")
            + " predict their next item, full-catalogue softmax, RecBole's SASRec / GRU4Rec classes and yaml defaults; "
              "bench/peers/allpos.py)") if args.recbole_form == "allpos"
           else "(RecBole's own Trainer on prefix-augmented samples)")
        + ". Cells are mean ± std over seeds (sample std). Time to best = wall / CPU seconds of training until the end "
        "of the best epoch's validation (crossrec: its training clock, which starts before feature building; its post-training "
        "blends are in train total only); epochs = epochs run (best epoch, counted from 1) per seed. Paired bootstrap: per-user "
        "NDCG@10 averaged over seeds, then 2,000 resamples of users, 95% interval.\n\n"
    )


def markdown_section(label: str, facts: dict, summary: dict) -> str:
    """Return one log's markdown: the table, user counts, bootstrap intervals and ratios."""
    n = summary["n_users"]
    note = (f"{facts['n_users']:,} users, {facts['n_items']:,} items, {facts['n_events']:,} events"
            + (f" (seeded sample of whole users, at most {facts['max_events']:,} events)" if facts.get("max_events") else "")
            + (f"; epoch cap {facts['epochs']} for every method (smoke run)" if facts.get("epochs") else
               f"; RecBole epoch cap {facts['recbole_epochs']}, patience {facts['stopping_step']}; crossrec its own defaults"))
    head = ("| method | form | seeds | NDCG@10 | HR@10 | switch NDCG@10 | switch HR@10 | novel NDCG@10 | novel HR@10 | "
            "time to best s | CPU to best s | train total s | epochs (best) | stopped by |")
    lines = [f"### {label}", "", note, "", f"Users evaluated: all {n.get('all', 0):,}, switch {n.get('switch', 0):,}, novel {n.get('novel', 0):,}.",
             "", head, "|" + "---|" * 14]
    for name, a in summary["methods"].items():
        if not a["seeds"] and a["errors"]:
            lines.append(f"| {name} | {a['form']} | failed: {'; '.join(a['errors'])[:200]} |" + " |" * 11)
            continue
        seeds = "-" if a["seeds"] == [None] else str(len(a["seeds"])) + (f" (+{len(a['errors'])} failed)" if a["errors"] else "")
        if a["reused"]:
            seeds += f", {a['reused']} cached"
        lines.append(
            f"| {name} | {a['form']} | {seeds} | " + " | ".join(_pm(a[f"{s}_{m}"]) for s in ("all", "switch", "novel") for m in METRICS)
            + f" | {_pm(a['time_to_best_seconds'], 1)} | {_pm(a['cpu_to_best_seconds'], 1)} | {_pm(a['train_seconds'], 1)} | {_epochs(a)} | "
            f"{', '.join(a['stopped_by']) or '-'} |"
        )
    best, paired, ratios = summary["best_peer"], summary["paired"], summary["ratios"]
    if best and best in paired:
        lines += ["", f"Best peer: **{best}**. crossrec − {best}, NDCG@10, 95% paired-bootstrap interval:"]
        for s, d in paired[best].items():
            lines.append(f"- {s} ({d['n_users']:,} users): {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                         + ("" if d["significant"] else " (within noise)"))
        others = [f"{o}: " + "; ".join(f"{s} {d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" for s, d in v.items())
                  for o, v in paired.items() if o != best]
        if others:
            lines += ["", "crossrec − the other methods (NDCG@10, same bootstrap):"] + [f"- {o}" for o in others]
    if "ndcg_vs_best_peer" in ratios:
        r = ratios["ndcg_vs_best_peer"]
        lines += ["", f"crossrec / {best} NDCG@10: all x{r['all']:.2f}, switch x{r['switch']:.2f}, novel x{r['novel']:.2f}."]
    if "time_to_best_vs_sasrec" in ratios:
        r = ratios["time_to_best_vs_sasrec"]
        lines += [f"crossrec / RecBole-SASRec time to best: wall x{r['wall']:.2f}, CPU x{r['cpu']:.2f}."]
    return "\n".join(lines) + "\n"
