"""A small JSON-over-HTTP front of a LiveRecommender (standard library only: http.server).

Endpoints (JSON in, JSON out; nothing is ever rendered as HTML):

* ``POST /events``: one event ``{"user_id", "item_id", "event", "timestamp"}`` or a list of them
  (``event`` and ``timestamp`` optional: the default event, now) -> 200 ``{"accepted": n, "unknown_items": [...]}``.
* ``GET /recommend/{user_id}?k=10[&cross_category_only=true]`` -> 200 ``{"user_id", "items": [{"rank",
  "item_id", "title", "category", "score"}], ...}``; ``score`` is the calibrated probability that the item
  is the shopper's next one, as in ``crossrec recommend``.
* ``POST /items``: one new item ``{"item_id", "title", "category"}`` or a list of them -> 200 ``{"added": n,
  "item_ids": [...], "items": total}``; they are recommendable from the next request (issue 15, 3b). An id
  the model knows or a category it was not trained on is refused (400), and then none of the list is added.
* ``GET /health`` -> 200 ``{"status": "ok", ...}``.

Bad input answers 400 with ``{"error": "one plain sentence"}``, an unknown path 404, a wrong method 405.
There is no authentication: the server binds 127.0.0.1 by default and belongs behind your own gateway.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from crossrec_core.errors import ConfigError, CrossrecError
from crossrec_core.serving.live import LiveRecommender
from crossrec_core.serving.types import RecommendationList

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    """Where the server listens and what it accepts.

    max_body_bytes: a POST body above this is refused unread (1 MB holds thousands of events).
    max_k: the longest list one request may ask for (a list is scored in one pass; 1000 keeps it cheap).
    max_events: events (or new items) in one POST.
    read_timeout_s: a client that stops sending mid-request is dropped after this long.
    """

    host: str = "127.0.0.1"  # loopback only: there is no authentication
    port: int = 8000
    max_body_bytes: int = 1_000_000
    max_k: int = 1000
    max_events: int = 10_000
    read_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"The port must be a whole number from 0 to 65535, got {self.port!r}.")
        for name in ("max_body_bytes", "max_k", "max_events"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {v!r}.")
        if not self.read_timeout_s > 0:
            raise ConfigError(f"read_timeout_s must be above 0 seconds, got {self.read_timeout_s!r}.")


class BadRequest(Exception):
    """A request the client must fix: answered with its status and one sentence."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST, close: bool = False, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.close = close
        self.allow = allow


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def list_payload(recs: RecommendationList) -> dict[str, Any]:
    """Return the JSON body of GET /recommend for one shopper's list."""
    return {
        "user_id": recs.user_id,
        "items": [
            {"rank": r.rank, "item_id": r.item_id, "title": r.title, "category": r.category, "score": _finite(r.probability)}
            for r in recs.items
        ],
        "cold_start": recs.cold_start,
        "history_length": len(recs.history_item_ids) + len(recs.unknown_item_ids),
        "unknown_item_ids": list(recs.unknown_item_ids),
        "notes": list(recs.notes),
    }


def _flag(values: list[str], name: str) -> bool:
    v = values[-1].strip().lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no", ""):
        return False
    raise BadRequest(f"{name} must be true or false, got {values[-1][:40]!r}.")


