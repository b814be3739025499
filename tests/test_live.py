"""Real-time recommending (issue 15, 3a): LiveRecommender, the HTTP server and `crossrec serve`, on a tiny trained model."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from crossrec_core.cli import main
from crossrec_core.config import ItemEncoderConfig, ModelConfig, TrainConfig, UserEncoderConfig
from crossrec_core.data.load import load_log
from crossrec_core.errors import ConfigError, DataError
from crossrec_core.serving.http_api import ServeConfig, make_server
from crossrec_core.serving.live import LiveConfig, LiveRecommender
from crossrec_core.serving.recommender import Recommender
from crossrec_core.storage.registry import save_model
from crossrec_core.training.loop import train_model
from test_cli_recommend import _pattern_files

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A model trained in a few seconds on 30 shoppers (Camping a_i -> Footwear b_i, some Kitchen c_i)."""
    folder = tmp_path_factory.mktemp("live")
    inter_path, items_path, inter, items = _pattern_files(folder)
    ds = load_log(str(inter_path), str(items_path))
    cfg = ModelConfig(
        item=ItemEncoderConfig(dim=8, use_text=False),
        user=UserEncoderConfig(dim=8, n_layers=1, max_len=8),
        train=TrainConfig(epochs=2, device="cpu", fusion_epochs=2, seed=0),
    )
    model = train_model(ds, cfg, name="tiny")
    return {"model": model, "ds": ds, "dir": save_model(model, folder / "model"), "inter": inter_path, "items": items_path,
            "item_ids": items["item_id"].tolist()}


# -- LiveRecommender -------------------------------------------------------------------------------------
def test_observe_changes_the_next_list_at_once_and_never_recommends_what_was_just_had(tiny):
    live = LiveRecommender(tiny["model"])
    before = live.recommend("newbie", 5).item_ids
    assert len(before) == 5
    had = []
    for _ in range(4):  # each time the shopper takes the top item of their list
        pick = live.recommend("newbie", 5).item_ids[0]
        got = live.observe("newbie", pick, "view", 1_700_000_000 + len(had))
        assert got.known_item and got.history_length == len(had) + 1
        had.append(pick)
        nxt = live.recommend("newbie", 5)
        assert not set(had) & set(nxt.item_ids), (had, nxt.item_ids)
        assert list(nxt.history_item_ids) == had
    assert live.recommend("newbie", 5).item_ids != before
    assert live.history("newbie")["item_id"].tolist() == had


def test_state_is_per_shopper(tiny):
    live = LiveRecommender(tiny["model"])
    fresh = live.recommend("nobody", 8).item_ids
    for t, item in enumerate(("a1", "b1", "a2", "b2")):
        live.observe("alice", item, "purchase", 100 + t)
    assert live.history("bob").empty
    assert live.recommend("bob", 8).item_ids == fresh  # Alice's events never reach Bob's list
    alice = live.recommend("alice", 8)
    assert not {"a1", "b1", "a2", "b2"} & set(alice.item_ids)
    assert alice.item_ids != fresh


def test_a_logged_shopper_starts_from_the_log_and_matches_the_recommender(tiny):
    ds, model = tiny["ds"], tiny["model"]
    live = LiveRecommender(model, ds)
    user = str(ds.user_ids[0])
    logged = [str(i) for i in ds.item_ids[ds.history(0)[0]]]
    assert live.history(user)["item_id"].tolist() == logged
    assert live.recommend(user, 5).item_ids == Recommender(model, ds).recommend(user, 5).item_ids
    nxt = next(i for i in live.recommend(user, 5).item_ids)
    live.observe(user, nxt, "cart", 1_800_000_000)
    assert nxt not in live.recommend(user, 5).item_ids


