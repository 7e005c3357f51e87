"""``python manage.py request_resync --hub hub1 [--type managedcluster ...]`` or ``--all``: ask hubs for full state.

The requests are recorded all or nothing (an unknown hub or type records none and exits with status 1), are
visible in the admin with their completion, and are sent by the Celery worker; pass
``--send`` to send them from this process right away instead (useful without a worker).
"""

from __future__ import annotations

import getpass
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from globalhub.manager.models import ResyncRequest
from globalhub.manager.resync_requests import dispatch_pending, request_resyncs
from globalhub.protocol.events import RESYNC_TYPES
from globalhub.protocol.kafka import ConfirmedProducer, KafkaSettings


class Command(BaseCommand):
    help = "Ask one or more hubs (or all, as a broadcast) for a full resync of some or all of the four types."

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--hub", action="append", dest="hubs", metavar="HUB", help="a hub (repeatable)")
        target.add_argument("--all", action="store_true", help="every hub (one broadcast request)")
        parser.add_argument(
            "--type",
            action="append",
            dest="types",
            metavar="TYPE",
            help=f"a type to resync (repeatable; default all four: {', '.join(t.short for t in RESYNC_TYPES)})",
        )
        parser.add_argument("--send", action="store_true", help="send now from this process, not via the worker")

    def handle(self, *args: Any, **options: Any) -> None:
        requested_by = f"command:{getpass.getuser()}"
        hubs: list[str] | None = None if options["all"] else options["hubs"]
        try:
            requests = request_resyncs(hubs, options["types"], ResyncRequest.Reason.OPERATOR, requested_by)
        except ValueError as error:  # nothing was recorded
            raise CommandError(str(error)) from None
        for request in requests:
            self.stdout.write(f"resync request #{request.pk} for {request.subject}: {', '.join(request.types)}")
        if options["send"]:
            producer = ConfirmedProducer(KafkaSettings.from_env())
            sent = dispatch_pending(producer, settings.GLOBALHUB.spec_topic)
            producer.close()
            self.stdout.write(f"sent {sent} pending request(s)")
