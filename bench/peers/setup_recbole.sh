#!/usr/bin/env bash
# Create bench/peers/.venv: RecBole 1.2.1 for the side-by-side benchmark (never the app's .venv).
# Idempotent: re-running only installs what is missing. Usage: bash bench/peers/setup_recbole.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

# torch: exactly this version (a CPU wheel is available locally; other versions pull multi-GB CUDA builds)
"$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
  || "${PIP[@]}" "torch==2.13.0"

# RecBole without its declared dependencies: they include ray (hyper-parameter tuning, imported only by
# recbole.quick_start, which run_recbole.py does not use), thop (FLOP counting, quick_start only),
# plotly/tabulate (hyper_tuning reports) and exact pins (colorlog==4.7.2, colorama==0.4.4) that are
# not needed. Below are the modules RecBole imports on the path we use (config, data, model, trainer,
# evaluator, utils). pandas < 3: RecBole's Dataset._remap assigns a list of arrays to a column and uses
# chained inplace fillna, which pandas 3 (copy-on-write) rejects; numpy 2 and torch 2.13 are handled
# at run time by run_recbole.py.
"$VENV/bin/python" -c 'import recbole' 2>/dev/null || "${PIP[@]}" --no-deps "recbole==1.2.1"
"$VENV/bin/python" - <<'PY' 2>/dev/null || "${PIP[@]}" numpy scipy "pandas>=2.2,<3" pyyaml colorlog colorama texttable tensorboard scikit-learn tqdm psutil
import importlib, sys
mods = ["numpy", "scipy", "pandas", "yaml", "colorlog", "colorama", "texttable", "tensorboard", "sklearn", "tqdm", "psutil"]
for m in mods:
    importlib.import_module(m)
import pandas
sys.exit(int(pandas.__version__.split(".")[0]) >= 3)
PY

# smoke check: with the run-time shims, every RecBole module run_recbole.py needs imports
"$VENV/bin/python" "$HERE/run_recbole.py" --help >/dev/null
echo "RecBole venv ready: $VENV"
