"""What the agent observes about its own work, kept in the hub's Redis so any process can serve it.

The agent's work runs in Celery pool processes that come and go; a Prometheus client's in-memory histograms would
be split across them and lost with each. So every observation is written to Redis at once (one transaction per
send or resync) and ``agent_tasks/metrics.py`` reads it at scrape time. The counts survive restarts of every agent
process; Prometheus sees a counter reset only if Redis itself loses its data.

Layout (``gh:<hub>:agent:metrics:…``):

* ``<histogram>``: a hash per histogram: ``<label values>|<le>`` -> observations in that bucket (not cumulative),
  ``<label values>|sum`` and ``<label values>|count``. Label values are joined by ``|`` in the histogram's label
  order; they come from this code (type names, send kinds), never from outside.
* ``errors``: a hash ``<kind>`` -> failures counted.

Recording never fails the work it observes: a Redis error while recording is logged and the observation dropped
(the work itself then fails on its own Redis writes, with its own error).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis

from agent_tasks.redisutil import text
from globalhub.protocol.codec import OutgoingMessage

log = logging.getLogger(__name__)

KIB = 1024


@dataclass(frozen=True)
class Histogram:
    """A histogram's name (without ``globalhub_agent_``), help, labels besides ``hub``, and bucket upper bounds."""

    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]

    def bounds(self) -> list[str]:
        """The ``le`` values, ``+Inf`` last, as Prometheus writes them."""
        return [_le(bound) for bound in self.buckets] + ["+Inf"]

    def bucket_of(self, value: float) -> str:
        for bound in self.buckets:
            if value <= bound:
                return _le(bound)
        return "+Inf"


