#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, train crossrec on the synthetic 1M-event log with the CUDA
# path (mixed precision is switched on by train_model on CUDA), recommend for 100k users, and record
# events/s and GPU memory (torch.cuda.max_memory_allocated) in bench/out/gpu.md.
#
#   bash bench/gpu_check.sh            # from the repository root
#   EPOCHS=2 SIZE=1m bash bench/gpu_check.sh
#
# Environment knobs: VENV (default bench/out/gpu-venv), PYTHON (python3.11), TORCH_SPEC (default
# "torch==2.13.0"), TORCH_INDEX_URL (an index serving CUDA wheels; default PyPI, whose Linux x86_64
# torch wheels are CUDA builds), EPOCHS (2), SIZE (1m), REC_USERS (100000).
# If the interpreter already has a CUDA-enabled torch, the venv reuses it (--system-site-packages)
# and nothing is downloaded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
OUT="$ROOT/bench/out"
VENV="${VENV:-$OUT/gpu-venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://pypi.org/simple}"
EPOCHS="${EPOCHS:-2}"
SIZE="${SIZE:-1m}"
REC_USERS="${REC_USERS:-100000}"
mkdir -p "$OUT"

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no nvidia-smi on this machine: run it on a machine with a CUDA GPU." >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu-nvidia-smi.txt"

# 1) a venv with a CUDA torch
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  # --no-index on find-links would pick a local +cpu wheel: ask the CUDA-serving index only
  "$PY" -m pip install -q --disable-pip-version-check --no-cache-dir --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
fi
"$PY" -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0)); sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo "gpu_check: torch in $VENV cannot see a CUDA GPU." >&2; exit 2; }
"$PY" -c 'import crossrec_core' 2>/dev/null || "$PY" -m pip install -q --disable-pip-version-check -e "$ROOT"

# 2) the synthetic log (reused when present)
"$PY" bench/scale.py --sizes "$SIZE" --stages generate

# 3) CUDA training (mixed precision) + recommend, measured in one process
export CROSSREC_HOME="$OUT/gpu-workspace" EPOCHS SIZE REC_USERS
"$PY" - <<'PY'
import dataclasses, json, os, time
from pathlib import Path

import numpy as np
import torch

from crossrec_core.config import ModelConfig
from crossrec_core.data.load import load_log
from crossrec_core.serving.recommender import Recommender
from crossrec_core.training.loop import train_model

size, epochs, rec_users = os.environ["SIZE"], int(os.environ["EPOCHS"]), int(os.environ["REC_USERS"])
folder = Path("bench/out/scale") / size
t0 = time.perf_counter()
ds = load_log(folder / "interactions.csv", folder / "items.csv", name=f"gpu-{size}")
load_s = time.perf_counter() - t0
cfg = ModelConfig()
cfg = dataclasses.replace(
    cfg,
    item=dataclasses.replace(cfg.item, use_text=False),
    # patience >= epochs: every requested epoch runs, so events/s is measured on each
    train=dataclasses.replace(cfg.train, epochs=epochs, patience=max(epochs, cfg.train.patience), device="cuda"),
)
torch.cuda.reset_peak_memory_stats()
t1 = time.perf_counter()
model = train_model(ds, cfg, name=f"gpu-{size}")
torch.cuda.synchronize()
train_s = time.perf_counter() - t1
train_mem = torch.cuda.max_memory_allocated() / 2**20
hist = model.metrics.get("history", [])

torch.cuda.reset_peak_memory_stats()
users = np.random.default_rng(0).choice(ds.n_users, size=min(rec_users, ds.n_users), replace=False).astype(np.int64)
users.sort()
seqs = model.align(ds)
t2 = time.perf_counter()
rec = Recommender(model, ds).recommend_batch(seqs, users, ds.seqs.offsets[1:][users], 10)
torch.cuda.synchronize()
rec_s = time.perf_counter() - t2
rec_mem = torch.cuda.max_memory_allocated() / 2**20

lines = [
    f"## GPU check ({torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda})",
    "",
    f"Log: synthetic {size} ({ds.n_events:,} events, {ds.n_users:,} users, {ds.n_items:,} items); load_log {load_s:.1f}s.",
    f"Training: {epochs} epoch(s), text encoder off, loss {model.metrics.get('loss')}, mixed precision (train_model's CUDA path); "
    f"train_model wall {train_s:.1f}s; peak GPU memory {train_mem:.0f} MiB.",
    "",
    "| epoch | events/s | epoch train s | valid NDCG@10 |",
    "|---|---|---|---|",
]
for h in hist:
    lines.append(f"| {h.get('epoch')} | {h.get('events_per_s', float('nan')):,.0f} | {h.get('train_s', float('nan')):.1f} | {h.get('ndcg10', float('nan')):.4f} |")
lines += ["", f"Recommend top-10 for {len(users):,} users: {rec_s:.1f}s ({len(users) / rec_s:,.0f} users/s), {len(rec):,} rows; peak GPU memory {rec_mem:.0f} MiB.", ""]
Path("bench/out/gpu.md").write_text("\n".join(lines), encoding="utf-8")
Path("bench/out/gpu.json").write_text(json.dumps({"size": size, "epochs": epochs, "train_s": train_s, "train_peak_mib": train_mem,
    "history": hist, "recommend_s": rec_s, "recommend_users": int(len(users)), "recommend_peak_mib": rec_mem}, indent=2, default=float))
print("\n".join(lines))
PY
echo "gpu_check: wrote $OUT/gpu.md"
