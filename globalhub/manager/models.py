"""The manager's copy of every hub, and the bookkeeping that keeps it exact.

Rows a hub reported are soft-deleted (``deleted_at``) rather than removed, as upstream does; an upsert clears
``deleted_at`` again. Bookkeeping tables record where the status consumer is (``ConsumedPosition``), what could not
be ingested (``DeadLetter``), the last version admitted per hub and type (``TypeVersion``) and the progress of framed
resyncs (``ResyncProgress``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import models

# The stamp of a row no versioned bundle wrote yet: older than any.
STAMP_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Hub(models.Model):
    """A managed hub, known from the first status event on its topic.

    ``state`` changes only in :mod:`globalhub.manager.lifecycle` (conditional updates: one winner per change).
    """

    class State(models.TextChoices):
        ACTIVE = "active"
        INACTIVE = "inactive"

    name = models.CharField(primary_key=True, max_length=200)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    # When the hub's latest heartbeat reached the manager's side, on the manager's clocks: the broker's log-append
    # time, or the time the consumer read it. Liveness is judged on this alone. Never moved backwards.
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # The same heartbeat's CloudEvent time, from the hub's clock: for display and ordering only.
    last_heartbeat_sent_at = models.DateTimeField(null=True, blank=True)
    # The hub's clock minus the manager's side, as the last heartbeat showed it, and how many heartbeats were off by
    # more than the tolerated skew (a hub whose clock is wrong is shown, never judged by it).
    clock_skew_seconds = models.FloatField(null=True, blank=True)
    # The topic the hub's status arrives on when it is not its own ``<prefix><hub>``: the shared status topic
    # (GH_SHARED_STATUS_TOPIC). The probe reads that topic's ends before judging the hub.
    status_topic = models.CharField(max_length=255, blank=True, default="")
    skewed_heartbeats = models.IntegerField(default=0, db_default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["state", "last_heartbeat"], name="hub_state_heartbeat")]

    def __str__(self) -> str:
        return self.name


class HubObject(models.Model):
    """What a hybrid type's rows share: the hub's object as JSON, soft delete, and the last resync that listed it.

    The big tables (clusters, policies, compliance) reference their hub without a database foreign key, as
    upstream's tables do: a per-row constraint check was a quarter of a bulk upsert. The ingest creates the hub
    in the same transaction before any of its rows, and deleting a hub deletes its rows (Django's cascade).
    """

    payload = models.JSONField()
    error = models.CharField(max_length=16, default="none")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The last framed resync that listed this row; a completed resync soft-deletes the hub's rows it did not mark.
    resync_mark = models.CharField(max_length=64, blank=True, default="")
    # A digest of the payload as the hub sent it, written by the ingest: an object reported again unchanged is
    # not rewritten. Rows written any other way have none, so the next report rewrites them.
    payload_digest = models.BinaryField(null=True, blank=True, editable=False)
    # Which bundle last wrote the row: the agent run it came from (the hub-clock time that run began, as the
    # manager saw it) and its version. A bundle older than that never overwrites the row (see ingest/admission.py).
    stamp_run = models.DateTimeField(default=STAMP_EPOCH, db_default=STAMP_EPOCH, editable=False)
    stamp_generation = models.DecimalField(max_digits=20, decimal_places=0, default=0, db_default=0, editable=False)
    stamp_value = models.DecimalField(max_digits=20, decimal_places=0, default=0, db_default=0, editable=False)

    class Meta:
        abstract = True


class ManagedCluster(HubObject):
    """A ManagedCluster of a hub, keyed by its ``id.k8s.io`` claim (``cluster_id``) within that hub."""

    # No index of its own: the unique constraint's index leads with the hub, and one less index is one less write.
    hub = models.ForeignKey(
        Hub,
        on_delete=models.CASCADE,
        db_column="leaf_hub_name",
        related_name="clusters",
        db_constraint=False,
        db_index=False,
    )
    cluster_id = models.UUIDField()
    cluster_name = models.CharField(max_length=253, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hub", "cluster_id"], name="managed_cluster_hub_cluster_id"),
        ]
        indexes = [
            models.Index(fields=["hub", "cluster_name"], name="managed_cluster_hub_name"),
            models.Index(fields=["deleted_at"], name="managed_cluster_deleted_at"),
        ]

    def __str__(self) -> str:
        return f"{self.hub_id}/{self.cluster_name or self.cluster_id}"


class HubInfo(models.Model):
    """A hub's own cluster: ``managedhub.info`` (upstream ``status.leaf_hubs``), keyed by hub and cluster id."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, db_column="leaf_hub_name", related_name="info")
    cluster_id = models.UUIDField()
    payload = models.JSONField()
    console_url = models.CharField(max_length=500, blank=True)
    grafana_url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "hub info"
        constraints = [models.UniqueConstraint(fields=["hub", "cluster_id"], name="hub_info_hub_cluster_id")]

    def __str__(self) -> str:
        return f"{self.hub_id} ({self.cluster_id})"


class LocalPolicy(HubObject):
    """A root policy of a hub (``policy.localspec``, upstream ``local_spec.policies``), keyed by its UID."""

    # No index of its own: the unique constraint's index leads with the hub, and one less index is one less write.
    hub = models.ForeignKey(
        Hub,
        on_delete=models.CASCADE,
        db_column="leaf_hub_name",
        related_name="policies",
        db_constraint=False,
        db_index=False,
    )
    policy_id = models.UUIDField()
    policy_name = models.CharField(max_length=253, blank=True)

    class Meta:
        verbose_name_plural = "local policies"
        constraints = [models.UniqueConstraint(fields=["hub", "policy_id"], name="local_policy_hub_policy_id")]
        indexes = [
            models.Index(fields=["hub", "policy_name"], name="local_policy_hub_name"),
            models.Index(fields=["deleted_at"], name="local_policy_deleted_at"),
        ]

    def __str__(self) -> str:
        return f"{self.hub_id}/{self.policy_name or self.policy_id}"


class Compliance(models.TextChoices):
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"
    PENDING = "pending"
    UNKNOWN = "unknown"


class LocalCompliance(models.Model):
    """One (policy, cluster) compliance of a hub (``policy.localcompliance``, upstream ``local_status.compliance``).

    Rows are replaced by each complete bundle and hard-deleted when no longer listed, as upstream.
    """

    # No index of its own: the unique constraint's index leads with the hub, and one less index is one less write.
    hub = models.ForeignKey(
        Hub,
        on_delete=models.CASCADE,
        db_column="leaf_hub_name",
        related_name="compliance",
        db_constraint=False,
        db_index=False,
    )
    policy_id = models.UUIDField()
    cluster_name = models.CharField(max_length=253)
    compliance = models.CharField(max_length=16, choices=Compliance.choices)
    error = models.CharField(max_length=16, default="none")
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "local compliance"
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "policy_id", "cluster_name"], name="local_compliance_hub_policy_cluster"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.policy_id} {self.cluster_name}: {self.compliance}"