class _Handler(BaseHTTPRequestHandler):
    server: "LiveServer"
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection (latency)
    # headers and body leave in two writes: with Nagle on, the body waits for the client's delayed ACK (~40 ms)
    disable_nagle_algorithm = True
    server_version = "crossrec"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.config.read_timeout_s
        super().setup()

    # -- plumbing ----------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: dict[str, Any], close: bool = False, allow: str | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", allow)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, method: str) -> None:
        self._body_read = False
        try:
            status, body = self._route(method)
            self._send(status, body)
        except BadRequest as err:
            # a body left unread would be taken for the next request on this connection: close it
            unread = method != "GET" and not self._body_read
            self._send(err.status, {"error": str(err)}, close=err.close or unread, allow=err.allow)
        except CrossrecError as err:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except Exception:  # a bug: logged with its traceback, the client gets no internals
            log.exception("crossrec serve: %s %s failed", method, self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "Internal error; the server log has the details."}, close=True)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._answer("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._answer("DELETE")

    # -- routes ------------------------------------------------------------------------------
    def _route(self, method: str) -> tuple[HTTPStatus, dict[str, Any]]:
        url = urlsplit(self.path)
        path = url.path
        if path == "/health":
            self._only(method, "GET")
            return HTTPStatus.OK, self._health()
        if path == "/events":
            self._only(method, "POST")
            return HTTPStatus.OK, self._events()
        if path == "/items":
            self._only(method, "POST")
            return HTTPStatus.OK, self._items()
        if path.startswith("/recommend/") and path.count("/") == 2 and len(path) > len("/recommend/"):
            self._only(method, "GET")
            return HTTPStatus.OK, self._recommend(unquote(path[len("/recommend/"):]), url.query)
        raise BadRequest(f"No such endpoint: {path[:100]}. The endpoints are POST /events, POST /items, GET /recommend/<user_id>, GET /health.",
                         HTTPStatus.NOT_FOUND)

    def _only(self, method: str, allowed: str) -> None:
        if method != allowed:
            raise BadRequest(f"{self.path.split('?')[0][:100]} answers {allowed} only, not {method}.",
                             HTTPStatus.METHOD_NOT_ALLOWED, allow=allowed)

    def _health(self) -> dict[str, Any]:
        live = self.server.live
        return {"status": "ok", "items": int(live.recommender.n_items), "users_held": live.n_users,
                "events_observed": live.n_observed, "unknown_item_events": live.n_unknown}

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest("Send the body with a Content-Length header, not chunked.", close=True)
        if length is None:
            raise BadRequest("The request has no Content-Length header; send the JSON body with its length.", close=True)
        try:
            n = int(length)
        except ValueError:
            raise BadRequest(f"Content-Length must be a whole number, got {length[:40]!r}.", close=True) from None
        limit = self.server.config.max_body_bytes
        if n < 0 or n > limit:
            # refused unread: the connection is closed instead of draining a huge body
            raise BadRequest(f"The body is {n} bytes; at most {limit} are accepted, so send fewer events per request.", close=True)
        raw = self.rfile.read(n)
        self._body_read = True
        if len(raw) < n:
            raise BadRequest("The body ended before Content-Length bytes arrived.", close=True)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadRequest(f"The body is not valid JSON ({str(err)[:80]}).") from None

    def _events(self) -> dict[str, Any]:
        body = self._read_json()
        events = body if isinstance(body, list) else [body]
        if not events:
            raise BadRequest("The list of events is empty; send at least one event.")
        if len(events) > self.server.config.max_events:
            raise BadRequest(f"{len(events)} events in one request; at most {self.server.config.max_events} are accepted.")
        done = self.server.live.observe_many(events)
        unknown = list(dict.fromkeys(o.item_id for o in done if not o.known_item))
        return {"accepted": len(done), "unknown_items": unknown}

    def _items(self) -> dict[str, Any]:
        body = self._read_json()
        items = body if isinstance(body, list) else [body]
        if len(items) > self.server.config.max_events:
            raise BadRequest(f"{len(items)} items in one request; at most {self.server.config.max_events} are accepted.")
        ids = self.server.live.add_items(items)
        return {"added": len(ids), "item_ids": ids, "items": int(self.server.live.recommender.n_items)}

    def _recommend(self, user_id: str, query: str) -> dict[str, Any]:
        try:
            params = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=10)
        except ValueError:
            raise BadRequest("Too many query parameters; the parameters are k and cross_category_only.") from None
        unknown = sorted(set(params) - {"k", "cross_category_only"})
        if unknown:
            raise BadRequest(f"Unknown query parameter {unknown[0][:40]!r}; the parameters are k and cross_category_only.")
        k = 10
        max_k = self.server.config.max_k
        if "k" in params:
            raw = params["k"][-1]
            if not raw.strip().isdigit() or not 1 <= int(raw) <= max_k:
                raise BadRequest(f"k must be a whole number from 1 to {max_k}, got {raw[:40]!r}.")
            k = int(raw)
        cross = _flag(params["cross_category_only"], "cross_category_only") if "cross_category_only" in params else False
        recs = self.server.live.recommend(user_id, k, cross_category_only=cross)
        return list_payload(recs)


class LiveServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer bound to a LiveRecommender (one thread per connection)."""

    daemon_threads = True  # a handler stuck past close_wait_s never keeps the process alive
    block_on_close = False  # server_close() below wakes and joins the handlers itself
    close_wait_s = 10.0  # how long server_close() waits for requests still being answered

    def __init__(self, live: LiveRecommender, config: ServeConfig | None = None) -> None:
        self.live = live
        self.config = config or ServeConfig()
        self._open: dict[threading.Thread, socket.socket] = {}
        self._open_lock = threading.Lock()
        super().__init__((self.config.host, self.config.port), _Handler)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        with self._open_lock:
            self._open[threading.current_thread()] = request
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(threading.current_thread(), None)

    def server_close(self) -> None:
        """Stop listening, end idle keep-alive connections and wait for requests being answered.

        A handler thread still running while the interpreter shuts down can abort the process (torch's
        and the C runtime's exit-time teardown race with it), so Ctrl-C ends every connection first."""
        super().server_close()
        with self._open_lock:
            open_now = list(self._open.items())
        for _, request in open_now:
            try:
                request.shutdown(socket.SHUT_RD)  # an idle handler's read returns at once; replies still leave
            except OSError:
                pass  # already closed by the client
        deadline = time.monotonic() + self.close_wait_s
        for thread, _ in open_now:
            thread.join(max(deadline - time.monotonic(), 0.0))

    @property
    def url(self) -> str:
        """Return http://host:port of the bound socket (the real port when started on port 0)."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(live: LiveRecommender, config: ServeConfig | None = None) -> LiveServer:
    """Return a bound (not yet serving) LiveServer; call ``serve_forever()`` on it, ``shutdown()`` to stop.

    Raises ConfigError when the address cannot be bound (port in use, unknown host)."""
    cfg = config or ServeConfig()
    try:
        return LiveServer(live, cfg)
    except OSError as err:
        raise ConfigError(f"Cannot listen on {cfg.host}:{cfg.port} ({err.strerror or err}); pick another --port or --host.") from None
