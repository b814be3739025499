"""Tuning the list at browser speed (issue 18.5): time from an action on Recommendations to an idle page.

Starts the studio from this checkout (``streamlit run app.py``) on a workspace, opens Recommendations in
Debian's Chromium (playwright, never ``playwright install``) and repeats each action ``--reps`` times:
move K, move the threshold, move variety (arrow keys on the focused slider, right then left), toggle the
"new categories only" filter, a what-if edit (add the first product offered), pick a random
shopper. One action's time runs from the key press / click that changes something (focusing the slider
and opening the product list come before, untimed) to the moment the page is idle again:

* the server has sent ``script_finished`` for the run that the action started (read from the page's
  websocket frames, parsed as Streamlit ForwardMsg protobufs: a full run or a fragment run), and
* the browser shows no "Running..." status widget and no element faded as stale (what tests/test_browser.py
  waits for), checked on every animation frame.

Prints p50 / p95 / max per action and writes them as JSON (``--out``). Run under the shared lock::

    flock /tmp/bench.lock /work/main/.venv/bin/python bench/ui_latency.py --home /tmp/ui-home --label demo
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
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IDLE_JS = ("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
           " && !document.querySelector('[data-stale=\"true\"]')")
ACTIONS = ("k", "threshold", "variety", "filter", "whatif", "shopper")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def studio(home: str, port: int, log_path: str):
    """Yield the base URL of a studio started from this checkout on ``home``; stop it afterwards."""
    env = dict(os.environ, CROSSREC_HOME=home, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                                 "--server.port", str(port), "--server.headless", "true"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(base, proc)
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_healthy(base: str, proc=None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise SystemExit("the studio did not start")
        time.sleep(0.3)


class RunWatcher:
    """Records when each ``script_finished`` frame reaches the page (perf_counter seconds, status name)."""

    def __init__(self, page) -> None:
        self.finished: list[tuple[float, str]] = []
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        if not isinstance(payload, (bytes, bytearray)):
            return
        try:
            msg = ForwardMsg.FromString(bytes(payload))
        except Exception:  # noqa: BLE001 - a frame that is not a ForwardMsg is not ours to time
            return
        if msg.WhichOneof("type") == "script_finished":
            self.finished.append((time.perf_counter(), ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)))


def settle(page, timeout: float = 120_000) -> None:
    """Wait for a page that has finished its run (first load, or after an untimed step)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    page.wait_for_timeout(800)
    page.wait_for_function(IDLE_JS, timeout=timeout, polling=100)


def timed(page, watcher: RunWatcher, act, timeout_s: float = 60) -> tuple[float, str]:
    """Return (seconds from ``act()`` to idle, how the run finished)."""
    seen = len(watcher.finished)
    t0 = time.perf_counter()
    act()
    deadline = t0 + timeout_s
    while len(watcher.finished) <= seen or watcher.finished[-1][1] == "FINISHED_EARLY_FOR_RERUN":
        if time.perf_counter() > deadline:
            return float("nan"), "timeout"
        page.wait_for_timeout(5)
    page.wait_for_function(IDLE_JS, timeout=timeout_s * 1000, polling="raf")
    return time.perf_counter() - t0, watcher.finished[-1][1]


def nothing() -> None:
    pass


def slider_action(page, nth: int, rep: int):
    thumb = page.get_by_role("slider").nth(nth)
    return (lambda: thumb.focus()), (lambda: thumb.press("ArrowRight" if rep % 2 == 0 else "ArrowLeft"))


def whatif_action(page):
    box = page.get_by_label("Add products (newest last)")

    def setup():  # open the expander when a full rerun closed it, then the product list
        for _ in range(3):
            if not box.is_visible():
                page.get_by_text("What if... (edit the history)").click()
                box.wait_for(state="visible")
            box.focus()
            box.press("ArrowDown")  # opens the product list
            try:
                page.wait_for_selector('[data-testid="stMultiSelectDropdown"]', state="attached", timeout=5000)
                return
            except Exception:  # noqa: BLE001 - try again from a closed list
                page.keyboard.press("Escape")
        page.screenshot(path="/tmp/ui_latency-whatif-failed.png")
        raise SystemExit("the what-if product list did not open (screenshot /tmp/ui_latency-whatif-failed.png)")
    return setup, (lambda: box.press("Enter"))  # add the first product offered (an added one is no longer offered)


def action(page, name: str, rep: int):
    """Return (untimed set-up, the timed action) of action ``name``: the set-up is what a person does before
    the change itself (focus the slider, open the product list)."""
    if name in ("k", "threshold", "variety"):
        return slider_action(page, ("k", "threshold", "variety").index(name), rep)
    if name == "filter":
        return nothing, (lambda: page.get_by_text("Only categories new to this shopper").click())
    if name == "whatif":
        return whatif_action(page)
    return nothing, (lambda: page.get_by_role("button", name="Random shopper").click())


def run(base: str, reps: int, shots: Path | None, actions=ACTIONS) -> dict:
    out: dict[str, dict] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        watcher = RunWatcher(page)
        page.goto(base + "/recommendations")
        settle(page)
        if shots:
            page.screenshot(path=str(shots / "before-actions.png"), full_page=True)
        for name in actions:
            times, how = [], {}
            for rep in range(reps + 1):  # rep 0 warms the caches of this action, not counted
                setup, act = action(page, name, rep)
                setup()
                t, status = timed(page, watcher, act)
                page.keyboard.press("Escape")  # close an open dropdown (untimed)
                if page.locator('[data-testid="stException"]').count():
                    raise SystemExit(f"exception on the page after {name}: " +
                                     page.locator('[data-testid="stException"]').first.inner_text())
                if rep:
                    times.append(t)
                    how[status] = how.get(status, 0) + 1
            a = np.asarray(times)
            out[name] = {"p50_s": float(np.nanpercentile(a, 50)), "p95_s": float(np.nanpercentile(a, 95)),
                         "max_s": float(np.nanmax(a)), "n": int(np.isfinite(a).sum()), "runs": how}
            print(f"{name:10s} p50 {out[name]['p50_s']:.3f} s  p95 {out[name]['p95_s']:.3f} s  "
                  f"max {out[name]['max_s']:.3f} s  n={out[name]['n']}  {how}", flush=True)
        if shots:
            page.screenshot(path=str(shots / "after-actions.png"), full_page=True)
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", required=True, help="CROSSREC_HOME with a dataset and a model trained on it")
    ap.add_argument("--url", help="time a studio that is already running here instead of starting one")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", help="write the figures as JSON here")
    ap.add_argument("--actions", default=",".join(ACTIONS), help="comma-separated subset of " + ",".join(ACTIONS))
    ap.add_argument("--shots", help="folder for a screenshot before and after the actions")
    args = ap.parse_args()
    shots = Path(args.shots) if args.shots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    if args.url:
        wait_healthy(args.url)
        figures = run(args.url, args.reps, shots, args.actions.split(','))
    else:
        with studio(args.home, free_port(), f"/tmp/ui_latency-{os.getpid()}.log") as (base, _):
            figures = run(base, args.reps, shots, args.actions.split(','))
    result = {"label": args.label, "home": args.home, "reps": args.reps, "actions": figures,
              "loadavg_before": load_before, "loadavg_after": Path("/proc/loadavg").read_text().split()[:3]}
    print("load average before", *load_before, "after", *result["loadavg_after"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
