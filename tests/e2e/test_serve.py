"""`product-shop serve`: several processes on one port, a crashed worker restarted with backoff,
a stop that escalates to SIGKILL after the grace period, IPv6 (`src/product_shop/serve.py`).

Every wait polls with a deadline; worker pids are the supervisor's children (/proc)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from product_shop import serve as serving
from product_shop.access.demo_idp import generate_key_pair
from product_shop.simulators.server import free_port

PYTHON = [sys.executable, "-m", "product_shop"]
START_TIMEOUT = 30.0  # a worker imports the app: seconds on a busy machine
T = TypeVar("T")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PRODUCT_SHOP_* settings for `serve`: a migrated SQLite file and a public key."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PRODUCT_SHOP_")}
    database = tmp_path_factory.mktemp("serve") / "shop.sqlite3"
    environment["PRODUCT_SHOP_DATABASE_URL"] = f"sqlite:///{database}"
    environment["PRODUCT_SHOP_JWT_PUBLIC_KEY"] = generate_key_pair().public_pem
    subprocess.run(  # noqa: S603 (our own interpreter and arguments)
        [*PYTHON, "db", "upgrade"], env=environment, check=True, capture_output=True
    )
    return environment


@contextmanager
def _serving(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`product-shop serve ARGS`, its log (JSON lines) in `log`; killed if a test leaves it up."""
    with log.open("wb") as sink:
        server = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            [*PYTHON, "serve", *args], env=env, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        yield server
    finally:
        if server.poll() is None:
            for worker in _children(server.pid):
                os.kill(worker, signal.SIGKILL)
            server.kill()
        server.wait(timeout=START_TIMEOUT)


def _until(condition: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return result


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in children.read_text().split())
        except OSError:  # the thread or the process is gone
            continue
    return found


