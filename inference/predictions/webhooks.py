"""Webhook deliveries: target checks, Replicate's signatures, bounded retries, off the hot path.

- **Targets** go through the one outbound guard (``inference.net``): any host, but its
  addresses must be public unless WEBHOOK_ALLOWED_HOSTS names it (``check_target`` at creation,
  and again by ``net.post`` before every attempt, which connects to the address it checked,
  with the name in ``Host`` and TLS's SNI). One attempt ends within WEBHOOK_TIMEOUT_S in all.
- **Signatures**, as Replicate signs (Standard Webhooks): ``webhook-id``, ``webhook-timestamp``
  and ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the
  base64 key after ``whsec_`` in ``WEBHOOK_SECRET``; ``replicate.webhooks.validate`` accepts them.
- **Delivery** never blocks inference: ``send`` only queues (bounded by a count and by the
  bytes of the bodies held until each delivery ends; beyond either a delivery is dropped and
  logged). A thread with its own event loop posts them, in order per
  prediction, a newer ``logs`` snapshot replacing a queued one. At most ``PER_HOST`` attempts
  run at once per receiver (scheme, host and port), and receivers never wait on each other, so
  a slow one delays only its own deliveries. As Cog does, ``completed`` is retried with
  exponential backoff on errors, timeouts, 429 and 5xx; other events get one try. A refused
  target (a non-global address, a redirect) is not retried: it would be refused again.
  ``logs`` events go out at most every ``LOGS_INTERVAL_S``, as Replicate throttles them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from inference import __version__, net
from inference.errors import InvalidRequest
from inference.hosts import HostList
from inference.predictions.envelopes import webhook_body
from inference.predictions.record import Event, Prediction, new_id
from inference.settings import Settings

log = logging.getLogger(__name__)

LOGS_INTERVAL_S = 0.5
#: Attempts in flight at once to one receiver; others never wait for its slots.
PER_HOST = 2
#: Most significant first: one transition sends one delivery, named after its main event.
PRIORITY: tuple[Event, ...] = ("completed", "output", "start", "logs")


def webhook_policy(settings: Settings) -> net.Policy:
    """Any host may receive webhooks; non-global addresses only for WEBHOOK_ALLOWED_HOSTS."""
    return net.Policy(
        hosts=HostList("*"),
        private_hosts=settings.webhook_allowed_hosts,
        deadline_s=settings.webhook_timeout_s,
        private_fix="a deployer can allow a host name with WEBHOOK_ALLOWED_HOSTS",
        deadline_setting="WEBHOOK_TIMEOUT_S",
    )


async def check_target(
    url: str, settings: Settings, field: str = "webhook", resolver: net.Resolver | None = None
) -> None:
    """``InvalidRequest`` naming ``field`` unless ``url`` is an http(s) URL whose host resolves
    to addresses this server may call (the lookup runs off the event loop)."""
    try:
        await net.check_async(url, webhook_policy(settings), resolver)
    except net.OutboundError as exc:
        raise InvalidRequest(field, f"{field}: {exc.message}") from None


def _receiver(url: str) -> str:
    """Whom a delivery goes to, for the per-receiver limit: scheme, host and port."""
    try:
        parsed = net.parse(url)
    except net.Refused:
        return url  # refused again when posted; its own key keeps it from others' slots
    return f"{parsed.scheme}://{parsed.netloc}"


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for ``body`` (Standard Webhooks, v1)."""
    key = base64.b64decode(secret.partition("_")[2])
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@dataclass
class Delivery:
    prediction_id: str
    url: str
    event: Event
    body: bytes
    message_id: str


