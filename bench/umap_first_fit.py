"""UMAP in a new process: the first map after install (numba compiles and writes its cache) against the
next new process (numba loads the cache). Issue 16: second and later fits of 20k items in a new process
under 15 s.

    .venv/bin/python bench/umap_first_fit.py --items 20000 --runs 3

Each run is a fresh Python process that imports crossrec_core, fits the UMAP map of ``--items`` random
64-d vectors (the studio's path: serving/projection.project_items, exact neighbours, 120 epochs) and
reports import and fit seconds. The numba cache starts empty (a temporary NUMBA_CACHE_DIR) unless
``--keep-cache`` names a folder. Prints JSON; run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from crossrec_core.serving.projection import ProjectionConfig, project_items
t1 = time.perf_counter()
try:
    from crossrec_core.serving.projection import import_umap
    import_umap()
except ImportError:  # a checkout from before import_umap (--root): umap's own caching only
    import umap
t2 = time.perf_counter()
x = np.random.default_rng(0).normal(size=(int(sys.argv[1]), 64)).astype(np.float32)
p = project_items(x, ProjectionConfig(method="umap"), use_cache=False)
t3 = time.perf_counter()
print(json.dumps({"import_s": round(t2 - t1, 1), "fit_s": round(t3 - t2, 1), "total_s": round(t3 - t0, 1)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3, help="new processes, one after the other")
    ap.add_argument("--keep-cache", default=None, help="numba cache folder to use (default: a new empty one)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the crossrec checkout to run (e.g. an older one, for before/after)")
    args = ap.parse_args()
    cache = args.keep_cache or tempfile.mkdtemp(prefix="numba-cache-")
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "CROSSREC_HOME": tempfile.mkdtemp(prefix="crossrec-umap-")}
    runs = []
    for i in range(args.runs):
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.items)], cwd=args.root, env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps({"run": i + 1, **runs[-1]}), flush=True)
    print(json.dumps({"items": args.items, "numba_cache": cache, "runs": runs, "load_average": list(os.getloadavg()),
                      "target_later_s": 15.0, "later_ok": all(r["import_s"] + r["fit_s"] < 15.0 for r in runs[1:])}))


if __name__ == "__main__":
    main()
