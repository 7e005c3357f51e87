"""``python manage.py consume_status``: run the status consumer until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, connection

from globalhub.manager.consumer import ConsumerOptions, StatusConsumer
from globalhub.manager.lifecycle import manager_started
from globalhub.protocol.kafka import KafkaSettings
from globalhub.stopping import call_on_signals

log = logging.getLogger("globalhub.manager.consume_status")


class Command(BaseCommand):
    help = "Consume every hub's status topic into the database (stops cleanly on SIGTERM)."

    def add_arguments(self, parser: CommandParser) -> None:
        conf = settings.GLOBALHUB
        parser.add_argument("--group", default=conf.consumer_group, help="Kafka consumer group id")
        parser.add_argument("--batch-size", type=int, default=conf.consumer_batch_size)

    def handle(self, *args: Any, **options: Any) -> None:
        conf = settings.GLOBALHUB
        consumer = StatusConsumer(
            KafkaSettings.from_env(),
            ConsumerOptions(
                group_id=options["group"],
                topic_prefix=conf.status_topic_prefix,
                batch_size=options["batch_size"],
                topic_refresh_ms=conf.topic_refresh_ms,
                retry_max=conf.db_retry_max.total_seconds(),
            ),
        )

        call_on_signals(consumer.stop)
        announce_start()
        consumer.run()


def announce_start() -> None:
    """A manager start asks every hub for its full state (once, however many consumers start together)."""
    delay = 1.0
    while True:
        try:
            request = manager_started()
        except DatabaseError as error:
            log.error("cannot record the manager start yet (%s); retrying in %.0fs", error, delay)
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        if request is None:
            log.info("manager start: a broadcast resync was requested moments ago, not repeated")
        else:
            log.info("manager start: broadcast resync request #%s", request.pk)
        return
