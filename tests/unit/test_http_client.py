"""HttpJsonClient against a real local HTTP/1.1 server: JSON in and out, keep-alive reuse, the one
retry on a stale pooled connection, timeouts, refused connections, the idle pool and threads.

The server is a `ThreadingHTTPServer` on 127.0.0.1 (port 0) in a background thread. It counts the
TCP connections it accepts and closes and records every request its handler sees, so the tests
can tell a reused connection from a new one and a single send from a retried one. A request
header (`X-Test-Behaviour`) tells the handler how to misbehave.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import pytest

from product_shop.integrations.http import HttpJsonClient, HttpResponse, TransportError

BEHAVIOUR = "X-Test-Behaviour"
# Handler behaviours (value of the BEHAVIOUR request header):
DROP = "drop"  # read the request, then close the connection without answering
CLOSE_AFTER = "close-after"  # answer (keep-alive headers), then close the connection anyway
CONNECTION_CLOSE = "connection-close"  # answer with `Connection: close`
BARRIER = "barrier"  # wait until `server.barrier` is full before answering
SLEEP = "sleep"  # wait (up to 5 s, cut short at teardown) before answering


@dataclass(frozen=True)
class Seen:
    """One request as the server's handler received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5.0  # a stray keep-alive connection does not hold a handler thread for ever
    disable_nagle_algorithm = True  # headers and body go out as two writes: no delayed-ACK stall
    server: RecordingServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = self.server.record(self.command, self.path, self.headers.items(), body, self)
        behaviour = self.headers.get(BEHAVIOUR, "")
        if behaviour == DROP:
            self.close_connection = True
            return
        if behaviour == SLEEP:
            self.server.release.wait(5.0)
        if behaviour == BARRIER:
            self.server.barrier.wait(timeout=5.0)
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "body": body.decode(),
                "connection": seen.connection,
            }
        ).encode()
        self.send_response(int(self.headers.get("X-Test-Status", "200")))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if behaviour == CONNECTION_CLOSE:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        if behaviour == CLOSE_AFTER:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # many simultaneous connects must not wait for SYN retransmits

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.port: int = self.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.release = threading.Event()
        self.barrier = threading.Barrier(1)
        self._changed = threading.Condition()
        self._ids: dict[socket.socket, int] = {}
        self._live: set[socket.socket] = set()
        self.connections = 0
        self.closed = 0
        self.requests: list[Seen] = []

    # ---- counting (socketserver hooks) --------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._changed:
            self._ids[request] = self.connections
            self._live.add(request)
            self.connections += 1
            self._changed.notify_all()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self._changed:
            self._live.discard(request)
            self.closed += 1
            self._changed.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (read timeout) makes the late answer fail: expected

    def record(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        handler: _Handler,
    ) -> Seen:
        with self._changed:
            seen = Seen(method, path, list(headers), body, self._ids[handler.connection])
            self.requests.append(seen)
            self._changed.notify_all()
            return seen

    # ---- for the tests ------------------------------------------------------------------------

    def wait_for(self, condition: Callable[[], bool], timeout: float = 2.0) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise AssertionError(
                    f"server state not reached: connections={self.connections} "
                    f"closed={self.closed} requests={len(self.requests)}"
                )

    def drop_connections(self) -> None:
        """Shut every open connection from the server side (as an idle timeout would)."""
        with self._changed:
            live = list(self._live)
        for request in live:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)

    def requests_to(self, path: str) -> list[Seen]:
        with self._changed:
            return [seen for seen in self.requests if seen.path == path]


class ClientFactory(Protocol):
    def __call__(
        self,
        prefix: str = "",
        *,
        headers: dict[str, str] | None = None,
        timeout_seconds: float = 2.0,
        max_idle: int = 32,
    ) -> HttpJsonClient: ...


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.barrier.abort()
        srv.shutdown()
        srv.drop_connections()
        srv.server_close()
        thread.join(timeout=5)
        # Handler threads are daemons: let them close their sockets before the next test.
        srv.wait_for(lambda: srv.closed == srv.connections, timeout=5)