def test_concurrent_observe_from_several_threads_loses_no_event(tiny):
    live = LiveRecommender(tiny["model"], config=LiveConfig(history_factor=100))  # holds 800 events a shopper
    n_threads, per_thread = 8, 60
    start = threading.Barrier(n_threads)

    def worker(w: int) -> None:
        start.wait()
        for n in range(per_thread):
            live.observe(f"s{n % 3}", tiny["item_ids"][(w + n) % 24], "view", w * 1000 + n)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert live.n_observed == n_threads * per_thread
    held = [live.history(f"s{s}") for s in range(3)]
    assert sum(len(h) for h in held) == n_threads * per_thread
    for s, h in enumerate(held):  # every (thread, n) event once, each thread's events in its own order
        got = sorted(h["timestamp"].tolist())
        assert got == sorted(w * 1000 + n for w in range(n_threads) for n in range(per_thread) if n % 3 == s)
        for w in range(n_threads):
            mine = [t for t in h["timestamp"].tolist() if t // 1000 == w]
            assert mine == sorted(mine)


def test_histories_and_shoppers_are_bounded(tiny):
    live = LiveRecommender(tiny["model"], config=LiveConfig(history_factor=2, max_users=2))
    assert live.max_history == 16  # max_len 8 * 2
    for n in range(40):
        live.observe("long", tiny["item_ids"][n % 24], "view", n)
    assert live.history("long")["timestamp"].tolist() == list(range(24, 40))  # the latest 16
    live.observe("second", "a1")
    live.observe("third", "a2")  # "long" is the least recently active: dropped
    assert live.n_users == 2
    assert live.history("long").empty


def test_an_unknown_item_is_recorded_ignored_for_scoring_and_reported(tiny):
    live = LiveRecommender(tiny["model"])
    for t, item in enumerate(("a3", "b3", "a4")):
        live.observe("u", item, "view", t)
        live.observe("twin", item, "view", t)
    got = live.observe("u", "never-sold-item", "view", 10)
    assert not got.known_item and live.n_unknown == 1
    recs = live.recommend("u", 6)
    assert recs.unknown_item_ids == ("never-sold-item",)
    assert any("not in the model's catalogue" in n for n in recs.notes)
    assert recs.item_ids == live.recommend("twin", 6).item_ids  # scored as if it were not there
    assert live.history("u")["item_id"].tolist()[-1] == "never-sold-item"


@pytest.mark.parametrize(
    "kwargs",
    [{"user_id": None, "item_id": "a1"}, {"user_id": "u", "item_id": ""}, {"user_id": "u", "item_id": {"x": 1}},
     {"user_id": "u", "item_id": "a1", "timestamp": "yesterday"}, {"user_id": "u", "item_id": "a1", "timestamp": float("nan")},
     {"user_id": True, "item_id": "a1"}, {"user_id": "u" * 300, "item_id": "a1"}],
)
def test_bad_events_are_refused_with_a_sentence(tiny, kwargs):
    live = LiveRecommender(tiny["model"])
    with pytest.raises(DataError):
        live.observe(**kwargs)
    assert live.n_observed == 0


def test_live_config_validates():
    for bad in ({"history_factor": 0}, {"max_users": 0}, {"history_factor": 1.5}):
        with pytest.raises(ConfigError):
            LiveConfig(**bad)
    with pytest.raises(ConfigError):
        ServeConfig(port=70000)


# -- HTTP ---------------------------------------------------------------------------------------------------
@pytest.fixture()
def server(tiny):
    srv = make_server(LiveRecommender(tiny["model"], tiny["ds"]), ServeConfig(port=0, max_body_bytes=2000, max_k=50))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _call(srv, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == "application/json; charset=utf-8"
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_http_events_then_recommend(server):
    status, body = _call(server, "GET", "/recommend/web1?k=4")
    assert status == 200 and body["user_id"] == "web1" and len(body["items"]) == 4
    first = body["items"][0]
    assert set(first) == {"rank", "item_id", "title", "category", "score"} and first["rank"] == 1
    assert 0.0 <= first["score"] <= 1.0
    status, body = _call(server, "POST", "/events",
                          json.dumps({"user_id": "web1", "item_id": first["item_id"], "event": "view", "timestamp": 1_700_000_000}))
    assert (status, body) == (200, {"accepted": 1, "unknown_items": []})
    events = [{"user_id": "web1", "item_id": i, "event": "cart", "timestamp": 1_700_000_100 + n} for n, i in enumerate(("a5", "zz9"))]
    status, body = _call(server, "POST", "/events", json.dumps(events))
    assert (status, body) == (200, {"accepted": 2, "unknown_items": ["zz9"]})
    status, body = _call(server, "GET", "/recommend/web1?k=10")
    assert status == 200 and len(body["items"]) == 10
    got = [r["item_id"] for r in body["items"]]
    assert first["item_id"] not in got and "a5" not in got
    assert [r["rank"] for r in body["items"]] == list(range(1, 11))
    assert body["unknown_item_ids"] == ["zz9"] and body["history_length"] == 3
    status, body = _call(server, "GET", "/recommend/web2?k=4")  # another shopper: untouched
    assert body["history_length"] == 0
    status, body = _call(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["events_observed"] == 3 and body["items"] == 25


def test_http_a_logged_shopper_and_an_id_with_a_slash(server, tiny):
    user = str(tiny["ds"].user_ids[3])
    status, body = _call(server, "GET", f"/recommend/{user}?k=3")
    logged = {str(i) for i in tiny["ds"].item_ids[tiny["ds"].history(3)[0]]}
    assert status == 200 and body["history_length"] == len(logged) and not logged & {r["item_id"] for r in body["items"]}
    _call(server, "POST", "/events", json.dumps({"user_id": "a/b", "item_id": "a1", "timestamp": 5}))
    status, body = _call(server, "GET", "/recommend/a%2Fb?k=3")
    assert status == 200 and body["user_id"] == "a/b" and body["history_length"] == 1


@pytest.mark.parametrize(
    "method, path, body, fragment",
    [
        ("POST", "/events", "{not json", "not valid JSON"),
        ("POST", "/events", b"\xff\xfe", "not valid JSON"),
        ("POST", "/events", json.dumps({"user_id": "u"}), "no item_id"),
        ("POST", "/events", json.dumps([{"user_id": "u", "item_id": "a1"}, {"item_id": "a2"}]), "Event 2 has no user_id"),
        ("POST", "/events", json.dumps({"user_id": "u", "item_id": "a1", "timestamp": "noon"}), "timestamp"),
        ("POST", "/events", json.dumps([]), "empty"),
        ("POST", "/events", json.dumps(["a1"]), "not an object"),
        ("POST", "/events", json.dumps({"user_id": "u", "item_id": "x" * 3000}), "at most 2000"),
        ("GET", "/recommend/u?k=0", None, "k must be"),
        ("GET", "/recommend/u?k=abc", None, "k must be"),
        ("GET", "/recommend/u?k=51", None, "from 1 to 50"),
        ("GET", "/recommend/u?kk=3", None, "Unknown query parameter"),
        ("GET", "/recommend/u?cross_category_only=maybe", None, "true or false"),
    ],
)
def test_http_bad_input_is_400_with_one_sentence(server, method, path, body, fragment):
    status, answer = _call(server, method, path, body)
    assert status == 400, answer
    assert set(answer) == {"error"} and fragment in answer["error"] and "\n" not in answer["error"]
    assert _call(server, "GET", "/health")[1]["events_observed"] == 0  # nothing half-recorded


def test_http_unknown_paths_are_404_and_wrong_methods_405(server):
    for path in ("/", "/recommend", "/recommend/", "/recommend/u/extra", "/events/1", "/admin"):
        status, body = _call(server, "GET", path)
        assert status == 404 and "No such endpoint" in body["error"], path
    assert _call(server, "GET", "/events")[0] == 405
    assert _call(server, "POST", "/recommend/u", "{}")[0] == 405
    assert _call(server, "DELETE", "/health")[0] == 405


def test_http_no_content_length_is_refused(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/events")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 400 and "Content-Length" in json.loads(resp.read())["error"]
    conn.close()


# -- CLI ------------------------------------------------------------------------------------------------------
def test_cli_serve_refuses_a_missing_model_folder(tmp_path, capsys):
    rc = main(["serve", "--model", str(tmp_path / "nope"), "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("crossrec: error: Model folder") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_serve_refuses_items_without_a_log_and_a_bad_port(tiny, tmp_path, capsys):
    assert main(["serve", "--model", str(tiny["dir"]), "--items", str(tiny["items"])]) == 2
    assert "--interactions" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny["dir"]), "--port", "99999"]) == 2
    assert "port" in capsys.readouterr().err


def test_cli_serve_help_names_the_endpoints(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    for word in ("POST /events", "GET  /recommend/USER", "--interactions", "--host", "--port", "no authentication"):
        assert word in text


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["terminal", "background-job"])
def test_cli_serve_runs_answers_and_stops_on_ctrl_c(tiny, tmp_path, sigint_ignored):
    # a process started from a background shell job inherits SIGINT ignored: Ctrl-C must still stop the server
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossrec_core", "serve", "--model", str(tiny["dir"]), "--interactions", str(tiny["inter"]),
         "--items", str(tiny["items"]), "--port", "0"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "CROSSREC_HOME": str(tmp_path / "ws")}, preexec_fn=ignore,
    )
    try:
        line = proc.stderr.readline()
        assert "http://127.0.0.1:" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["items"] == 25
        conn.close()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        err = proc.stderr.read()
        assert rc == 0, err[-4000:]
        assert "stopping" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_closing_the_server_ends_idle_keep_alive_connections_and_their_threads(tiny):
    """Ctrl-C must not leave a handler thread running into interpreter shutdown (it can abort the process)."""
    srv = make_server(LiveRecommender(tiny["model"], tiny["ds"]), ServeConfig(port=0))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    conns = [http.client.HTTPConnection(*srv.server_address[:2], timeout=30) for _ in range(3)]
    for conn in conns:  # each answered once, then left open and idle (keep-alive)
        conn.request("GET", "/health")
        assert conn.getresponse().read()
    handlers = [t for t in threading.enumerate() if t is not thread and t.daemon and t.is_alive()
                and getattr(t, "_target", None) == srv.process_request_thread]
    assert len(handlers) == 3
    srv.shutdown()
    start = time.monotonic()
    srv.server_close()
    assert time.monotonic() - start < 5  # not the 30 s read timeout
    assert not any(t.is_alive() for t in handlers)
    for conn in conns:
        conn.close()
    thread.join(timeout=5)


def test_http_keep_alive_answers_without_the_nagle_delay(server):
    """With Nagle on, each answer on a kept-alive connection waited ~40 ms for a delayed ACK."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    times = []
    for n in range(15):
        t0 = time.perf_counter()
        conn.request("POST", "/events", body=json.dumps({"user_id": "fast", "item_id": "a1", "timestamp": n}).encode())
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        times.append(time.perf_counter() - t0)
    conn.close()
    assert sorted(times)[len(times) // 2] < 0.02, times