class HubEvent(models.Model):
    """What the three event streams share (upstream's ``event.*`` tables): one row per event a hub reported.

    Append-only: a row is inserted once, whatever redelivers or resends it (the unique constraint of each stream,
    which names the hub: upstream's policy-event keys do not, so two hubs' events could collide). Kept for
    ``GH_EVENT_RETENTION`` after ``created_at`` (the ``prune events`` schedule).
    """

    # No index of its own: the unique constraint's index leads with the hub, and one less index is one less write.
    hub = models.ForeignKey(
        Hub,
        on_delete=models.CASCADE,
        db_column="leaf_hub_name",
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    event_name = models.CharField(max_length=253)
    event_namespace = models.CharField(max_length=253, blank=True, default="")
    message = models.TextField(blank=True, default="")
    reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField()  # the event's own time on the hub (its last observation)
    received_at = models.DateTimeField()  # when the manager stored it

    class Meta:
        abstract = True


class ManagedClusterEvent(HubEvent):
    """A Kubernetes event about a managed cluster (``event.managedcluster``, upstream ``event.managed_clusters``)."""

    cluster_name = models.CharField(max_length=253, blank=True, default="")
    cluster_id = models.UUIDField(null=True, blank=True)
    reporting_controller = models.CharField(max_length=255, blank=True, default="")
    reporting_instance = models.CharField(max_length=255, blank=True, default="")
    event_type = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hub", "event_name", "created_at"], name="managed_cluster_event_once"),
        ]
        indexes = [models.Index(fields=["created_at"], name="cluster_event_created")]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.cluster_name}: {self.reason}"


