"""The NATS JetStream sink: one event, as a structured CloudEvents document, published to a
subject of one stream and acknowledged by the broker once stored.

    subject:  <subject_prefix>.<type without "com.primoro.productshop.">
              (e.g. primoro.productshop.order.created.v1)
    headers:  Nats-Msg-Id: <the event id>, content-type: application/cloudevents+json,
              ce-destination: <the relay destination>
    body:     `cloudevent_bytes(event)`

A stored message (the publish ack) is a delivery; no ack within `timeout_seconds` (no
connection, a broker that does not answer, no stream for the subject) fails this try, and the
relay tries again on its schedule. The sink never retries by itself.

Why a loop thread: nats-py is asyncio-only, while the relay calls sinks from several threads of
synchronous code. The sink owns one event loop in a daemon thread (started on first use); every
call hands a coroutine to it with `run_coroutine_threadsafe` and waits for the result with a
deadline, so one connection serves all threads and only the loop thread touches it. It connects
lazily, then makes sure the stream exists (created if missing; an existing one is left as it
is, but must take our subjects). After a lost connection nats-py reconnects in the background;
a call made meanwhile fails after its timeout rather than hanging.

What the message id buys: JetStream drops a message whose `Nats-Msg-Id` it has already stored
within the stream's duplicate window and acks it as a duplicate. A try that "failed" after the
broker stored the message (an ack lost on the way back, or a publish nats-py buffered while
reconnecting and sent later) is retried by the relay and stored once, not twice.

The duplicate window (`duplicate_window_seconds`, two hours by default) bounds that guarantee: a
relay redelivering after a longer outage publishes a second copy. Beyond the window it is the
consumer's own dedupe by CloudEvents `id` (the same value) that absorbs it, as for webhooks.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

from product_shop.events.delivery import DeliveryFailed, PendingEvent, PermanentDeliveryError
from product_shop.events.outbox import cloudevent_bytes
from product_shop.events.types import PREFIX as EVENT_TYPE_PREFIX
from product_shop.logging import get_logger

CONTENT_TYPE = "application/cloudevents+json"
GRACE_SECONDS = 1.0  # how much longer a caller waits than the loop's own deadline
STREAM_NAME_IN_USE = 10058  # JetStream err_code: a stream of that name exists, configured otherwise
_SUBJECT = re.compile(r"[^.\s*>]+(\.[^.\s*>]+)*")  # dot-separated tokens, no wildcards or spaces

log = get_logger(__name__)
T = TypeVar("T")


def subject_for(event_type: str, prefix: str) -> str:
    """The subject an event type is published on: `prefix` then the type without the
    `com.primoro.productshop.` prefix. ValueError if that is not a valid literal subject."""
    subject = f"{prefix}.{event_type.removeprefix(EVENT_TYPE_PREFIX)}"
    if not _SUBJECT.fullmatch(subject):
        raise ValueError(f"{subject!r} is not a valid NATS subject")
    return subject


def _covers(pattern: str, subjects: str) -> bool:
    """Whether a stream subject `pattern` matches every subject `subjects` (maybe ending in
    `>`) matches."""
    wanted = subjects.split(".")
    for i, part in enumerate(pattern.split(".")):
        if part == ">":
            return i < len(wanted)
        if i >= len(wanted) or wanted[i] == ">" or part not in ("*", wanted[i]):
            return False
    return len(pattern.split(".")) == len(wanted)


@dataclass(frozen=True, slots=True)
class JetStreamReceipt:
    """The broker's ack: where the event is stored, and whether it was there already."""

    stream: str
    sequence: int
    duplicate: bool