class WebhookSender:
    """Queues and posts webhooks on its own thread; see the module docstring."""

    def __init__(self, settings: Settings, resolver: net.Resolver | None = None) -> None:
        self.settings = settings
        self.policy = webhook_policy(settings)
        self.resolver = resolver  # tests play a DNS server with it
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._queues: dict[str, deque[Delivery]] = {}
        self._outstanding = 0  # queued or being delivered
        self._held_bytes = 0  # their bodies
        self._chains: set[asyncio.Task[None]] = set()
        self._last_logs: dict[str, float] = {}
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}  # receiver -> (slots, users)

    # -- any thread ----------------------------------------------------------------------

    def send(self, prediction: Prediction, events: list[Event]) -> None:
        """Queue one delivery for this transition if its webhook wants one of ``events``."""
        wanted = [e for e in PRIORITY if e in events and e in prediction.events]
        if not prediction.webhook or not wanted:
            return
        event, now = wanted[0], time.monotonic()
        with self._lock:
            if self._closed:
                log.warning(
                    "webhook %s of prediction %s dropped: shutting down", event, prediction.id
                )
                return
            if event == "logs":
                if now - self._last_logs.get(prediction.id, 0.0) < LOGS_INTERVAL_S:
                    return
                self._last_logs[prediction.id] = now
            elif event == "completed":
                self._last_logs.pop(prediction.id, None)
            loop = self._started()
        body = json.dumps(webhook_body(prediction)).encode()
        delivery = Delivery(prediction.id, prediction.webhook, event, body, f"msg_{new_id()}")
        loop.call_soon_threadsafe(self._enqueue, delivery)

    def close(self, timeout_s: float) -> None:
        """Refuse new deliveries, give queued ones up to ``timeout_s``, then stop. Blocks.

        A later ``send`` starts afresh (an app whose lifespan runs again, as in tests).
        """
        with self._lock:
            self._closed, loop, thread = True, self._loop, self._thread
        try:
            if loop is not None and thread is not None:
                drained = asyncio.run_coroutine_threadsafe(self._drain(timeout_s), loop)
                try:
                    drained.result(timeout_s + 5)
                finally:
                    loop.call_soon_threadsafe(loop.stop)
                    thread.join(timeout=5)
        finally:
            with self._lock:
                self._closed, self._loop, self._thread = False, None, None
                self._slots = {}
                self._last_logs.clear()
                self._queues.clear()  # a chain cancelled at shutdown may not have emptied its own
                self._outstanding = 0
                self._held_bytes = 0

    def _started(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            loop.call_soon(ready.set)

            def run() -> None:
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            self._thread = threading.Thread(target=run, name="webhook-sender", daemon=True)
            self._thread.start()
            ready.wait()
            self._loop = loop
        return self._loop

    # -- the sender's loop -----------------------------------------------------------------

    def _enqueue(self, delivery: Delivery) -> None:
        if self._outstanding >= self.settings.webhook_queue_size:
            log.warning(
                "webhook %s of prediction %s dropped: %d deliveries queued (WEBHOOK_QUEUE_SIZE)",
                delivery.event,
                delivery.prediction_id,
                self._outstanding,
            )
            return
        if self._held_bytes + len(delivery.body) > self.settings.webhook_queue_max_bytes:
            log.warning(
                "webhook %s of prediction %s dropped: its %d bytes do not fit beside the %d "
                "queued (WEBHOOK_QUEUE_MAX_BYTES)",
                delivery.event,
                delivery.prediction_id,
                len(delivery.body),
                self._held_bytes,
            )
            return
        queue = self._queues.get(delivery.prediction_id)
        if queue is None:
            queue = self._queues[delivery.prediction_id] = deque()
            chain = asyncio.ensure_future(self._chain(delivery.prediction_id, queue))
            self._chains.add(chain)
            chain.add_done_callback(self._chains.discard)
        if queue and queue[-1].event == "logs":
            self._release(queue.pop())  # superseded by this newer snapshot
        queue.append(delivery)
        self._outstanding += 1
        self._held_bytes += len(delivery.body)

    def _release(self, delivery: Delivery) -> None:
        """``delivery`` is delivered, given up or dropped: it no longer counts against a bound."""
        self._outstanding -= 1
        self._held_bytes -= len(delivery.body)

    async def _chain(self, prediction_id: str, queue: deque[Delivery]) -> None:
        """Deliver one prediction's webhooks in order."""
        try:
            while queue:
                delivery = queue.popleft()
                try:
                    await self._deliver(delivery)
                finally:
                    self._release(delivery)
        finally:
            for left in queue:
                self._release(left)
            self._queues.pop(prediction_id, None)

    @contextlib.asynccontextmanager
    async def _slot(self, url: str) -> AsyncIterator[None]:
        """One of the receiver's ``PER_HOST`` slots, for one attempt (not its backoff)."""
        key = _receiver(url)
        slots, users = self._slots.get(key) or (asyncio.Semaphore(PER_HOST), 0)
        self._slots[key] = (slots, users + 1)
        try:
            async with slots:
                yield
        finally:
            slots, users = self._slots[key]
            if users == 1:
                del self._slots[key]  # forget receivers nobody waits for
            else:
                self._slots[key] = (slots, users - 1)

    async def _deliver(self, delivery: Delivery) -> None:
        s = self.settings
        attempts = s.webhook_max_attempts if delivery.event == "completed" else 1
        for attempt in range(1, attempts + 1):
            what = (
                f"webhook {delivery.event} of prediction {delivery.prediction_id} "
                f"(attempt {attempt}/{attempts})"
            )
            try:
                async with self._slot(delivery.url):
                    status = await self._post(delivery)
            except net.Refused as exc:
                log.warning("%s refused: %s", what, exc.message)
                return
            except net.OutboundError as exc:
                log.warning("%s failed: %s", what, exc.message)
            else:
                if status < 300:
                    log.debug("%s delivered", what)
                    return
                log.warning("%s answered %d", what, status)
                if status < 500 and status not in (408, 429):
                    return
            if attempt < attempts:
                await asyncio.sleep(s.webhook_retry_backoff_s * 2 ** (attempt - 1))
        if attempts > 1:
            log.error(
                "gave up on webhook %s of prediction %s after %d attempts",
                delivery.event,
                delivery.prediction_id,
                attempts,
            )

    async def _post(self, delivery: Delivery) -> int:
        """One signed POST through the guard (checked again now: a name may have moved)."""
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": f"diffusion-serve/{__version__}",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.settings.webhook_secret is not None:
            secret = self.settings.webhook_secret.get_secret_value()
            headers["webhook-signature"] = sign(
                secret, delivery.message_id, timestamp, delivery.body
            )
        return await net.post(
            delivery.url, delivery.body, headers, self.policy, resolver=self.resolver
        )

    async def _drain(self, timeout_s: float) -> None:
        chains = set(self._chains)
        if chains:
            _, late = await asyncio.wait(chains, timeout=timeout_s)
            for chain in late:
                chain.cancel()
            if late:
                log.warning("shutdown: %d predictions' webhooks were not delivered", len(late))
