"""The embedded demo, end to end: `python -m product_shop demo` as a real process on a real port.

Each demo is a subprocess with its own data directory and a free port; tests wait for /readyz
(polling against a deadline, never a fixed sleep) and fetch tokens the way a developer does, with
`product-shop demo-users --json`.

Starting a demo (migrate, seed, simulators) is the slow part, so the module's tests run on one
worker (`xdist_group`) and share what they only read: one demo, and one second demo for the
tests about two demos side by side. Restarting a demo needs its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import pytest

pytestmark = pytest.mark.xdist_group("demo")

READY_DEADLINE_SECONDS = 90.0  # a loaded 2-core CI machine migrates and seeds slowly
STOP_DEADLINE_SECONDS = 10.0
HARBOUR_PATIENT = "harbour-patient-amelia"
HARBOUR_ADMIN = "harbour-practice-admin"
DEMO_PRODUCTS = 15
HARBOUR_VISIBLE_PRODUCTS = 13


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env() -> dict[str, str]:
    """The caller's environment without PRODUCT_SHOP_* settings (a stray database URL would make
    every demo share one database)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_SHOP_")}


@dataclass
class Demo:
    data_dir: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    log_file: TextIO
    _users: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        last: str = "no answer yet"
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = repr(exc)
            # Wait on the process itself between attempts: returns at once if it died.
            try:
                self.process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(
                f"demo exited with {self.process.returncode} before it was ready:\n{self.log()}"
            )
        pytest.fail(f"demo not ready within {READY_DEADLINE_SECONDS}s ({last}):\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_DEADLINE_SECONDS)
        self.log_file.close()

    def users(self) -> dict[str, dict[str, Any]]:
        """Every seeded user by handle, with tokens from `demo-users --json` (fetched once)."""
        if not self._users:
            result = subprocess.run(  # noqa: S603 (our own interpreter and arguments)
                [
                    sys.executable,
                    "-m",
                    "product_shop",
                    "demo-users",
                    "--json",
                    "--data-dir",
                    str(self.data_dir),
                ],
                capture_output=True,
                text=True,
                timeout=READY_DEADLINE_SECONDS,
                env=_clean_env(),
                cwd=self.data_dir.parent,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            self._users = {user["handle"]: user for user in json.loads(result.stdout)}
        return self._users

    def headers(self, handle: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.users()[handle]['token']}"}

    def get(self, path: str, handle: str | None = None) -> httpx.Response:
        headers = self.headers(handle) if handle else {}
        return httpx.get(f"{self.base_url}{path}", headers=headers, timeout=10.0)


def _start_demo(data_dir: Path) -> Demo:
    port = _free_port()
    log_path = data_dir.parent / f"{data_dir.name}-{port}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [
            sys.executable,
            "-m",
            "product_shop",
            "demo",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=_clean_env(),
        cwd=data_dir.parent,
    )
    return Demo(data_dir=data_dir, port=port, log_path=log_path, process=process, log_file=log_file)


StartDemo = Callable[[Path], Demo]


@pytest.fixture
def start_demo() -> Iterator[StartDemo]:
    """Start demos that are stopped (terminate, wait, kill) when the test ends."""
    started: list[Demo] = []

    def start(data_dir: Path) -> Demo:
        demo = _start_demo(data_dir)
        started.append(demo)
        demo.wait_until_ready()
        return demo

    yield start
    for demo in started:
        demo.stop()


@contextmanager
def _running_demo(data_dir: Path) -> Iterator[Demo]:
    running = _start_demo(data_dir)
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo shared by the read-only tests of this module."""
    with _running_demo(tmp_path_factory.mktemp("demo") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def other_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A second demo, with its own data directory and port, shared by the read-only tests about
    two demos side by side."""
    with _running_demo(tmp_path_factory.mktemp("other-demo") / "other") as running:
        yield running


def _catalogue(demo: Demo, handle: str) -> dict[str, Any]:
    response = demo.get("/v1/catalogue", handle)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# ---- one demo --------------------------------------------------------------------------------


def test_the_demo_runs_the_supplier_network_simulator_on_a_port_of_its_own(demo: Demo) -> None:
    found = re.search(r"supplier network simulator at (http://127\.0\.0\.1:\d+)", demo.log())
    assert found, demo.log()

    config = httpx.get(f"{found.group(1)}/_simulator/config", timeout=10.0)

    assert config.status_code == 200
    assert config.json()["auto_advance"] is True
    assert config.json()["callback_url"] == f"{demo.base_url}/v1/webhooks/suppliers"


def test_the_demo_reports_ready_with_its_database_migrated_to_head(demo: Demo) -> None:
    response = demo.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["database"] == "ok"
    assert body["migrations"] == "at_head"
    assert body["revision"] == body["head"]
    assert (demo.data_dir / "product_shop.sqlite3").is_file()


def test_an_anonymous_catalogue_request_is_refused_with_a_problem_document(demo: Demo) -> None:
    response = demo.get("/v1/catalogue")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 401
    assert problem["code"] == "unauthenticated"


def test_a_harbour_patient_sees_harbours_thirteen_visible_products_without_cost_price(
    demo: Demo,
) -> None:
    body = _catalogue(demo, HARBOUR_PATIENT)

    assert body["view"] == "patient"
    assert body["practice_id"] == demo.users()[HARBOUR_PATIENT]["practice_id"]
    assert len(body["items"]) == HARBOUR_VISIBLE_PRODUCTS
    assert [item for item in body["items"] if "cost_price_minor" in item] == []
    assert all(item["retail_price_minor"] is not None for item in body["items"])


def test_the_harbour_practice_admin_sees_all_fifteen_products_with_cost_price(
    demo: Demo,
) -> None:
    body = _catalogue(demo, HARBOUR_ADMIN)

    assert body["view"] == "practice"
    assert body["practice_id"] == demo.users()[HARBOUR_ADMIN]["practice_id"]
    assert len(body["items"]) == DEMO_PRODUCTS
    assert all(isinstance(item["cost_price_minor"], int) for item in body["items"])


def test_the_api_docs_load_only_locally_served_assets(demo: Demo) -> None:
    response = demo.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    references = set(re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html))
    assert references == {
        "/docs-assets/swagger-ui.css",
        "/docs-assets/favicon.png",
        "/docs-assets/swagger-ui-bundle.js",
    }
    assert "https://" not in html
    assert "http://" not in html
    for asset in ("/docs-assets/swagger-ui.css", "/docs-assets/swagger-ui-bundle.js"):
        served = demo.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 0, asset