class PolicyEvent(HubEvent):
    """What root-policy and replicated-policy events share."""

    policy_id = models.UUIDField(null=True, blank=True)
    count = models.IntegerField(default=0)
    source = models.JSONField(null=True, blank=True)
    compliance = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        abstract = True


class LocalRootPolicyEvent(PolicyEvent):
    """An event of a root policy on a hub (``event.localrootpolicy``, upstream ``event.local_root_policies``)."""

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "event_name", "count", "created_at"], name="local_root_policy_event_once"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="root_policy_event_created")]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.event_name}: {self.reason}"


class LocalPolicyEvent(PolicyEvent):
    """An event of a policy replicated to one cluster (``event.localreplicatedpolicy``, upstream
    ``event.local_policies``)."""

    cluster_name = models.CharField(max_length=253, blank=True, default="")
    cluster_id = models.UUIDField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "event_name", "count", "created_at"], name="local_policy_event_once"
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="policy_event_created")]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.cluster_name} {self.event_name}: {self.reason}"


class CompleteFrame(models.Model):
    """A received frame of a complete-type bundle too large for one message, kept until its set is whole."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="+")
    event_type = models.CharField(max_length=255)
    resync_id = models.CharField(max_length=64)
    seq = models.IntegerField()
    payload = models.BinaryField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hub", "event_type", "resync_id", "seq"], name="complete_frame_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.event_type} {self.resync_id}#{self.seq}"


class ConsumedPosition(models.Model):
    """Where the status consumer goes on in a partition: the offset of the next message to read.

    Written in the same transaction as the rows the consumed messages produced, so it is the only offset authority.
    """

    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    next_offset = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)
    # The partition's end as ``refresh topic ends`` last read it from the broker: lag = end_offset - next_offset.
    end_offset = models.BigIntegerField(null=True, blank=True)
    end_read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["topic", "partition"], name="consumed_position_topic_partition"),
        ]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] @ {self.next_offset}"


class DeadLetter(models.Model):
    """A consumed message that could not be ingested, with the reason and its raw bytes."""

    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    reason = models.TextField()
    hub_name = models.CharField(max_length=200, blank=True)
    event_type = models.CharField(max_length=255, blank=True)
    key = models.BinaryField(null=True)
    # What kind of input it was, for counting (see ``ingest.deadletters.reason_class``): "malformed", "version", ...
    reason_class = models.CharField(max_length=32, default="other", db_default="other")
    headers = models.JSONField(default=list)
    value = models.BinaryField(null=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [
            models.Index(fields=["topic", "partition", "offset"], name="dead_letter_position"),
            # The overview's and the hub list's "dead letters in the last hour" per hub.
            models.Index(fields=["hub_name", "received_at"], name="dead_letter_hub_received"),
        ]
        # One message, one verdict: a redelivered message can never be dead-lettered twice (exactly-once witness).
        constraints = [
            models.UniqueConstraint(
                fields=["topic", "partition", "offset", "reason"], name="dead_letter_once_per_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}: {self.reason[:80]}"


class TypeVersion(models.Model):
    """The last version admitted and processed for one (hub, event type); survives manager restarts."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="versions")
    event_type = models.CharField(max_length=255)
    generation = models.DecimalField(max_digits=20, decimal_places=0)
    value = models.DecimalField(max_digits=20, decimal_places=0)
    # The hub-clock time the agent's current run began, as the manager saw it: the time of the last bundle with
    # Generation 0 or that answered a request. A bundle sent before it comes from an earlier run.
    run_started_at = models.DateTimeField(null=True, blank=True)
    # The hub-clock time of the newest bundle admitted: a Generation-0 bundle sent before it (a replay, or one
    # reordered behind later bundles of its own run) starts no new run.
    last_sent_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hub", "event_type"], name="type_version_hub_type"),
        ]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.event_type} {self.generation}.{self.value}"