SEND_LATENCY = Histogram(
    "send_latency_seconds",
    "From a send's last message produced to Kafka's confirmation of every message of the send",
    ("type", "send"),
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RESYNC_DURATION = Histogram(
    "resync_duration_seconds",
    "From a full resync's request (the type queued) to Kafka's confirmation of its last bundle",
    ("type",),
    (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0),
)
BUNDLE_BYTES = Histogram(
    "bundle_bytes",
    "Payload size of each status message confirmed by Kafka",
    ("type",),
    (256, KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 512 * KIB, 800 * KIB, 1024 * KIB, 4096 * KIB),
)
HISTOGRAMS = (SEND_LATENCY, RESYNC_DURATION, BUNDLE_BYTES)

# Failure kinds of ``globalhub_agent_errors_total``; ``kube_read`` is read from the Kubernetes source's own state.
ERROR_SEND = "send"  # Kafka did not confirm a send (or its topic could not be created)
ERROR_SYNC = "sync"  # a delta or heartbeat failed, whatever the cause
ERROR_RESYNC = "resync"  # a full resync failed, whatever the cause (it is retried with backoff)
ERROR_KUBE_READ = "kube_read"  # a list or watch of the hub's Kubernetes API failed
RECORDED_ERRORS = (ERROR_SEND, ERROR_SYNC, ERROR_RESYNC)


def metrics_prefix(hub: str) -> str:
    return f"gh:{hub}:agent:metrics:"


class Recorder:
    """Where the agent's engine and emitter report what they observe. This base records nothing: an agent built
    without metrics (a benchmark, a unit test of something else) uses it; :class:`RedisRecorder` keeps them."""

    def observe_send(self, short_type: str, send: str, latency: float | None, sizes: Sequence[int]) -> None:
        """A send confirmed by Kafka: ``latency`` None when it sent no message."""

    def observe_resync(self, short_type: str, seconds: float) -> None:
        """A full resync confirmed, ``seconds`` after it was requested."""

    def count_error(self, kind: str) -> None:
        """A failure of one of the kinds above."""


class RedisRecorder(Recorder):
    def __init__(self, client: redis.Redis, hub: str) -> None:
        self._redis = client
        self._prefix = metrics_prefix(hub)

    def observe_send(self, short_type: str, send: str, latency: float | None, sizes: Sequence[int]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        if latency is not None:
            self._observe(pipe, SEND_LATENCY, (short_type, send), [latency])
        if sizes:
            self._observe(pipe, BUNDLE_BYTES, (short_type,), [float(size) for size in sizes])
        self._execute(pipe, "send")

    def observe_resync(self, short_type: str, seconds: float) -> None:
        pipe = self._redis.pipeline(transaction=True)
        self._observe(pipe, RESYNC_DURATION, (short_type,), [max(seconds, 0.0)])
        self._execute(pipe, "resync")

    def count_error(self, kind: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(self._prefix + "errors", kind, 1)
        self._execute(pipe, f"{kind} error")

    def _observe(
        self, pipe: redis.client.Pipeline, histogram: Histogram, labels: tuple[str, ...], values: list[float]
    ) -> None:
        """Add observations, one HINCRBY per bucket touched (a resync of a thousand bundles costs a few commands)."""
        series = "|".join(labels)
        per_bucket: dict[str, int] = {}
        for value in values:
            bound = histogram.bucket_of(value)
            per_bucket[bound] = per_bucket.get(bound, 0) + 1
        key = self._prefix + histogram.name
        for bound, count in per_bucket.items():
            pipe.hincrby(key, f"{series}|{bound}", count)
        pipe.hincrby(key, f"{series}|count", len(values))
        pipe.hincrbyfloat(key, f"{series}|sum", math.fsum(values))

    def _execute(self, pipe: redis.client.Pipeline, what: str) -> None:
        try:
            pipe.execute()
        except redis.RedisError as error:
            log.warning("could not record the metrics of a %s: %s", what, error)


@dataclass
class Series:
    """One histogram series as stored: label values, observations per ``le`` (not cumulative), sum and count."""

    labels: tuple[str, ...]
    buckets: dict[str, int]
    sum: float = 0.0
    count: int = 0

    def cumulative(self, histogram: Histogram) -> list[tuple[str, float]]:
        """Prometheus's cumulative buckets; ``+Inf`` equals the count (bounds stored by an older bucket layout
        count there only)."""
        running = 0
        result = []
        for bound in histogram.bounds()[:-1]:
            running += self.buckets.get(bound, 0)
            result.append((bound, float(running)))
        result.append(("+Inf", float(self.count)))
        return result


def read_histogram(client: redis.Redis, hub: str, histogram: Histogram) -> list[Series]:
    found: dict[tuple[str, ...], Series] = {}
    for raw_field, raw_value in client.hgetall(metrics_prefix(hub) + histogram.name).items():
        *labels, part = text(raw_field).split("|")
        if len(labels) != len(histogram.labels):
            continue  # written with other labels: not this layout's
        series = found.setdefault(tuple(labels), Series(tuple(labels), {}))
        value = text(raw_value)
        if part == "sum":
            series.sum = float(value)
        elif part == "count":
            series.count = int(value)
        else:
            series.buckets[part] = int(value)
    return [found[labels] for labels in sorted(found)]


def read_errors(client: redis.Redis, hub: str) -> dict[str, int]:
    """Failures counted per kind; every recorded kind is present (0 when none), so a rate starts at once."""
    counts = dict.fromkeys(RECORDED_ERRORS, 0)
    for kind, count in client.hgetall(metrics_prefix(hub) + "errors").items():
        counts[text(kind)] = int(text(count))
    return counts


class SendTiming:
    """Watches one send's messages on their way to the producer: their payload sizes, when the last one was
    produced (the producer asks for the next message only after producing the one before), and whether building
    them failed (an inventory read, not Kafka: not a send error)."""

    def __init__(self, messages: Iterable[OutgoingMessage]) -> None:
        self._messages = messages
        self.sizes: list[int] = []
        self.last_produced: float | None = None
        self.build_failed = False

    def messages(self) -> Iterator[OutgoingMessage]:
        source = iter(self._messages)
        while True:
            try:
                message = next(source)
            except StopIteration:
                return
            except Exception:
                self.build_failed = True
                raise
            self.sizes.append(len(message.value))
            yield message
            self.last_produced = time.monotonic()

    def latency(self) -> float | None:
        """Seconds from the last message produced until now (call it once the send is confirmed)."""
        return None if self.last_produced is None else time.monotonic() - self.last_produced


def _le(bound: float) -> str:
    return repr(float(bound))
