"""A lean HTTP/1.1 load generator for the benchmark.

httpx costs about a millisecond of CPU per request; on a 2-core machine that shares its cores with
the API, the simulator and PostgreSQL, the load generator then measures itself. This client keeps
one keep-alive connection per simulated patient, writes each request as prepared bytes and parses
only the status line, the headers it needs and a Content-Length body: a few tens of microseconds
per request. It speaks just enough HTTP for our own API and simulator (no chunked bodies, no TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class LoadgenError(Exception):
    """The server closed the connection or answered something this client does not parse."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive connection to one host; requests are sent one at a time."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._host_header = f"{self._host}:{self._port}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Response:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self._host_header]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}".encode())
        if json_body is not None:
            head.append(b"Content-Type: application/json")
        head.append(b"Content-Length: " + str(len(body)).encode())
        payload = b"\r\n".join(head) + b"\r\n\r\n" + body
        reader, writer = await self._open()
        try:
            writer.write(payload)
            status_line = await reader.readuntil(b"\r\n")
            raw_headers = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise LoadgenError(f"connection lost: {exc!r}") from exc
        status = int(status_line.split(b" ", 2)[1])
        parsed: dict[str, str] = {}
        for line in raw_headers.split(b"\r\n"):
            if line:
                name, _, value = line.partition(b":")
                parsed[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
        if parsed.get("transfer-encoding", "").lower() == "chunked":
            await self.close()
            raise LoadgenError("chunked responses are not supported")
        length = int(parsed.get("content-length", "0"))
        try:
            data = await reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise LoadgenError(f"connection lost: {exc!r}") from exc
        if parsed.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, parsed, data)


class Pool:
    """Connections by base URL, for one simulated patient (API and simulator hosts)."""

    def __init__(self) -> None:
        self._connections: dict[str, Connection] = {}

    def to(self, url: str) -> tuple[Connection, str]:
        """The connection for an absolute URL, and the path to request on it."""
        parts = urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        connection = self._connections.get(base)
        if connection is None:
            connection = self._connections[base] = Connection(base)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return connection, path or "/"

    async def request(self, method: str, url: str, **kwargs: Any) -> Response:
        connection, path = self.to(url)
        return await connection.request(method, path, **kwargs)

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.close()