class ResyncProgress(models.Model):
    """The framed resync being received for one (hub, event type), and how the last one ended."""

    class Outcome(models.TextChoices):
        RECEIVING = "receiving"
        COMPLETED = "completed"
        INCOMPLETE = "incomplete"

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="resyncs")
    event_type = models.CharField(max_length=255)
    resync_id = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RECEIVING)
    next_seq = models.IntegerField(default=0)
    listed = models.IntegerField(default=0)
    problem = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    deleted_count = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hub", "event_type"], name="resync_progress_hub_type"),
        ]
        verbose_name_plural = "resync progress"

    def __str__(self) -> str:
        return f"{self.hub_id} {self.event_type} {self.resync_id} {self.outcome}"


class HubTypeStatus(models.Model):
    """What the manager last received of one (hub, type): the last full state, the last delta, the version."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="type_status")
    event_type = models.CharField(max_length=255)
    last_full_state_at = models.DateTimeField(null=True, blank=True)
    last_full_state_objects = models.IntegerField(null=True, blank=True)
    last_delta_at = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=45, blank=True)
    # Bundles refused in a row (superseded, or every row they carried older than the row's) and since when; the
    # type is stalled when that goes on while the hub speaks, and a resync request heals it.
    refused = models.IntegerField(default=0, db_default=0)
    refused_since = models.DateTimeField(null=True, blank=True)
    last_refusal = models.TextField(blank=True, default="", db_default="")
    stalled_since = models.DateTimeField(null=True, blank=True)
    stalls = models.IntegerField(default=0, db_default=0)
    # Anti-entropy: the last digest the hub sent with a heartbeat, compared with the rows (see ``divergence.py``).
    digest_checked_at = models.DateTimeField(null=True, blank=True)
    digest_agreed = models.BooleanField(null=True, blank=True)  # None: never checked
    diverged_in_a_row = models.IntegerField(default=0, db_default=0)
    divergence_requested_at = models.DateTimeField(null=True, blank=True)  # the last resync a divergence asked for

    class Meta:
        verbose_name_plural = "hub type status"
        constraints = [models.UniqueConstraint(fields=["hub", "event_type"], name="hub_type_status_hub_type")]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.event_type}"


class Divergence(models.Model):
    """A hub's anti-entropy digest of one type that did not match the manager's rows, when it was read."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="divergences", db_constraint=False)
    event_type = models.CharField(max_length=255)
    seen_at = models.DateTimeField()
    expected_count = models.BigIntegerField()  # the hub's
    found_count = models.BigIntegerField()  # the manager's
    expected_hash = models.CharField(max_length=16)
    found_hash = models.CharField(max_length=16)
    request = models.ForeignKey(
        "ResyncRequest", null=True, blank=True, on_delete=models.SET_NULL, related_name="divergences"
    )

    class Meta:
        indexes = [models.Index(fields=["hub", "event_type", "-seen_at"], name="divergence_hub_type_seen")]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.event_type}: {self.expected_count} expected, {self.found_count} found"


class ResyncRequest(models.Model):
    """A request for full state, sent to one hub or to all (``broadcast``), kept as a record.

    Written in the same transaction as whatever caused it, then sent by the outbox (``sent_at``); it is complete
    when every target hub answered it: a full state carrying its id (or, from an upstream agent, stored after it
    was sent) was ingested whole for every requested type.
    """

    class Reason(models.TextChoices):
        STARTUP = "startup"
        REACTIVATION = "reactivation"
        OPERATOR = "operator"
        PERIODIC = "periodic"
        FIRST_SEEN = "first_seen"  # a hub the manager did not know (new, or deleted and speaking again)
        STALLED = "stalled"  # a type whose bundles kept being refused
        DIVERGED = "diverged"  # the hub's digest of a type differs from the manager's rows

    subject = models.CharField(max_length=200)  # a hub name or "broadcast"
    types = models.JSONField()  # full event type strings
    reason = models.CharField(max_length=16, choices=Reason.choices)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    send_attempts = models.IntegerField(default=0)
    last_send_error = models.TextField(blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [
            models.Index(fields=["sent_at"], name="resync_request_unsent", condition=models.Q(sent_at__isnull=True)),
            models.Index(fields=["reason", "requested_at"], name="resync_request_reason"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.reason} resync of {self.subject}"

    def progress(self, now: datetime, overdue_after: timedelta) -> str:
        """Where the request stands: pending, sent, complete, overdue or failed (the rule lives in
        :func:`globalhub.manager.resync_requests.status_conditions`)."""
        from globalhub.manager.resync_requests import status_of  # that module imports this one

        return status_of(self, now, overdue_after).value


class ResyncTarget(models.Model):
    """One hub a resync request asked, and when that hub's answer was complete."""

    request = models.ForeignKey(ResyncRequest, on_delete=models.CASCADE, related_name="targets")
    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="resync_targets")
    # The requested types whose full state answering this request was ingested whole.
    answered_types = models.JSONField(default=list)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["request", "hub"], name="resync_target_request_hub")]
        indexes = [
            models.Index(fields=["hub"], name="resync_target_open", condition=models.Q(completed_at__isnull=True))
        ]

    def __str__(self) -> str:
        return f"{self.request_id} -> {self.hub_id}"


