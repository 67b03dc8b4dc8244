"""`product-shop serve --workers N`: several processes on one port, stopped cleanly together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from product_shop.access.demo_idp import generate_key_pair
from product_shop.simulators.server import free_port


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.add(int(entry.name))
    return found


def test_several_workers_serve_one_port_and_stop_together(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_SHOP_")}
    env["PRODUCT_SHOP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'shop.sqlite3'}"
    env["PRODUCT_SHOP_JWT_PUBLIC_KEY"] = generate_key_pair().public_pem
    python = [sys.executable, "-m", "product_shop"]
    subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [*python, "db", "upgrade"], env=env, check=True, capture_output=True
    )
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
        [*python, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                server.wait(timeout=0.2) if server.poll() is not None else time.sleep(0.1)
        assert ready, "serve did not become ready"
        workers = _children(server.pid)
        assert len(workers) >= 2
        with httpx.Client() as client:  # keep-alive responses are not held back (TCP_NODELAY)
            durations = []
            for _ in range(21):
                started = time.perf_counter()
                assert client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                durations.append(time.perf_counter() - started)
            # A delayed-ACK stall costs ~40 ms on every keep-alive request; the median shows it.
            assert sorted(durations)[10] < 0.03
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode == 0
    deadline = time.monotonic() + 10  # helpers such as multiprocessing's tracker exit just after
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
