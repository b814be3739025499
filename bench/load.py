"""Many people at once (issue 17.3, 17.5): N browser sessions on one running studio, and a soak run.

Starts the studio from this checkout on a workspace (``--home``: a dataset and a model trained on it) and
opens Recommendations in N isolated Chromium contexts (one browser; each context is its own Streamlit
session). For ``--seconds``, each session loops over the Recommendations journey: pick ITS shopper by
typing the id in the search box (session i owns two shoppers no other session uses, and alternates), move
K, the threshold and variety, add a what-if product. After each action it waits for the page to be idle
(the run the action started has finished, read from the websocket as in bench/ui_latency.py, and nothing
is stale) and checks that the list's heading and the Shopper box show its own shopper, never another's.

Reports p50 / p95 time to idle per action, exceptions shown on a page, state mix-ups, and the server's
resident memory (VmRSS of the streamlit process, sampled every ``--sample-every`` seconds; the curve
is written to the JSON ``--out``). Soak: the same with ``--seconds 1800 --sample-every 30``. Run under
the shared lock::

    flock /tmp/bench.lock /work/main/.venv/bin/python bench/load.py --home /tmp/ui-home2 --sessions 1,5,10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from playwright.async_api import async_playwright
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_latency import CHROMIUM, CHROMIUM_ARGS, IDLE_JS, free_port, studio  # noqa: E402

from crossrec_core.storage.datasets import list_datasets, load_dataset  # noqa: E402

ACTIONS = ("shopper", "k", "threshold", "variety", "whatif")
HEADING_JS = ("() => [...document.querySelectorAll('h3')].map(h => h.innerText)"
              ".find(t => t.includes('for shopper')) || ''")


def rss_mb(pid: int) -> float:
    """Return the resident memory of process ``pid`` in MB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Session:
    """One browser context on the studio: its shoppers, its timings, what went wrong."""

    def __init__(self, i: int, shoppers: tuple[str, str]) -> None:
        self.i, self.shoppers = i, shoppers
        self.finished: list[tuple[float, str]] = []
        self.times: dict[str, list[float]] = {a: [] for a in ACTIONS}
        self.exceptions: list[str] = []
        self.mixups: list[str] = []
        self.timeouts = 0

    def frame(self, payload) -> None:
        if isinstance(payload, (bytes, bytearray)):
            try:
                msg = ForwardMsg.FromString(bytes(payload))
            except Exception:  # noqa: BLE001 - not a ForwardMsg: not ours to time
                return
            if msg.WhichOneof("type") == "script_finished":
                self.finished.append((time.perf_counter(), ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)))

    async def timed(self, page, name: str, act, timeout_s: float = 120) -> None:
        seen = len(self.finished)
        t0 = time.perf_counter()
        await act()
        while len(self.finished) <= seen or self.finished[-1][1] == "FINISHED_EARLY_FOR_RERUN":
            if time.perf_counter() - t0 > timeout_s:
                self.timeouts += 1
                await page.screenshot(path=f"/tmp/load-session-{self.i}-{name}-timeout.png")
                return
            await asyncio.sleep(0.005)
        await page.wait_for_function(IDLE_JS, timeout=timeout_s * 1000, polling="raf")
        self.times[name].append(time.perf_counter() - t0)
        if await page.locator('[data-testid="stException"]').count():
            self.exceptions.append(await page.locator('[data-testid="stException"]').first.inner_text())

    async def check_own(self, page, user: str, after: str) -> None:
        """Record a mix-up when the heading or the Shopper box shows another shopper than ``user``."""
        heading = await page.evaluate(HEADING_JS)
        box = await page.get_by_role("combobox", name="Shopper", exact=True).input_value()
        if user not in heading:
            self.mixups.append(f"session {self.i} after {after}: heading {heading[:90]!r}, expected {user}")
        if box != user:
            self.mixups.append(f"session {self.i} after {after}: Shopper box {box[:90]!r}, expected {user}")

    async def open_products(self, page) -> bool:
        """Open the what-if product list (and its expander when a full rerun closed it); False if it never opened."""
        box = page.get_by_label("Add products (newest last)")
        for _ in range(3):
            if not await box.is_visible():
                await page.get_by_text("What if... (edit the history)").click()
                await box.wait_for(state="visible")
            await box.focus()
            await box.press("ArrowDown")
            try:
                await page.wait_for_selector('[data-testid="stMultiSelectDropdown"] [role="option"]', state="attached",
                                             timeout=10_000)
                # highlight a product: Enter adds the highlighted one, or nothing
                for _ in range(3):
                    await box.press("ArrowDown")
                    if await page.locator('[data-testid="stMultiSelectDropdown"] [role="option"][data-focused]').count():
                        return True
                    await page.wait_for_timeout(200)
                await page.keyboard.press("Escape")
            except Exception:  # noqa: BLE001 - try again from a closed list
                await page.keyboard.press("Escape")
        return False

    async def journey(self, browser, base: str, until: float) -> None:
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(180_000)  # 10 sessions on 2 cores: slow, not stuck
        page = await context.new_page()
        page.on("websocket", lambda ws: ws.on("framereceived", self.frame))
        await page.goto(base + "/recommendations")
        await page.wait_for_selector('[data-testid="stApp"]', timeout=180_000)
        await page.wait_for_timeout(800)
        await page.wait_for_function(IDLE_JS, timeout=180_000, polling=200)
        try:
            await self.loop(page, until)
        except Exception:
            await page.screenshot(path=f"/tmp/load-session-{self.i}-failed.png")
            raise
        finally:
            await context.close()

    async def loop(self, page, until: float) -> None:
        turn = 0
        while time.perf_counter() < until:
            user = self.shoppers[turn % 2]
            search = page.get_by_placeholder("type part of an id")
            await search.fill(user)
            await self.timed(page, "shopper", lambda: search.press("Enter"))
            await self.check_own(page, user, "picking the shopper")
            for nth, name in enumerate(("k", "threshold", "variety")):
                thumb = page.get_by_role("slider").nth(nth)
                await thumb.focus()
                await self.timed(page, name, lambda: thumb.press("ArrowRight" if turn % 2 == 0 else "ArrowLeft"))
            if await self.open_products(page):
                # 30 s: an Enter that found no highlighted product adds nothing and starts no run (a keyboard
                # miss of this harness, about 1 in 6 presses, counted in "timeouts"); every real run here ends in < 10 s
                await self.timed(page, "whatif", lambda: page.get_by_label("Add products (newest last)").press("Enter"),
                                 timeout_s=30)
            else:
                self.timeouts += 1
                await page.screenshot(path=f"/tmp/load-session-{self.i}-whatif.png")
            await page.keyboard.press("Escape")
            await self.check_own(page, user, "tuning and a what-if edit")
            turn += 1