class JetStreamSink:
    """One NATS server and stream; safe to call from several threads. `close()` when done."""

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        stream: str = "PRODUCT_SHOP_EVENTS",
        subject_prefix: str = "primoro.productshop",
        timeout_seconds: float = 5.0,
        duplicate_window_seconds: float = 7200,
    ) -> None:
        if not _SUBJECT.fullmatch(subject_prefix):
            raise ValueError(f"{subject_prefix!r} is not a valid NATS subject prefix")
        self._url = url
        self._stream = stream
        self._prefix = subject_prefix
        self._timeout = timeout_seconds
        self._window = duplicate_window_seconds
        self._lock = threading.Lock()  # guards the loop and thread below, and `_closed`
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        # Touched on the loop thread only:
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._connecting: asyncio.Lock | None = None

    def __call__(self, event: PendingEvent) -> JetStreamReceipt:
        try:
            subject = subject_for(event.event_type, self._prefix)
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        headers = {
            "Nats-Msg-Id": str(event.event_id),
            "content-type": CONTENT_TYPE,
            "ce-destination": event.destination,
        }
        ack = self._run(
            self._publish(subject, cloudevent_bytes(event), headers),
            f"publishing event {event.event_id} to {subject}",
        )
        return JetStreamReceipt(ack.stream, ack.seq, bool(ack.duplicate))

    def close(self) -> None:
        """Drain and close the connection and stop the loop thread; calls after it fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._disconnect(), loop)
        try:
            future.result(self._timeout + GRACE_SECONDS)
        except Exception:  # best effort: the loop stops either way
            future.cancel()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._timeout)

    def _run(self, work: Coroutine[Any, Any, T], what: str) -> T:
        """Run `work` on the loop thread within the timeout; nats errors become DeliveryFailed."""
        bounded = asyncio.wait_for(work, self._timeout)
        try:
            future = asyncio.run_coroutine_threadsafe(bounded, self._started())
        except RuntimeError as exc:  # closed, or the loop stopped under us
            bounded.close()
            work.close()
            raise DeliveryFailed(f"JetStream sink is closed ({what})") from exc
        try:
            return future.result(self._timeout + GRACE_SECONDS)
        except DeliveryFailed:
            raise
        except TimeoutError as exc:  # ours, asyncio's and nats.errors.TimeoutError alike
            future.cancel()
            raise DeliveryFailed(f"{what}: no answer from NATS within {self._timeout}s") from exc
        except nats.js.errors.NoStreamResponseError as exc:
            raise DeliveryFailed(f"{what}: no JetStream stream takes this subject") from exc
        except (nats.errors.Error, OSError) as exc:
            raise DeliveryFailed(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=_serve, args=(loop,), name="jetstream-sink", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> PubAck:
        js = await self._jetstream()
        try:
            return await js.publish(subject, body, headers=headers, stream=self._stream)
        except nats.js.errors.NoStreamResponseError:
            self._js = None  # the stream went away: make sure of it again on the next call
            raise

    async def _jetstream(self) -> JetStreamContext:
        """The connection's JetStream context, connecting and ensuring the stream first if
        needed (one coroutine at a time; the others wait for it)."""
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._nc is not None and self._nc.is_closed:
                self._nc = self._js = None
            if self._nc is None:
                nc = Client()
                try:
                    await nc.connect(
                        self._url,
                        name="product-shop-relay",
                        connect_timeout=max(1, math.ceil(self._timeout)),
                        max_reconnect_attempts=-1,  # keep trying in the background
                        error_cb=_log_error,
                        reconnected_cb=_log_reconnected,
                    )
                except BaseException:  # refused, timed out, or cancelled by the deadline
                    await nc.close()
                    raise
                self._nc = nc
            if self._js is None:
                js = self._nc.jetstream(timeout=self._timeout)
                await self._ensure_stream(js)
                self._js = js
            return self._js

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        """Create the stream if missing; if it exists, leave it alone but check that it takes
        our subjects."""
        wanted = f"{self._prefix}.>"
        try:
            info = await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(
                    name=self._stream, subjects=[wanted], duplicate_window=self._window
                )
                return
            except nats.js.errors.APIError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:  # not just created by someone else
                    raise
            info = await js.stream_info(self._stream)
        subjects = info.config.subjects or []
        if not any(_covers(pattern, wanted) for pattern in subjects):
            raise DeliveryFailed(
                f"JetStream stream {self._stream} takes {subjects}, not {wanted}: "
                "add the subjects to the stream or configure another stream"
            )

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        try:
            await asyncio.wait_for(nc.drain(), self._timeout)
        except (nats.errors.Error, OSError, TimeoutError):
            await nc.close()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread: run until stopped, then cancel what is left and close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


async def _log_error(error: Exception) -> None:
    log.warning("nats_connection_error", error=f"{type(error).__name__}: {error}")


async def _log_reconnected() -> None:
    log.info("nats_reconnected")