class KafkaOutage(models.Model):
    """One row (``pk=1``): the last time the hub probe could not reach Kafka, and when it was answered again.

    Shared by every worker that runs the probe. After an outage nobody is judged inactive for a grace (see
    :func:`globalhub.manager.lifecycle.probe`): the hubs' heartbeats could not be stored meanwhile.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    # The last probe that could not read the topics' ends.
    unreachable_at = models.DateTimeField(null=True, blank=True)
    # The first probe after that one whose question Kafka answered: the grace counts from here.
    answered_again_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Kafka unreachable at {self.unreachable_at}, answered again at {self.answered_again_at}"


class HubTransition(models.Model):
    """One change of a hub's state, kept after the hub is deleted: when, from, to, why and who.

    Written in the same transaction as the change (see :mod:`globalhub.manager.lifecycle`).
    """

    class State(models.TextChoices):
        UNKNOWN = "", "unknown"  # before the hub was first seen
        ACTIVE = "active"
        INACTIVE = "inactive"
        DELETED = "deleted"

    hub_name = models.CharField(max_length=200)
    at = models.DateTimeField()
    from_state = models.CharField(max_length=16, choices=State.choices, blank=True)
    to_state = models.CharField(max_length=16, choices=State.choices)
    reason = models.TextField()
    by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["hub_name", "-at"], name="hub_transition_hub_at")]

    def __str__(self) -> str:
        return f"{self.hub_name}: {self.from_state or 'unknown'} -> {self.to_state} at {self.at:%Y-%m-%d %H:%M:%S}"


class ApiToken(models.Model):
    """A bearer token for scripts calling the API: only its SHA-256 is stored, the token itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_prefix = models.CharField(max_length=12)  # the token's first characters, to tell tokens apart
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…) of {self.user}"


class TaskRun(models.Model):
    """The outcome of one Celery task run by the manager's workers, recorded from Celery's signals."""

    class Status(models.TextChoices):
        STARTED = "started"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        RETRYING = "retrying"

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255)
    periodic_task_name = models.CharField(max_length=200, blank=True, default="")  # the schedule that sent it
    arguments = models.TextField(blank=True, default="")  # args and kwargs, shortened
    status = models.CharField(max_length=16, choices=Status.choices)
    worker = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    runtime_seconds = models.FloatField(null=True, blank=True)
    result = models.TextField(blank=True, default="")  # shortened
    error = models.TextField(blank=True, default="")  # the exception and its traceback, shortened

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["task_name", "-started_at"], name="task_run_name_started"),
            models.Index(fields=["status", "-started_at"], name="task_run_status_started"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} {self.status} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class IngestTotal(models.Model):
    """Counters kept by the status consumer in each batch's transaction, per event type and outcome (``stored``,
    ``superseded``, ``refused``, ``dead_letter``, ...): the bundles and the rows they carried. Served as ``_total``
    metrics; they survive restarts and never count a rolled-back batch."""

    event_type = models.CharField(max_length=255)
    outcome = models.CharField(max_length=32)
    bundles = models.BigIntegerField(default=0)
    rows = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event_type", "outcome"], name="ingest_total_type_outcome")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.outcome}: {self.bundles} bundles, {self.rows} rows"