def test_the_openapi_document_is_openapi_3_1(demo: Demo) -> None:
    response = demo.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert "/v1/catalogue" in document["paths"]


# ---- several demos ---------------------------------------------------------------------------


def test_two_demos_run_side_by_side_on_their_own_ports_and_data(
    demo: Demo, other_demo: Demo
) -> None:
    other = other_demo

    assert other.port != demo.port
    assert other.data_dir != demo.data_dir
    assert len(_catalogue(demo, HARBOUR_ADMIN)["items"]) == DEMO_PRODUCTS
    assert len(_catalogue(other, HARBOUR_ADMIN)["items"]) == DEMO_PRODUCTS
    assert len(_catalogue(other, HARBOUR_PATIENT)["items"]) == HARBOUR_VISIBLE_PRODUCTS


def test_a_token_from_one_demo_is_refused_by_another_demo_with_its_own_key(
    demo: Demo, other_demo: Demo
) -> None:
    other = other_demo
    foreign_token = demo.users()[HARBOUR_PATIENT]["token"]

    response = httpx.get(
        f"{other.base_url}/v1/catalogue",
        headers={"Authorization": f"Bearer {foreign_token}"},
        timeout=10.0,
    )

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert other.get("/v1/catalogue", HARBOUR_PATIENT).status_code == 200


