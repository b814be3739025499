"""A freshly started studio whose first request is a page's address: how long Streamlit's bare file list shows.

    .venv/bin/python bench/first_visit.py --home /tmp/walk18/home --runs 3                  # this checkout
    .venv/bin/python bench/first_visit.py --home /tmp/walk18/home --runs 3 --root <older checkout>

Each run starts a new server (`streamlit run app.py`) on a workspace with a dataset and a model, opens
``/recommendations`` in Chromium as the server's very first page request, and reads the sidebar every 0.1 s:
the first and last time it lists the files of pages/ (Streamlit's legacy mode, before the run is rerouted
through app.py) and when the studio's page, with its navigation, is drawn. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(root: Path, home: str, timeout_s: float = 120.0) -> dict:
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1", "--server.port", str(port),
         "--server.headless", "true"],
        cwd=root, env=dict(os.environ, CROSSREC_HOME=home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # the health endpoint answers before any page request
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        raw, studio_at = [], None
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/recommendations", wait_until="commit")
            while (t := time.perf_counter() - t0) < timeout_s:
                try:
                    side = page.locator("[data-testid=stSidebar]").inner_text(timeout=200)
                    main = page.locator("[data-testid=stMain]").inner_text(timeout=200)
                except Exception:  # noqa: BLE001 - not drawn yet
                    side = main = ""
                if "caches data" in side or "rec tuning" in side:  # file names only the legacy list shows
                    raw.append(t)
                if "Push a category" in side and "Find a shopper" in main:
                    studio_at = t
                    break
                time.sleep(0.1)
            browser.close()
    finally:
        server.terminate()
        server.wait()
    return {"root": str(root), "file_list_from_s": round(raw[0], 2) if raw else None,
            "file_list_to_s": round(raw[-1], 2) if raw else None, "file_list_samples": len(raw),
            "studio_drawn_s": None if studio_at is None else round(studio_at, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="a workspace with a dataset and a model (CROSSREC_HOME)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app.py is served")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for _ in range(args.runs):
        print(json.dumps(one_run(args.root, args.home)), flush=True)


if __name__ == "__main__":
    main()