@pytest.fixture
def make_client(server: RecordingServer) -> Iterator[ClientFactory]:
    clients: list[HttpJsonClient] = []

    def make(
        prefix: str = "",
        *,
        headers: dict[str, str] | None = None,
        timeout_seconds: float = 2.0,
        max_idle: int = 32,
    ) -> HttpJsonClient:
        client = HttpJsonClient(
            server.url + prefix,
            headers=headers or {},
            timeout_seconds=timeout_seconds,
            connect_timeout_seconds=1.0,
            max_idle=max_idle,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# ---- requests and answers ----------------------------------------------------------------------


def test_a_get_reaches_the_server_with_the_prefix_and_the_headers(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client("/api/", headers={"Authorization": "Bearer k", "User-Agent": "shop-tests"})

    response = client.request("GET", "/v1/items/7", headers={"X-Request-Id": "r-1"})

    assert response.status == 200
    assert response.json() == {
        "method": "GET",
        "path": "/api/v1/items/7",
        "body": "",
        "connection": 0,
    }
    [seen] = server.requests
    assert (seen.method, seen.path, seen.body) == ("GET", "/api/v1/items/7", b"")
    assert seen.header("Authorization") == ["Bearer k"]
    assert seen.header("User-Agent") == ["shop-tests"]
    assert seen.header("Accept") == ["application/json"]
    assert seen.header("X-Request-Id") == ["r-1"]
    assert seen.header("Content-Type") == []


def test_a_post_sends_its_json_body_with_the_json_content_type(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client("/api", headers={"Authorization": "Bearer k", "User-Agent": "default"})
    body = {"amount_minor": 1250, "currency": "EUR", "methods": ["card"], "note": "Zahnbürste"}

    response = client.request(
        "POST",
        "/v1/payment-intents",
        json_body=body,
        headers={"Idempotency-Key": "key-1", "User-Agent": "per-request"},
    )

    assert response.status == 200
    assert response.json()["path"] == "/api/v1/payment-intents"
    [seen] = server.requests
    assert (seen.method, seen.path) == ("POST", "/api/v1/payment-intents")
    assert json.loads(seen.body) == body
    assert seen.header("Content-Type") == ["application/json"]
    assert seen.header("Content-Length") == [str(len(seen.body))]
    assert seen.header("Authorization") == ["Bearer k"]
    assert seen.header("Idempotency-Key") == ["key-1"]
    assert seen.header("User-Agent") == ["per-request"]  # a request header wins over a default


def test_an_error_status_is_returned_not_raised(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client()

    response = client.request("PUT", "/missing", json_body=[], headers={"X-Test-Status": "404"})

    assert response.status == 404
    assert response.json()["method"] == "PUT"
    assert len(server.requests) == 1


def test_the_response_parses_its_json_body() -> None:
    assert HttpResponse(200, b'{"a": [1, 2.5, null], "b": "\\u00e9"}').json() == {
        "a": [1, 2.5, None],
        "b": "é",
    }
    # The payments adapter maps a non-JSON answer through `except ValueError`.
    with pytest.raises(ValueError):  # noqa: PT011 - JSONDecodeError is a ValueError
        HttpResponse(502, b"<html>Bad gateway</html>").json()
    with pytest.raises(ValueError):  # noqa: PT011
        HttpResponse(204, b"").json()


# ---- keep-alive and the pool -------------------------------------------------------------------


def test_sequential_requests_share_one_connection(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client()

    for n in range(5):
        response = client.request("POST" if n % 2 else "GET", f"/n/{n}", json_body={"n": n})
        assert response.json()["path"] == f"/n/{n}"

    assert server.connections == 1
    assert [seen.connection for seen in server.requests] == [0] * 5


def test_a_connection_close_answer_is_not_pooled(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client()

    client.request("GET", "/first", headers={BEHAVIOUR: CONNECTION_CLOSE})
    server.wait_for(lambda: server.closed == 1)
    # The next request goes out on a new connection, treated as new: a server that then drops
    # it without answering gets no retry (a pooled, reused connection would have been retried).
    with pytest.raises(TransportError, match=r"^RemoteDisconnected$"):
        client.request("GET", "/second", headers={BEHAVIOUR: DROP})

    assert server.connections == 2
    assert len(server.requests_to("/second")) == 1


def test_the_pool_keeps_at_most_max_idle_and_close_closes_them(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client(max_idle=2)
    server.barrier = threading.Barrier(4)

    # Four requests in flight at once need four connections...
    with ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(
                lambda n: client.request("GET", f"/b/{n}", headers={BEHAVIOUR: BARRIER}).status,
                range(4),
            )
        )
    assert statuses == [200] * 4
    assert server.connections == 4
    # ...but only two are kept: the client closes the other two.
    server.wait_for(lambda: server.closed == 2)

    # The two kept are reused by the next two concurrent requests.
    server.barrier = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        list(
            pool.map(
                lambda n: client.request("GET", f"/c/{n}", headers={BEHAVIOUR: BARRIER}), [0, 1]
            )
        )
    assert server.connections == 4
    assert server.closed == 2

    client.close()
    server.wait_for(lambda: server.closed == 4)

    # A closed client still works: it opens a new connection.
    assert client.request("GET", "/after-close").status == 200
    assert server.connections == 5


# ---- a connection the server closed ------------------------------------------------------------


@pytest.mark.parametrize("how", ["server closes after answering", "server drops idle connection"])
def test_a_stale_pooled_connection_is_replaced_without_a_second_send(
    how: str, server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client()
    if how == "server closes after answering":
        client.request("GET", "/first", headers={BEHAVIOUR: CLOSE_AFTER})
    else:
        client.request("GET", "/first")
        server.drop_connections()
    server.wait_for(lambda: server.closed == 1)  # the pooled connection is now dead

    response = client.request("POST", "/second", json_body={"once": True})

    assert response.status == 200
    assert response.json() == {
        "method": "POST",
        "path": "/second",
        "body": '{"once": true}',
        "connection": 1,
    }
    assert server.connections == 2
    assert [seen.path for seen in server.requests] == ["/first", "/second"]
    # The fresh connection went back to the pool.
    client.request("GET", "/third")
    assert server.connections == 2


def test_a_server_that_drops_a_fresh_connection_is_not_retried(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client()

    with pytest.raises(TransportError, match=r"^RemoteDisconnected$"):
        client.request("POST", "/drop", json_body={"n": 1}, headers={BEHAVIOUR: DROP})

    assert server.connections == 1
    assert len(server.requests_to("/drop")) == 1


def test_a_reused_connection_is_retried_once_only(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client()
    client.request("GET", "/warm")

    # The server answers neither on the reused connection nor on the new one: one retry, then
    # the error. (The handler did see the request twice: callers must only send requests that
    # are safe to repeat, as the payments adapter does with idempotency keys.)
    with pytest.raises(TransportError, match=r"^RemoteDisconnected$"):
        client.request("GET", "/drop", headers={BEHAVIOUR: DROP})

    assert len(server.requests_to("/drop")) == 2
    assert server.connections == 2


def test_a_post_without_idempotency_key_that_may_have_arrived_is_never_resent(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    """The server read the POST and closed without answering: it may have acted on it, so a
    request that is not safe to repeat is not sent again."""
    client = make_client()
    client.request("GET", "/warm")

    with pytest.raises(TransportError, match=r"^RemoteDisconnected$"):
        client.request("POST", "/drop", json_body={"n": 1}, headers={BEHAVIOUR: DROP})

    assert len(server.requests_to("/drop")) == 1


def test_a_post_with_an_idempotency_key_is_resent_once_on_a_stale_connection(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client()
    client.request("GET", "/warm")

    with pytest.raises(TransportError, match=r"^RemoteDisconnected$"):
        client.request(
            "POST",
            "/drop",
            json_body={"n": 1},
            headers={BEHAVIOUR: DROP, "idempotency-key": "k-1"},
        )

    assert len(server.requests_to("/drop")) == 2


# ---- timeouts and refusals ---------------------------------------------------------------------


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused"])
def test_a_read_timeout_is_a_timeout_transport_error(
    reused: bool, server: RecordingServer, make_client: ClientFactory
) -> None:
    timeout = 0.25
    client = make_client(timeout_seconds=timeout)
    if reused:
        client.request("GET", "/warm")

    started = time.monotonic()
    with pytest.raises(TransportError, match=r"^Timeout$") as caught:
        client.request("POST", "/slow", json_body={}, headers={BEHAVIOUR: SLEEP})
    elapsed = time.monotonic() - started

    assert isinstance(caught.value.__cause__, TimeoutError)
    assert elapsed < 3 * timeout
    assert len(server.requests_to("/slow")) == 1  # a timeout is never retried here
    assert server.connections == 1


def test_a_refused_connection_is_a_transport_error() -> None:
    # A bound socket that does not listen: connecting to it is refused, and no one else can
    # take the port while the test runs.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        client = HttpJsonClient(
            f"http://127.0.0.1:{port}",
            headers={},
            timeout_seconds=1.0,
            connect_timeout_seconds=1.0,
        )
        try:
            with pytest.raises(TransportError, match=r"^ConnectionRefusedError$") as caught:
                client.request("GET", "/")
            assert isinstance(caught.value.__cause__, ConnectionRefusedError)
        finally:
            client.close()


# ---- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url", ["ftp://x", "not a url", "", "http://", "https:///path", "//host/path"]
)
def test_a_base_url_that_is_not_http_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        HttpJsonClient(base_url, headers={}, timeout_seconds=1.0, connect_timeout_seconds=1.0)


def test_an_https_client_is_built_without_connecting(server: RecordingServer) -> None:
    client = HttpJsonClient(
        f"https://127.0.0.1:{server.port}/api",
        headers={"Authorization": "Bearer k"},
        timeout_seconds=1.0,
        connect_timeout_seconds=1.0,
    )
    client.close()

    assert server.connections == 0


# ---- threads -----------------------------------------------------------------------------------


def test_threads_share_the_client_and_each_gets_its_own_answer(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client("/api")
    threads, per_thread = 8, 20

    def work(thread: int) -> list[tuple[str, Any]]:
        results = []
        for n in range(per_thread):
            path = f"/t{thread}/r{n}"
            response = client.request("POST", path, json_body={"thread": thread, "n": n})
            assert response.status == 200
            results.append((path, response.json()))
        return results

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(work, range(threads)))

    for thread, results in enumerate(outcomes):
        assert len(results) == per_thread
        for n, (path, answer) in enumerate(results):
            assert answer["path"] == "/api" + path
            assert json.loads(answer["body"]) == {"thread": thread, "n": n}
    assert len(server.requests) == threads * per_thread
    # A connection is only opened when every pooled one is busy: never more than the threads.
    assert 1 <= server.connections <= threads
    assert server.closed == 0


# ---- known bugs --------------------------------------------------------------------------------


def test_a_header_in_another_case_replaces_rather_than_duplicates(
    server: RecordingServer, make_client: ClientFactory
) -> None:
    client = make_client(headers={"accept": "application/problem+json", "user-agent": "default"})

    client.request(
        "POST",
        "/headers",
        json_body={},
        headers={"User-Agent": "per-request", "content-type": "application/json"},
    )

    [seen] = server.requests
    assert seen.header("Accept") == ["application/problem+json"]
    assert seen.header("User-Agent") == ["per-request"]
    assert seen.header("Content-Type") == ["application/json"]
