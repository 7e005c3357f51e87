"""Full resyncs: list a type from the inventory and send it as framed bundles, confirmed by Kafka.

Every frame of one resync carries the same ``extversion``; after a confirmed send the Generation moves on
(``Next``), as upstream's ``Send()`` does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from agent_tasks.inventory import Inventory
from agent_tasks.types import ObjectType
from agent_tasks.versions import VersionStore
from globalhub.protocol.bundles import ObjectMetadata, dumps, frame_resync
from globalhub.protocol.codec import OutgoingMessage, encode
from globalhub.protocol.events import EXT_VERSION
from globalhub.protocol.kafka import ConfirmedProducer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResyncReport:
    event_type: str
    objects: int
    messages: int
    bytes: int
    version: str
    seconds: float


class Emitter:
    def __init__(
        self, hub: str, topic: str, inventory: Inventory, versions: VersionStore, producer: ConfirmedProducer
    ) -> None:
        self.hub = hub
        self.topic = topic
        self.inventory = inventory
        self.versions = versions
        self.producer = producer

    def resync(self, kind: ObjectType) -> ResyncReport:
        """Send every object of ``kind``; raises ``DeliveryFailed`` when Kafka did not confirm all of it."""
        started = time.monotonic()
        version = self.versions.get(kind.short)
        counts = {"objects": 0, "bytes": 0}

        def objects() -> Iterator[tuple[ObjectMetadata, bytes]]:
            for object_id, raw in self.inventory.list_encoded(kind.short):
                obj = kind.tweak(json.loads(raw), self.hub)
                counts["objects"] += 1
                yield kind.metadata(obj, object_id), dumps(obj)

        def messages() -> Iterator[OutgoingMessage]:
            for frame in frame_resync(objects()):
                counts["bytes"] += len(frame.payload)
                extensions: dict[str, str | int] = {EXT_VERSION: str(version)}
                extensions.update(frame.extensions())
                yield encode(event_type=kind.event_type, source=self.hub, data=frame.payload, extensions=extensions)

        sent = self.producer.send(self.topic, messages())
        self.versions.advance_generation(kind.short)
        report = ResyncReport(
            kind.short, counts["objects"], sent, counts["bytes"], str(version), time.monotonic() - started
        )
        log.info(
            "hub=%s type=%s resync sent: %d objects in %d messages, %d bytes, version %s, %.0f ms",
            self.hub,
            kind.short,
            report.objects,
            report.messages,
            report.bytes,
            report.version,
            report.seconds * 1000,
        )
        return report
