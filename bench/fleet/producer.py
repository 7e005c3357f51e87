"""One Kafka producer for every hub of a process, whose sends may run on many threads at once.

``ConfirmedProducer.send`` waits with ``flush()``, which waits for *every* queued message: with a thousand hubs
sending at once, each send would wait for all the others. This subclass keeps the agent's producer settings (its
constructor builds the client) and its contract (return once Kafka confirmed every message of *this* send, raise
``DeliveryFailed`` otherwise), but tracks each send's own delivery reports, served by one polling thread. A failed
send does not replace the shared client, as the agent's does for its own: the other hubs' sends are in it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Message

from globalhub.protocol.codec import OutgoingMessage
from globalhub.protocol.kafka import ConfirmedProducer, DeliveryFailed, KafkaSettings

POLL_SECONDS = 0.05


class SharedProducer(ConfirmedProducer):
    def __init__(self, settings: KafkaSettings, *, stall_timeout: float = 30.0, **overrides: Any) -> None:
        super().__init__(settings, stall_timeout=stall_timeout, **overrides)
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="fleet-producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        """Serve delivery reports for every send (the callbacks run on this thread)."""
        while not self._stopping.is_set():
            self._producer.poll(POLL_SECONDS)

    def send(self, topic: str, messages: Iterable[OutgoingMessage], *, timeout: float | None = None) -> int:
        """Produce in order and wait until Kafka confirmed each of these messages; ``DeliveryFailed`` otherwise."""
        stall = self.stall_timeout if timeout is None else timeout
        tracker = SendTracker()
        for message in messages:
            self._produce_one(topic, message, tracker, stall)
        tracker.close()
        while not tracker.finished.wait(POLL_SECONDS * 4):
            if time.monotonic() - tracker.last_progress > stall:
                tracker.fail(f"Kafka confirmed nothing for {stall:g}s")
        if tracker.failures:
            raise DeliveryFailed(
                f"{tracker.delivered} of {tracker.produced} messages to {topic} delivered; "
                f"first problem: {tracker.failures[0]}"
            )
        return tracker.produced

    def _produce_one(self, topic: str, message: OutgoingMessage, tracker: SendTracker, stall: float) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers),
                    on_delivery=tracker.on_delivery,
                )
                tracker.produced_one()
                return
            except BufferError:  # the local queue is full: the polling thread makes room
                if time.monotonic() - tracker.last_progress > stall:
                    tracker.fail(f"the producer's queue stayed full for {stall:g}s")
                    raise DeliveryFailed(f"{topic}: {tracker.failures[0]}") from None
                time.sleep(POLL_SECONDS)

    def close(self, timeout: float = 10.0) -> int:
        """Stop the polling thread, then flush what is queued; return how many messages stayed undelivered."""
        self._stopping.set()
        self._poller.join(timeout=1.0)
        return super().close(timeout)


class SendTracker:
    """One send's messages and delivery reports. ``finished`` is set once every produced message is reported (or
    the send failed) after :meth:`close` said nothing more will be produced."""

    def __init__(self) -> None:
        self.produced = 0
        self.delivered = 0
        self.failures: list[str] = []
        self.last_progress = time.monotonic()
        self.finished = threading.Event()
        self._closed = False
        self._lock = threading.Lock()

    def produced_one(self) -> None:
        with self._lock:
            self.produced += 1

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            self.last_progress = time.monotonic()
            if error is None:
                self.delivered += 1
            else:
                self.failures.append(str(error))
            self._check()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._check()

    def fail(self, why: str) -> None:
        with self._lock:
            self.failures.append(why)
            self.finished.set()

    def _check(self) -> None:
        if self._closed and self.delivered + len(self.failures) >= self.produced:
            self.finished.set()
