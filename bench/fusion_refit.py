"""Refit only the fusion scorer of saved models and measure what ships on test: fusion variants compared
with the encoders, priors and item-kNN held fixed (the fusion fit is the last step of training, so a
variant costs seconds per log instead of a whole training run).

    # once per log: train with the defaults and save (seed 42)
    .venv/bin/python bench/fusion_refit.py train --logs demo,/tmp/chain-a,hm-fashion-oneday --models /tmp/refit-models
    # refit the scorer with three fusion seeds, as the code and config stand (label "base") ...
    .venv/bin/python bench/fusion_refit.py refit --logs demo,/tmp/chain-a,hm-fashion-oneday --models /tmp/refit-models --label base
    # ... and with train-config overrides
    .venv/bin/python bench/fusion_refit.py refit ... --label pool100 --set fusion_candidates=100 --set fusion_novel_candidates=20
    # paired bootstrap of each variant against "base" (per-user NDCG@10 averaged over the fusion seeds)
    .venv/bin/python bench/fusion_refit.py compare --logs ... --models /tmp/refit-models --base base --variants pool100

Each refit prints NDCG@10 on all / novel-category test shoppers, whether the re-rank stayed on, and the
mean shown probability against the observed hit rate of the top-10 rows; per-user NDCG is saved under
MODELS/ndcg-LABEL-LOG.npy for ``compare``. Run one job at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.calibration import log_paths  # noqa: E402
from crossrec_core.config import ModelConfig  # noqa: E402
from crossrec_core.data.load import load_log  # noqa: E402
from crossrec_core.evaluation.evaluator import rank_shipped, ranker_space, split_targets  # noqa: E402
from crossrec_core.evaluation.metrics import calibration_report, paired_bootstrap, per_user_ranking_metrics  # noqa: E402
from crossrec_core.models.features import N_FEATURES  # noqa: E402
from crossrec_core.models.fusion import FusionScorer  # noqa: E402
from crossrec_core.storage.registry import load_model, save_model  # noqa: E402
from crossrec_core.training.fusion_fit import fit_on_validation  # noqa: E402
from crossrec_core.models.category_history import fit_category_history  # noqa: E402
from crossrec_core.training.loop import train_model, validation_targets  # noqa: E402
from crossrec_core.training.tuning import tune_blends  # noqa: E402


def load(name: str, demo_dir: Path):
    inter, items = log_paths(name, demo_dir)
    return load_log(str(inter), str(items), name=Path(name).name)


def test_ndcg(model, ds, k: int = 10) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return per-user test NDCG@k of the shipped lists, the novel-target flags, the calibration report."""
    t = split_targets(ds, "test")
    space = ranker_space(model, ds, t.users, t.ends, t.targets)
    top, prob = rank_shipped(model, space, t.users, k)  # what `crossrec recommend` ships
    hits = top == space.targets[:, None]
    return per_user_ranking_metrics(top, space.targets, k)["NDCG"], t.novel, calibration_report(prob[top >= 0], hits[top >= 0])


def overrides(pairs: list[str], train) -> dict:
    """Return {field: value} from "field=value" strings, each cast to the TrainConfig field's type."""
    out = {}
    for kv in pairs:
        key, value = kv.split("=", 1)
        kind = type(getattr(train, key))
        out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return out


def retune_blends(model, ds, split, sets: list[str]) -> None:
    """Choose the blend weights again under the TrainConfig overrides ``sets`` (the encoders stay as saved)."""
    model.config = dataclasses.replace(model.config, train=dataclasses.replace(model.config.train, **overrides(sets, model.config.train)))
    prior = model.prior
    model.category_history = fit_category_history(ds.seqs.truncate(split.train_end), ds.item_category, prior.transition_proba.shape[0], prior.category_prior)
    v_users, v_ends, v_targets = validation_targets(ds, split, model.config.train)
    valid = tune_blends(model, ds, split, v_users, v_ends, v_targets, 0, 0.0, lambda **kw: None)
    print("blends:", {k: v for k, v in valid.items() if k in ("category_mix", "prior_w_pop", "prior_w_cat", "knn_weight", "ndcg10_prior") or k.startswith(("cold", "knn_next", "ndcg10_knn"))}, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["train", "refit", "compare"])
    ap.add_argument("--logs", required=True, help="comma-separated: demo, a ../shared/data folder name, or a folder path")
    ap.add_argument("--models", required=True, type=Path, help="folder of the saved models (one per log) and results")
    ap.add_argument("--demo-dir", default="/tmp/demo", type=Path)
    ap.add_argument("--seeds", default="42,43,44", help="fusion-fit seeds (refit)")
    ap.add_argument("--label", default="base")
    ap.add_argument("--set", action="append", default=[], help="TrainConfig override field=value (repeatable)")
    ap.add_argument("--base", default="base")
    ap.add_argument("--variants", default="")
    ap.add_argument("--retune-blends", action="store_true",
                    help="refit: first choose the blends again (next-category mixture, log-prior and item-kNN weights) "
                         "under the overrides, as training does after its last epoch; the encoders stay fixed")
    args = ap.parse_args()
    for name in args.logs.split(","):
        tag = Path(name).name
        ds = load(name, args.demo_dir)
        folder = args.models / tag
        if args.action == "train":
            save_model(train_model(ds, ModelConfig()), folder)
            continue
        if args.action == "compare":
            novel = split_targets(ds, "test").novel
            base = np.load(args.models / f"ndcg-{args.base}-{tag}.npy").mean(axis=0)
            for v in filter(None, args.variants.split(",")):
                x = np.load(args.models / f"ndcg-{v}-{tag}.npy").mean(axis=0)
                d, dn = paired_bootstrap(x, base), paired_bootstrap(x[novel], base[novel])
                print(f"{tag} {v}: all {x.mean():.4f} vs {base.mean():.4f} [{d.low:+.4f}, {d.high:+.4f}]; "
                      f"novel {x[novel].mean():.4f} vs {base[novel].mean():.4f} [{dn.low:+.4f}, {dn.high:+.4f}]", flush=True)
            continue
        model = load_model(folder)
        split = ds.leave_last_out()
        if args.retune_blends:
            retune_blends(model, ds, split, args.set)
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            train = dataclasses.replace(model.config.train, seed=seed, **overrides(args.set, model.config.train))
            model.config = dataclasses.replace(model.config, train=train)
            model.net.fusion = FusionScorer(N_FEATURES)
            fit = fit_on_validation(model, ds, split.valid_users.astype(np.int64), split.valid_pos, lambda **kw: None)
            nd, novel, cal = test_ndcg(model, ds)
            rows.append(nd)
            print(f"{args.label} {tag} seed {seed}: all {nd.mean():.4f} novel {nd[novel].mean():.4f} re-rank "
                  f"{'on' if fit['fusion_rerank'] else 'off'} (epochs kept {fit.get('fusion_epochs_kept')}, base 1/{fit.get('fusion_retrieval_scale') or 1:.3g}); top-10 mean "
                  f"probability {cal['mean_proba']:.4f}, hit rate {cal['positive_rate']:.4f}", flush=True)
        np.save(args.models / f"ndcg-{args.label}-{tag}.npy", np.stack(rows))


if __name__ == "__main__":
    main()