def _workers(pid: int, count: int) -> set[int]:
    """The supervisor's workers once there are `count` of them, else an empty set."""
    children = _children(pid)
    return children if len(children) == count else set()


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` has a socket listening on `port` (/proc/net/tcp*, its fds)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    try:
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone, or an fd closed while looking
        return False


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == name:
                found.append(entry)
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _gone(pids: set[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_several_workers_serve_one_port_and_stop_together_within_the_grace_period(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _serving(env, tmp_path / "serve.log", "--port", str(port), "--workers", "2") as server:
        _until(lambda: _answers(f"{url}/readyz"), START_TIMEOUT, "ready")
        workers = _until(lambda: _workers(server.pid, 2), 5, "two workers")
        with httpx.Client() as client:  # keep-alive responses are not held back (TCP_NODELAY)
            durations = []
            for _ in range(21):
                started = time.perf_counter()
                assert client.get(f"{url}/healthz").status_code == 200
                durations.append(time.perf_counter() - started)
            # A delayed-ACK stall costs ~40 ms on every keep-alive request; the median shows it.
            assert sorted(durations)[10] < 0.03
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=serving.DEFAULT_GRACE_SECONDS) == 0
        assert time.monotonic() - stopping < serving.DEFAULT_GRACE_SECONDS
    assert _gone(workers)  # reaped by the supervisor before it exited
    assert not _events(tmp_path / "serve.log", "worker_killed")


def test_a_killed_worker_is_replaced_while_the_port_keeps_answering(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    log = tmp_path / "serve.log"
    with _serving(env, log, "--port", str(port), "--workers", "2") as server:
        _until(lambda: _answers(url), START_TIMEOUT, "ready")
        workers = _until(lambda: _workers(server.pid, 2), 5, "two workers")
        _until(lambda: all(_listens(w, port) for w in workers), START_TIMEOUT, "both listening")
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        _until(lambda: victim not in _children(server.pid), 5, "the killed worker reaped")

        def replacement() -> set[int]:
            assert _answers(url), "the port stopped answering"  # the other worker serves
            return _children(server.pid) - workers

        [new] = _until(replacement, 5, "a new worker")
        # The supervisor logs as it goes: wait for the line rather than read it at once.
        [exited] = _until(lambda: _events(log, "worker_exited"), 5, "the exit logged")
        assert (exited["pid"], exited["exit_code"], exited["restart_in_seconds"]) == (
            victim,
            -signal.SIGKILL,
            0.5,
        )
        [restarted] = _until(lambda: _events(log, "worker_restarted"), 5, "the restart logged")
        assert (restarted["pid"], restarted["worker"]) == (new, exited["worker"])
        # A worker listens once its app has started; then it serves on its own.
        _until(lambda: _listens(new, port), START_TIMEOUT, "the new worker listening")
        survivor = (workers - {victim}).pop()
        os.kill(survivor, signal.SIGKILL)
        _until(lambda: survivor not in _children(server.pid), 5, "the survivor reaped")
        assert _answers(url)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=serving.DEFAULT_GRACE_SECONDS) == 0


def test_a_worker_that_keeps_crashing_is_restarted_with_growing_delays_without_spinning(
    env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with socket.socket() as blocker:  # holds the port without SO_REUSEPORT: every worker fails
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = str(blocker.getsockname()[1])
        with _serving(env, log, "--port", port, "--workers", "2") as server:

            def exits(count: int) -> list[dict[str, Any]]:
                slot = [e for e in _events(log, "worker_exited") if e["worker"] == 0]
                return slot if len(slot) >= count else []

            _until(lambda: exits(1), START_TIMEOUT, "a first crash")
            cpu, wall = _cpu_seconds(server.pid), time.monotonic()
            crashes = _until(lambda: exits(3), START_TIMEOUT, "two more crashes")[:3]
            cpu, wall = _cpu_seconds(server.pid) - cpu, time.monotonic() - wall
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=5) == 0
    assert [e["restart_in_seconds"] for e in crashes] == [0.5, 1.0, 2.0]
    assert all(e["exit_code"] == 1 for e in crashes)
    assert wall >= 1.5  # the first two delays, waited
    assert cpu < 0.25 * wall, f"the supervisor used {cpu:.2f} s of CPU in {wall:.2f} s"


def test_backoff_doubles_up_to_its_cap_and_starts_again_after_a_stable_run() -> None:
    backoff = serving.Backoff(first=0.5, most=30, stable_after=60)
    delays = [backoff.next_delay(None, uptime=1)]
    for _ in range(8):
        delays.append(backoff.next_delay(delays[-1], uptime=1))
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.next_delay(30, uptime=60) == 0.5


def _child(code: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(  # noqa: S603 (our own interpreter and code)
        [sys.executable, "-c", f"{code}\nimport time; print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"  # its signal disposition is in place
    process.stdout.close()
    return process


def test_stopping_sigkills_a_process_that_ignores_sigterm_after_the_grace_period() -> None:
    polite = _child("")
    stubborn = _child("import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    started = time.monotonic()
    assert serving.stop_processes([polite, stubborn], grace=0.5) is False
    took = time.monotonic() - started
    assert (polite.returncode, stubborn.returncode) == (-signal.SIGTERM, -signal.SIGKILL)
    assert 0.5 <= took < 5


def test_stopping_processes_that_honour_sigterm_does_not_wait_the_grace_period() -> None:
    processes = [_child(""), _child("")]
    started = time.monotonic()
    assert serving.stop_processes(processes, grace=10) is True
    assert time.monotonic() - started < 5
    assert [p.returncode for p in processes] == [-signal.SIGTERM, -signal.SIGTERM]


def _ipv6_port(host: str) -> int:
    """A free port on `host`, or skip when this machine cannot listen there."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    if host == "::" and not socket.has_dualstack_ipv6():
        pytest.skip("no dual-stack sockets on this machine")
    try:
        with serving.server_socket(host, 0, reuse_port=False) as probe:
            port: int = probe.getsockname()[1]
            return port
    except OSError as exc:
        pytest.skip(f"cannot listen on {host}: {exc}")


@pytest.mark.parametrize(
    ("host", "workers", "clients"),
    [("::1", "2", ["[::1]"]), ("::", "1", ["[::1]", "127.0.0.1"])],
    ids=["ipv6-loopback-supervised", "dual-stack-single-worker"],
)
def test_serving_on_ipv6_answers_over_ipv6(
    env: dict[str, str], tmp_path: Path, host: str, workers: str, clients: list[str]
) -> None:
    port = _ipv6_port(host)
    args = ["--host", host, "--port", str(port), "--workers", workers]
    with _serving(env, tmp_path / "serve.log", *args) as server:
        for client in clients:
            url = f"http://{client}:{port}/healthz"
            _until(partial(_answers, url), START_TIMEOUT, url)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=serving.DEFAULT_GRACE_SECONDS)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_connections_to_a_listening_socket_get_tcp_nodelay(host: str) -> None:
    """What asyncio does with our socket: TCP_NODELAY on every accepted connection."""
    if ":" in host:
        _ipv6_port(host)
    nodelay: list[int] = []

    async def check() -> None:
        def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        sock = serving.server_socket(host, 0, reuse_port=True)
        assert sock.family == (socket.AF_INET6 if ":" in host else socket.AF_INET)
        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _reader, writer = await asyncio.open_connection(host, sock.getsockname()[1])
            await _reader.read()  # the server closed it: `accepted` ran
            writer.close()
            await writer.wait_closed()

    asyncio.run(asyncio.wait_for(check(), timeout=5))
    assert len(nodelay) == 1
    assert nodelay[0] != 0
