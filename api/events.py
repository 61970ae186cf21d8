"""One Redis subscription per API process for every SSE stream.

Each ``GET /api/jobs/{id}/events`` stream needs to hear when its job changes. A pub/sub
connection per stream would cost Redis a connection per open stream (200 streams, 200
connections, and their idle pool afterwards); here one connection per process subscribes to
the channels that have at least one listener, and a reader task wakes the listeners of each
message's channel. A channel is subscribed when its first listener arrives (and ``watch``
returns only once Redis confirmed it, so no change can fall between subscribing and the
stream's first read of the job) and unsubscribed when its last one leaves.

If the connection fails, every listener is woken with the failure and the hub starts afresh
with the next listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
import redis.exceptions

log = logging.getLogger(__name__)

CONFIRM_SECONDS = 5.0


class Listener:
    """One stream's view of its channel: ``await changed(timeout)`` after each read of the job."""

    def __init__(self, hub: JobEvents):
        self._hub = hub
        self._event = asyncio.Event()

    def _wake(self) -> None:
        self._event.set()

    async def changed(self, timeout: float) -> bool:
        """Wait for a message on the channel (True) or the timeout (False); raises when the
        shared connection failed."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        if self._hub.failure is not None:
            raise self._hub.failure
        return True


class JobEvents:
    def __init__(self, client):
        self.client = client
        self.failure: redis.exceptions.RedisError | None = None
        self._pubsub = None
        self._reader: asyncio.Task | None = None
        self._listeners: dict[str, set[Listener]] = {}
        self._confirmations: dict[str, asyncio.Future] = {}
        self._lock = asyncio.Lock()

    @property
    def channels(self) -> int:
        return len(self._listeners)

    @contextlib.asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[Listener]:
        listener = Listener(self)
        await self._join(channel, listener)
        try:
            yield listener
        finally:
            with anyio.CancelScope(shield=True):  # a stream cancelled by its client's leaving still unsubscribes
                await self._leave(channel, listener)

    async def _join(self, channel: str, listener: Listener) -> None:
        async with self._lock:
            listeners = self._listeners.get(channel)
            if listeners:
                listeners.add(listener)
                confirmation = self._confirmations.get(channel)
            else:
                self._listeners[channel] = {listener}
                confirmation = asyncio.get_running_loop().create_future()
                self._confirmations[channel] = confirmation
                try:
                    if self._pubsub is None:  # first use, or after a failure: a new connection
                        self._pubsub = self.client.pubsub()
                        self.failure = None
                    await self._pubsub.subscribe(channel)
                    if self._reader is None or self._reader.done():
                        self._reader = asyncio.create_task(self._read(self._pubsub), name="job-events")
                except BaseException:
                    self._drop(channel, listener)
                    raise
        if confirmation is not None:
            try:
                await asyncio.wait_for(asyncio.shield(confirmation), CONFIRM_SECONDS)
            except BaseException:
                await self._leave(channel, listener)
                if isinstance(confirmation, asyncio.Future) and not confirmation.done():
                    raise redis.exceptions.TimeoutError("no subscribe confirmation") from None
                raise

    def _drop(self, channel: str, listener: Listener) -> bool:
        """Forget ``listener``; True when it was the channel's last."""
        listeners = self._listeners.get(channel)
        if listeners is None:
            return False
        listeners.discard(listener)
        if listeners:
            return False
        del self._listeners[channel]
        self._confirmations.pop(channel, None)
        return True

    async def _leave(self, channel: str, listener: Listener) -> None:
        async with self._lock:
            if self._drop(channel, listener) and self._pubsub is not None and self.failure is None:
                try:
                    await self._pubsub.unsubscribe(channel)
                except redis.exceptions.RedisError as exc:
                    log.warning("job events: unsubscribing %s failed (%s)", channel, exc)

    async def _read(self, pubsub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                if message["type"] == "subscribe":
                    confirmation = self._confirmations.get(channel)
                    if confirmation is not None and not confirmation.done():
                        confirmation.set_result(True)
                elif message["type"] == "message":
                    for listener in list(self._listeners.get(channel, ())):
                        listener._wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("job events: the shared subscription failed (%s); streams are told", exc)
            self.failure = (
                exc if isinstance(exc, redis.exceptions.RedisError) else redis.exceptions.ConnectionError(str(exc))
            )
            for confirmation in self._confirmations.values():
                if not confirmation.done():
                    confirmation.set_exception(self.failure)
            for listeners in self._listeners.values():
                for listener in listeners:
                    listener._wake()
            self._pubsub = None
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._pubsub = self._reader = None
        self._listeners.clear()
        self._confirmations.clear()
