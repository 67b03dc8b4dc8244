"""Serving the API (`product-shop serve`): one worker, or a supervisor of several on one host.

Production: run one worker per unit — `product-shop serve --workers 1` in each container or
systemd unit — and let the orchestrator scale, health-check, restart and stop the units. It sees
every process, and its own restart backoff and SIGTERM-then-SIGKILL stop apply unchanged.

`--workers N` is for a single host without an orchestrator. The supervisor runs N worker
processes on one port, each with its own SO_REUSEPORT socket, and
- restarts a worker that exits while the supervisor is not stopping, after a delay that doubles
  from 0.5 s to 30 s while the worker keeps crashing and starts again from 0.5 s once a worker
  stayed up a minute; each exit and restart is logged (slot, pid, exit code, uptime, delay);
- on SIGTERM or SIGINT sends SIGTERM to every worker, waits the grace period (`--grace`, 20 s),
  then SIGKILLs any still running; it exits 0 when every worker stopped in time, else 1;
- sleeps between events: SIGTERM, SIGINT and SIGCHLD (a worker exited) wake it.
Workers run in their own process group, so a Ctrl-C in a terminal reaches the supervisor only,
which stops them as for SIGTERM. A supervisor killed outright (SIGKILL) leaves its workers
running: stop the whole unit (systemd's default KillMode=control-group does).

Metrics: the supervisor gives its workers one fresh, empty directory (setting `metrics_dir`, by
default a new one under the system's temporary directory, removed when the supervisor ends) in
`PROMETHEUS_MULTIPROC_DIR`, set in each worker's environment before it starts, so
prometheus-client runs in multi-process mode there: each worker writes its samples to files of
its own and any worker's `/metrics` sums them all. When it reaps a worker it marks the process
dead (its live gauges go; its counts stay in the sums).

`--host ::` listens on IPv6 and IPv4 (dual-stack), `--host ::1` on the IPv6 loopback only.

TLS: with `ssl_certfile` and `ssl_keyfile` (or `--ssl-certfile/--ssl-keyfile`, which set them in
the environment every worker inherits) each worker serves HTTPS; `trusted_proxies` (CIDRs) are
the TLS-terminating proxies whose X-Forwarded-Proto/For each worker believes.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from product_shop.config import Settings
from product_shop.core.process import freeze_start_up
from product_shop.logging import configure_logging, get_logger

log = get_logger("product_shop.serve")

DEFAULT_GRACE_SECONDS = 20.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_LONGEST_SLEEP = 5.0  # the supervisor looks at its workers at least this often, signals or not
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(host: str, port: int, *, workers: int = 1, grace: float = DEFAULT_GRACE_SECONDS) -> int:
    """Serve in this process (one worker), or supervise `workers` worker processes."""
    if workers == 1:
        run_worker(host, port, reuse_port=False)
        return 0
    configured = Settings().metrics_dir
    metrics_dir = fresh_metrics_dir(configured)
    try:
        return Supervisor(host, port, workers, grace=grace, metrics_dir=metrics_dir).run()
    finally:
        if configured is None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def fresh_metrics_dir(configured: Path | None) -> Path:
    """The workers' multi-process metrics directory, empty: `configured` emptied of the files
    an earlier run left (they would be summed in), or a new directory under the system's
    temporary directory."""
    if configured is None:
        return Path(tempfile.mkdtemp(prefix="product-shop-metrics-"))
    configured.mkdir(parents=True, exist_ok=True)
    for leftover in configured.glob("*.db"):
        leftover.unlink()
    return configured


def run_worker(host: str, port: int, *, reuse_port: bool) -> None:
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    config = uvicorn.Config(
        "product_shop.web.app:create_app",
        factory=True,
        log_config=None,
        access_log=False,
        **transport_options(settings),
    )
    config.load()  # the app and all it imports, built before serving (uvicorn would do it then)
    freeze_start_up()
    uvicorn.Server(config).run(sockets=[server_socket(host, port, reuse_port=reuse_port)])


def transport_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS and proxy options from the settings: TLS with `ssl_certfile`/`ssl_keyfile`;
    X-Forwarded-Proto/For believed only from `trusted_proxies` (none: never, so a caller cannot
    claim another address or scheme)."""
    options: dict[str, Any] = {
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies) or "",
    }
    if settings.ssl_certfile is not None:
        options["ssl_certfile"] = str(settings.ssl_certfile)
        options["ssl_keyfile"] = str(settings.ssl_keyfile) if settings.ssl_keyfile else None
    return options


