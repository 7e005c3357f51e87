"""``python manage.py consume_status``: run the status consumer until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaException
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
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
        parser.add_argument(
            "--instance-id",
            default=conf.consumer_instance_id,
            help="Kafka static membership id, unique to this process (default: GH_CONSUMER_INSTANCE_ID, else none)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        conf = settings.GLOBALHUB
        consumer = StatusConsumer(
            KafkaSettings.from_env(),
            ConsumerOptions(
                group_id=options["group"],
                topic_prefix=conf.status_topic_prefix,
                shared_topic=conf.shared_status_topic,
                batch_size=options["batch_size"],
                batch_bytes=conf.consumer_batch_bytes,
                topic_refresh_ms=conf.topic_refresh_ms,
                retry_max=conf.db_retry_max.total_seconds(),
                session_timeout=conf.consumer_session_timeout.total_seconds(),
                instance_id=options["instance_id"] or None,
                metrics_addr=conf.consumer_metrics_addr,
            ),
        )

        call_on_signals(consumer.stop)
        announce_start()
        try:
            consumer.run()
        except KafkaException as error:  # fatal for the client, e.g. fenced by a process with the same instance id
            raise CommandError(f"the status consumer cannot go on: {error}") from error


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
