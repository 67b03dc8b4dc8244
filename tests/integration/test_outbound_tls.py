"""Outbound adapters verify the certificates of the modules they call (issue 17, spec §16
Security: TLS in transit): a server with a self-signed certificate is refused, by the JSON API
client behind Integrated Payments, the supplier network and Rewards Manager
(`integrations/json_http.py`), and by the signed-webhook event sink
(`integrations/event_webhooks.py`). Both are urllib3 with certificate verification on."""

from __future__ import annotations

import ssl
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3

from product_shop.core.signing import DEMO_WEBHOOK_SECRET
from product_shop.events.delivery import DeliveryFailed, PendingEvent
from product_shop.integrations.event_webhooks import WebhookSink
from product_shop.integrations.json_http import JsonHttpClient, NoAnswer
from tests.tls_support import self_signed


class _Answer(BaseHTTPRequestHandler):
    calls: list[str] = []

    def _ok(self) -> None:
        _Answer.calls.append(self.path)
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _ok

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def https_url(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 whose certificate nobody trusts (self-signed); it answers
    a client that trusts the certificate (the control in the first test)."""
    yield from _https_server(tmp_path)


def _https_server(tmp_path: Path) -> Iterator[str]:
    files = self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.certfile, files.keyfile)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Answer.calls = []
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_json_api_client_refuses_a_self_signed_server(https_url: str, tmp_path: Path) -> None:
    client = JsonHttpClient(
        https_url, integration="integrated_payments", api_key="k", timeout_seconds=2.0
    )
    try:
        with pytest.raises(NoAnswer, match=r"(?i)ssl|certificate"):
            client.call("GET", "/v1/refund-reasons")
    finally:
        client.close()
    assert _Answer.calls == []  # no request reached the server
    trusting = urllib3.PoolManager(ca_certs=str(tmp_path / "cert.pem"))
    assert trusting.request("GET", f"{https_url}/control").status == 200  # the server works


def test_the_event_webhook_sink_refuses_a_self_signed_receiver(https_url: str) -> None:
    sink = WebhookSink(f"{https_url}/finance", DEMO_WEBHOOK_SECRET, connect_timeout_seconds=2.0)
    event = PendingEvent(
        delivery_id=1,
        destination="finance",
        position=1,
        event_id=uuid.uuid4(),
        event_type="order.created.v1",
        source="product-shop",
        subject="order",
        aggregate_type="order",
        aggregate_id=str(uuid.uuid4()),
        occurred_at=datetime.now(UTC),
        data={},
        attempts=0,
    )
    with pytest.raises(DeliveryFailed):
        sink(event)
    assert _Answer.calls == []