def server_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A socket created with an explicit IPPROTO_TCP: asyncio sets TCP_NODELAY only on
    connections whose socket says so, and without it every keep-alive response waited ~40 ms for
    a delayed ACK (measured: 44 ms added to every request with a proto-0 socket).

    With `reuse_port` each worker has its own socket on the same port, so the kernel spreads
    connections evenly (one shared socket let a single worker accept nearly all keep-alive
    connections: measured 71% vs 1% CPU). The socket is bound but not listening: uvicorn's
    server listens on it once the app has started, so the kernel gives a (re)starting worker no
    connections before it can answer them. An IPv6 address (`::`, `::1`) makes an IPv6 socket;
    `::` takes IPv4 connections too where the system supports dual-stack sockets."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and socket.has_dualstack_ipv6():
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # whatever the default
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Backoff:
    """The delay before restarting a worker that exited: `first`, doubled after each further exit
    up to `most`; a worker that had run `stable_after` seconds is restarted after `first` again."""

    first: float = 0.5
    most: float = 30.0
    stable_after: float = 60.0

    def next_delay(self, previous: float | None, uptime: float) -> float:
        if previous is None or uptime >= self.stable_after:
            return self.first
        return min(previous * 2, self.most)


@dataclass
class _Slot:
    """One of the supervisor's workers, across its restarts."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    delay: float | None = None  # the last restart delay (None: never restarted)
    restart_at: float = 0.0


class Supervisor:
    def __init__(
        self,
        host: str,
        port: int,
        workers: int,
        *,
        grace: float = DEFAULT_GRACE_SECONDS,
        backoff: Backoff = Backoff(),  # frozen: one shared default is safe
        metrics_dir: Path | None = None,
    ) -> None:
        # A supervised worker: this module run as `python -m product_shop.serve HOST PORT`.
        self.command = [sys.executable, "-m", "product_shop.serve", host, str(port)]
        self.slots = [_Slot(index) for index in range(workers)]
        self.grace = grace
        self.backoff = backoff
        # Set in the workers' environment only: they import prometheus-client after it is there.
        self.metrics_dir = metrics_dir
        self.env = (
            {**os.environ, MULTIPROC_ENV: str(metrics_dir)} if metrics_dir is not None else None
        )

    def run(self) -> int:
        with _Wakeups() as wakeups:
            log.info("supervisor_started", workers=len(self.slots), grace_seconds=self.grace)
            while not wakeups.stop_requested:
                now = time.monotonic()
                for slot in self.slots:
                    self._tend(slot, now)
                pending = [slot.restart_at for slot in self.slots if slot.process is None]
                wakeups.wait(min([*pending, now + _LONGEST_SLEEP]) - time.monotonic())
            log.info("supervisor_stopping", grace_seconds=self.grace)
            running = [slot.process for slot in self.slots if slot.process is not None]
            clean = stop_processes(running, self.grace)
            for process in running:
                self._reaped(process.pid)
        log.info("supervisor_stopped", clean=clean)
        return 0 if clean else 1

    def _tend(self, slot: _Slot, now: float) -> None:
        if slot.process is not None:
            code = slot.process.poll()
            if code is None:
                return
            uptime = now - slot.started_at
            slot.delay = self.backoff.next_delay(slot.delay, uptime)
            slot.restart_at = now + slot.delay
            log.warning(
                "worker_exited",
                worker=slot.index,
                pid=slot.process.pid,
                exit_code=code,
                uptime_seconds=round(uptime, 1),
                restart_in_seconds=slot.delay,
            )
            self._reaped(slot.process.pid)
            slot.process = None
        if now >= slot.restart_at:
            slot.process = subprocess.Popen(  # noqa: S603 (our own command)
                self.command, process_group=0, env=self.env
            )
            slot.started_at = now
            event = "worker_started" if slot.delay is None else "worker_restarted"
            log.info(event, worker=slot.index, pid=slot.process.pid)

    def _reaped(self, pid: int) -> None:
        """A worker is gone: its live gauges leave the sums (its counts stay)."""
        if self.metrics_dir is not None:
            mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], grace: float) -> bool:
    """SIGTERM each process, wait up to `grace` seconds for them all, then SIGKILL any still
    running. True when every one stopped within the grace period."""
    processes = list(processes)
    for process in processes:
        process.terminate()  # nothing is sent to one already reaped
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    late = [process for process in processes if process.poll() is None]
    for process in late:
        log.warning("worker_killed", pid=process.pid, grace_seconds=grace)
        process.kill()
    for process in late:
        process.wait()
    return not late


class _Wakeups:
    """While entered: SIGTERM and SIGINT ask to stop, and they and SIGCHLD end `wait` early.

    The signal module writes each signal to a wakeup socket as it arrives, so a signal that comes
    between looking at the workers and going to sleep still ends that sleep."""

    stop_requested = False

    def __enter__(self) -> _Wakeups:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {
            signum: signal.signal(signum, self._handle)
            for signum in (*_STOP_SIGNALS, signal.SIGCHLD)
        }
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum in _STOP_SIGNALS:
            self.stop_requested = True

    def wait(self, timeout: float) -> None:
        select.select([self._reader], [], [], max(0.0, timeout))
        with contextlib.suppress(BlockingIOError):
            while self._reader.recv(256):
                pass

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()


if __name__ == "__main__":  # a supervised worker (see Supervisor.command)
    run_worker(sys.argv[1], int(sys.argv[2]), reuse_port=True)
