"""Retake the README's screenshots (assets/screenshots/*.png) from a running studio.

    CROSSREC_HOME=/tmp/shots .venv/bin/crossrec demo                        # the demo store and its model
    CROSSREC_HOME=/tmp/shots .venv/bin/streamlit run app.py --server.address 127.0.0.1 --server.port 8599 --server.headless true &
    .venv/bin/python docs/take_screenshots.py --url http://127.0.0.1:8599

Chromium from Debian (/usr/bin/chromium) through Playwright; each page is opened, given time to settle
(and, where a page waits for a click, clicked), then captured at 1500 x 1000 (taller where HEIGHT says).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parents[1] / "assets" / "screenshots"
# file name -> (page path, the button to press first or None, seconds to wait); HEIGHT: a taller window where
# the part worth showing is below the first 1000 px (Streamlit scrolls its own container, not the page)
SHOTS = {
    "recommendations.png": ("recommendations", None, 12),
    "map.png": ("embedding_map", None, 15),
    "push.png": ("push", "Find the audience", 15),
    "evaluation.png": ("evaluation", "Evaluate", 40),
    "train.png": ("train", None, 10),
}
HEIGHT = {"recommendations.png": 1600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8599")
    ap.add_argument("--only", default=None, help="comma-separated file names to retake (default: all)")
    args = ap.parse_args()
    wanted = set(args.only.split(",")) if args.only else set(SHOTS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        for name, (path, button, wait) in SHOTS.items():
            if name not in wanted:
                continue
            page.set_viewport_size({"width": 1500, "height": HEIGHT.get(name, 1000)})
            page.goto(f"{args.url}/{path}")
            page.wait_for_timeout(8000)
            if button:
                page.get_by_role("button", name=button).click()
            page.wait_for_timeout(wait * 1000)
            page.mouse.move(5, 990)  # no tooltip of the button just pressed over the page
            page.wait_for_timeout(800)
            page.screenshot(path=str(OUT / name))
            print("wrote", OUT / name)
        browser.close()


if __name__ == "__main__":
    main()