async def sample_memory(pid: int, every: float, until: float, t_start: float, curve: list, tsv: str | None) -> None:
    """Sample (seconds, RSS MB, 1-min load) until ``until``; each point is also appended to ``tsv`` at once
    (a soak cut short keeps its curve)."""
    while True:
        curve.append((round(time.perf_counter() - t_start, 1), round(rss_mb(pid), 1),
                      Path("/proc/loadavg").read_text().split()[0]))
        if tsv:
            with open(tsv, "a") as f:
                f.write("\t".join(map(str, curve[-1])) + "\n")
        if time.perf_counter() >= until:
            return
        await asyncio.sleep(every)


async def one_load(base: str, pid: int, n: int, seconds: float, every: float, shoppers: list[str],
                   tsv: str | None = None) -> dict:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sessions = [Session(i, (shoppers[2 * i], shoppers[2 * i + 1])) for i in range(n)]
        t_start = time.perf_counter()
        until = t_start + seconds
        curve: list = []
        rss_start = rss_mb(pid)
        results = await asyncio.gather(sample_memory(pid, every, until, t_start, curve, tsv),
                                       *(s.journey(browser, base, until) for s in sessions), return_exceptions=True)
        await browser.close()
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    per_action = {}
    for a in ACTIONS:
        t = np.asarray([x for s in sessions for x in s.times[a]])
        per_action[a] = {"n": int(len(t)), "p50_s": float(np.percentile(t, 50)) if len(t) else None,
                         "p95_s": float(np.percentile(t, 95)) if len(t) else None}
    return {"sessions": n, "seconds": seconds, "actions": per_action, "rss_mb_start": round(rss_start, 1),
            "rss_mb_end": round(rss_mb(pid), 1), "rss_mb_peak": max(c[1] for c in curve), "curve": curve,
            "exceptions": [e for s in sessions for e in s.exceptions], "mixups": [m for s in sessions for m in s.mixups],
            "timeouts": sum(s.timeouts for s in sessions), "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", required=True, help="CROSSREC_HOME with a dataset and a model trained on it")
    ap.add_argument("--sessions", default="1,5,10", help="comma-separated numbers of simultaneous sessions")
    ap.add_argument("--seconds", type=float, default=60, help="how long each load runs")
    ap.add_argument("--sample-every", type=float, default=2.0, help="seconds between memory samples")
    ap.add_argument("--curve", help="append each memory sample (seconds, RSS MB, load) to this TSV as it is taken")
    ap.add_argument("--out", help="write the figures (and the memory curve) as JSON here")
    args = ap.parse_args()
    name = sorted(info.name for info in list_datasets(root=args.home))[0]  # the studio's first dataset
    ds = load_dataset(name, root=args.home)
    counts = [int(x) for x in args.sessions.split(",")]
    step = max(1, ds.n_users // (2 * max(counts) + 1))
    shoppers = [str(ds.user_ids[j * step]) for j in range(2 * max(counts))]  # two per session, all different
    out = {"home": args.home, "dataset": name, "loadavg_before": Path("/proc/loadavg").read_text().split()[:3], "runs": []}
    with studio(args.home, free_port(), f"/tmp/load-{os.getpid()}.log") as (base, proc):
        for n in counts:
            r = asyncio.run(one_load(base, proc.pid, n, args.seconds, args.sample_every, shoppers, args.curve))
            r["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
            out["runs"].append(r)
            acts = "  ".join(f"{a} {v['p50_s'] or 0:.2f}/{v['p95_s'] or 0:.2f}s (n={v['n']})" for a, v in r["actions"].items())
            print(f"N={n}: p50/p95 {acts}; RSS {r['rss_mb_start']:.0f} -> {r['rss_mb_end']:.0f} MB (peak "
                  f"{r['rss_mb_peak']:.0f}); exceptions {len(r['exceptions'])}, mix-ups {len(r['mixups'])}, "
                  f"timeouts {r['timeouts']}, errors {r['errors']}; load {' '.join(r['loadavg_after'])}", flush=True)
            for m in r["mixups"][:5] + r["exceptions"][:3]:
                print("  ", m[:300])
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