def test_restarting_a_demo_on_the_same_data_dir_keeps_its_data_and_does_not_seed_again(
    start_demo: StartDemo, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = start_demo(data_dir)
    first_items = _catalogue(first, HARBOUR_ADMIN)["items"]
    first_token = first.users()[HARBOUR_PATIENT]["token"]
    first.stop()
    # Stopped by SIGTERM (uvicorn shuts down, then re-raises the signal), not killed.
    assert first.process.returncode in (0, -signal.SIGTERM), first.log()

    second = start_demo(data_dir)
    second_items = _catalogue(second, HARBOUR_ADMIN)["items"]

    assert len(second_items) == DEMO_PRODUCTS
    assert {item["product_id"] for item in second_items} == {
        item["product_id"] for item in first_items
    }
    # Same data directory, same demo signing key: the earlier token still works.
    response = httpx.get(
        f"{second.base_url}/v1/catalogue",
        headers={"Authorization": f"Bearer {first_token}"},
        timeout=10.0,
    )
    assert response.status_code == 200
    assert len(response.json()["items"]) == HARBOUR_VISIBLE_PRODUCTS


def test_in_the_demo_a_drop_ship_line_is_dispatched_with_tracking_within_30_seconds(
    demo: Demo,
) -> None:
    """Issue 10: no manual step between paying and a tracked parcel (in-process relay, supplier
    simulator advancing on its own, its signed callbacks to our webhook)."""
    brush = next(
        item
        for item in _catalogue(demo, HARBOUR_PATIENT)["items"]
        if item["fulfilment_type"] == "Drop-Ship" and item["purchasable"]
    )
    headers = {**demo.headers(HARBOUR_PATIENT), "Idempotency-Key": "demo-drop-ship"}
    checkout = httpx.post(
        f"{demo.base_url}/v1/checkouts",
        headers=headers,
        json={
            "lines": [{"product_id": brush["product_id"], "quantity": 1}],
            "delivery_address": {
                "recipient_name": "Amelia",
                "line1": "1 Harbour Road",
                "city": "Bristol",
                "postcode": "BS1 4AA",
            },
        },
        timeout=10.0,
    )
    assert checkout.status_code == 201, checkout.text
    paid = httpx.post(
        checkout.json()["payment"]["payment_url"],
        json={"card_number": "4242424242424242"},
        timeout=10.0,
    )
    assert paid.status_code == 200, paid.text
    order = httpx.post(
        f"{demo.base_url}/v1/checkouts/{checkout.json()['id']}/complete",
        headers=demo.headers(HARBOUR_PATIENT),
        timeout=10.0,
    )
    assert order.status_code == 200, order.text
    started = time.monotonic()

    while True:
        line = demo.get(f"/v1/orders/{order.json()['order_id']}", HARBOUR_PATIENT).json()["lines"][
            0
        ]
        if line["fulfilment_status"] in ("dispatched", "delivered"):
            break
        assert time.monotonic() - started < 30, (line, demo.log()[-2000:])
        time.sleep(0.25)

    assert line["tracking"]["tracking_number"]
    assert line["tracking"]["tracking_url"].startswith("https://")

    # and Communication Hub heard of it: the confirmation, the receipt and the dispatch
    found = re.search(r"receivers simulator at (http://127\.0\.0\.1:\d+)", demo.log())
    assert found, demo.log()
    order_id = order.json()["order_id"]
    while True:
        heard = httpx.get(
            f"{found.group(1)}/_simulator/communication_hub/received",
            params={"order_id": order_id},
            timeout=10.0,
        ).json()["events"]
        types = {e["type"].removeprefix("com.primoro.productshop.") for e in heard}
        if {"order.created.v1", "payment.receipt.v1", "fulfilment.stage_changed.v1"} <= types:
            break
        assert time.monotonic() - started < 30, (types, demo.log()[-2000:])
        time.sleep(0.25)


def test_the_demos_audit_log_checkpoints_and_verifies_intact(demo: Demo) -> None:
    """`product-shop audit checkpoint|verify --data-dir` on the running demo's embedded
    database (docs/audit.md): its seeded catalogue's audit streams are intact."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 (our own interpreter and arguments)
            [
                sys.executable,
                "-m",
                "product_shop",
                "audit",
                *args,
                "--data-dir",
                str(demo.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=READY_DEADLINE_SECONDS,
            env=_clean_env(),
            cwd=demo.data_dir.parent,
            check=False,
        )

    taken = run("checkpoint")
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout.startswith("checkpoint ")
    verified = run("verify", "--quiet")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("intact: ")
    assert " 0 streams" not in verified.stdout  # the seeded catalogue has its streams


def test_in_the_demo_an_ended_appointment_waits_as_ai_suggestions_until_staff_approve(
    demo: Demo,
) -> None:
    """Issue 15: Appointment Manager's simulator ends the demo's appointments by signed webhook;
    Harbour's staff find pending suggestions for Amelia's periodontal visit, which she cannot
    see until a named staff member approves one, and then sees framed as her care team's."""
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    pending: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        answer = demo.get("/v1/ai-suggestions?status=pending", "harbour-staff")
        assert answer.status_code == 200, answer.text
        pending = [
            item
            for item in answer.json()["items"]
            if item["appointment"]["appointment_id"] == "demo-harbour-amelia-perio"
        ]
        if pending:
            break
        time.sleep(0.2)
    assert pending, demo.log()
    assert all(item["rationale"] and item["engine"] == "local-tfidf" for item in pending)
    assert demo.get("/v1/me/recommendations", HARBOUR_PATIENT).json()["items"] == []

    approved = httpx.post(
        f"{demo.base_url}/v1/ai-suggestions/{pending[0]['suggestion_id']}/approve",
        headers=demo.headers("harbour-staff"),
        json={"note": "Use these once a day between your back teeth."},
        timeout=10.0,
    )
    assert approved.status_code == 200, approved.text
    seen = demo.get("/v1/me/recommendations", HARBOUR_PATIENT).json()["items"]
    assert [item["product"]["product_id"] for item in seen] == [pending[0]["product"]["product_id"]]
    assert seen[0]["framing"] == "Recommended by your care team"
    assert seen[0]["recommended_by_name"] == "Jess Morgan"


def test_the_demos_staff_portal_signs_in_at_its_access_manager_simulator(demo: Demo) -> None:
    """`make demo` opens the portal: /portal sends the browser to the in-process Access Manager
    simulator, whose page lists the demo's staff; picking one signs in and lands on the orders
    page (the steps a browser takes, with httpx)."""
    with httpx.Client(base_url=demo.base_url, timeout=10) as browser:
        to_login = browser.get("/portal/orders")
        assert to_login.status_code == 303
        to_idp = browser.get(to_login.headers["location"])
        assert to_idp.status_code == 303
        picker = httpx.get(to_idp.headers["location"], timeout=10)
        assert picker.status_code == 200
        assert "Sarah Whitfield" in picker.text
        pending = re.search(r'name="pending" value="([^"]+)"', picker.text)
        assert pending is not None
        action = to_idp.headers["location"].split("/authorize")[0] + "/authorize/login"
        chosen = httpx.post(
            action,
            data={"pending": pending.group(1), "handle": HARBOUR_ADMIN},
            timeout=10,
        )
        assert chosen.status_code == 302
        callback = chosen.headers["location"]
        assert callback.startswith(f"{demo.base_url}/portal/callback?")
        landed = browser.get(callback.removeprefix(demo.base_url))
        assert landed.status_code == 303
        orders = browser.get(landed.headers["location"])
        assert orders.status_code == 200
        assert "Sarah Whitfield" in orders.text
