"""Complete types: every bundle is the whole state (heartbeat, hub info, local compliance, complete compliance).

A complete bundle is parsed when it arrives (a bad shape is a dead letter right away) and *offered* to the batch;
the batch keeps only the newest admitted state per (hub, type) and applies it at the end (conflation: a backlog of
ten compliance bundles costs one write). A state too large for one message comes in frames (see
``docs/protocol.md``); the frames wait (in memory for the batch, then in ``CompleteFrame``) until the set is
whole, and a set with a missing frame is never applied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from globalhub.manager.ingest.bulk import copy_into, copy_text, stage_table
from globalhub.manager.ingest.records import Rejected, StatusEvent
from globalhub.manager.ingest.versions import VersionBook
from globalhub.manager.models import CompleteFrame, Compliance, HubInfo, LocalCompliance
from globalhub.protocol import jsonutil
from globalhub.protocol.bundles import FrameInfo, FrameKind
from globalhub.protocol.events import EXT_DEPENDENCY_VERSION, EventType
from globalhub.protocol.objects import as_uuid, canonical_uuid
from globalhub.protocol.version import Version, VersionError

log = logging.getLogger(__name__)

# Upstream's compliance lists and the status each means (pkg/database/common/util.go).
COMPLIANCE_LISTS = {
    "compliantClusters": Compliance.COMPLIANT,
    "nonCompliantClusters": Compliance.NON_COMPLIANT,
    "unknownComplianceClusters": Compliance.UNKNOWN,
    "pendingComplianceClusters": Compliance.PENDING,
}
# A hub-clock time from before this project existed is a broken clock: kept at this floor, which any reader handles.
OLDEST_HEARTBEAT = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CompleteKind:
    parse: Callable[[Any, StatusEvent], Any]  # payload -> state, or Rejected
    apply: Callable[[StatusEvent, Any, VersionBook], str]  # returns a reason when the state could not be applied
    framed: bool  # whether a state may come in frames (a JSON array split across messages)
    # Many hubs' states at once (one per hub), with the effect of ``apply`` on each; refused data raises, and the
    # batch then applies them one by one. None: the type is applied one state at a time.
    apply_states: Callable[[Sequence[tuple[StatusEvent, Any]], VersionBook], None] | None = None


class Incomplete(Exception):
    """A framed state whose frames did not all arrive; the message is the reason."""


FrameSet = tuple[str, str, str]  # hub, event type, resync id


@dataclass
class FrameBuffer:
    """Frames of complete states received in this transaction, by set and sequence number.

    A set that completes within the batch never touches ``CompleteFrame``; :meth:`flush` stores what is still
    waiting for its other frames when the batch ends (same transaction, so nothing is lost either way).
    """

    sets: dict[FrameSet, dict[int, StatusEvent]] = field(default_factory=dict)

    def add(self, event: StatusEvent, frame: FrameInfo) -> None:
        self.sets.setdefault((event.hub, event.type, frame.resync_id), {}).setdefault(frame.seq, event)

    def copy(self) -> FrameBuffer:
        return FrameBuffer({key: dict(frames) for key, frames in self.sets.items()})

    def take(self, hub: str, event_type: str) -> dict[FrameSet, dict[int, StatusEvent]]:
        """Remove and return every set of (hub, type)."""
        taken = {key: frames for key, frames in self.sets.items() if key[:2] == (hub, event_type)}
        for key in taken:
            del self.sets[key]
        return taken

    def flush(self) -> int:
        waiting = [
            CompleteFrame(hub_id=hub, event_type=event_type, resync_id=resync_id, seq=seq, payload=event.data)
            for (hub, event_type, resync_id), frames in self.sets.items()
            for seq, event in frames.items()
        ]
        self.sets.clear()
        CompleteFrame.objects.bulk_create(waiting, ignore_conflicts=True)  # a frame stored before is kept
        return len(waiting)


def assemble(event: StatusEvent, buffer: FrameBuffer) -> list[Any] | None:
    """The whole payload of a framed state when ``event`` completes it; None while frames are still coming."""
    frame = event.frame
    assert frame is not None
    if not isinstance(event.parsed, list):
        raise Rejected("a frame of a complete type must be a JSON array", hub=event.hub, event_type=event.type)
    if frame.kind is FrameKind.COMPLETE and frame.seq == 0:
        return _counted(event, list(event.parsed))
    buffer.add(event, frame)
    if frame.kind is not FrameKind.COMPLETE:
        return None
    # This set and abandoned ones of (hub, type) go: from earlier batches (stored) and from this one (buffered).
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {CompleteFrame._meta.db_table} WHERE hub_id = %s AND event_type = %s "
            "RETURNING resync_id, seq, payload",
            [event.hub, event.type.value],
        )
        stored = {seq: bytes(payload) for resync_id, seq, payload in cursor.fetchall() if resync_id == frame.resync_id}
    buffered = buffer.take(event.hub, event.type).get((event.hub, event.type, frame.resync_id), {})
    seqs = sorted(stored.keys() | buffered.keys())
    total = frame.total or 0
    if len(seqs) != total or (seqs and seqs[-1] != total - 1):  # distinct, sorted, from 0: whole iff this
        present = set(seqs)  # the first missing ones are among the first len(seqs) + 10 numbers: no huge ranges
        missing = [seq for seq in range(min(total, len(seqs) + 10)) if seq not in present]
        raise Incomplete(
            f"frames {missing[:10]} of {frame.total} missing from {event.type.short} state {frame.resync_id}"
        )
    entries: list[Any] = []
    for seq in seqs:
        try:
            entries.extend(jsonutil.loads(stored[seq]) if seq in stored else buffered[seq].parsed)
        except ValueError as error:  # stored by an older manager that accepted more than this one
            raise Incomplete(
                f"frame {seq} of {event.type.short} state {frame.resync_id} is unusable: {error}"
            ) from None
    return _counted(event, entries)


def _counted(event: StatusEvent, entries: list[Any]) -> list[Any]:
    frame = event.frame
    if frame is not None and frame.object_count is not None and frame.object_count != len(entries):
        raise Incomplete(f"{len(entries)} entries arrived but the state announced {frame.object_count}")
    return entries


# --- heartbeat -----------------------------------------------------------------------------------------------------


def parse_heartbeat(data: Any, event: StatusEvent) -> datetime | None:
    """The hub's own time for the heartbeat (its CloudEvent time), kept within what a datetime reader handles.

    Liveness does not use it: the pipeline notes every well-formed heartbeat it reads, by the manager's clocks
    (``lifecycle.heartbeat_seen``), whatever its version.
    """
    if not isinstance(data, list):
        raise Rejected("a heartbeat must be a JSON array", hub=event.hub, event_type=event.type)
    return sent_time(event)


def sent_time(event: StatusEvent) -> datetime | None:
    """The event's CloudEvent time, from the hub's clock; one before 2000 is a broken clock, kept at that floor."""
    return None if event.time is None else max(event.time, OLDEST_HEARTBEAT)


def apply_heartbeat(event: StatusEvent, sent: datetime | None, versions: VersionBook) -> str:
    """Nothing to store as state: a heartbeat's whole effect is on liveness, noted when it was read."""
    return ""


def apply_heartbeat_states(states: Sequence[tuple[StatusEvent, datetime | None]], versions: VersionBook) -> None:
    """Every hub's heartbeat: nothing to store (see :func:`apply_heartbeat`), so nothing to do for many at once."""


# --- hub info ------------------------------------------------------------------------------------------------------


def parse_hub_info(data: Any, event: StatusEvent) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Rejected("hub info must be a JSON object", hub=event.hub, event_type=event.type)
    for name in ("consoleURL", "grafanaURL", "mchVersion", "clusterId"):
        if name in data and not isinstance(data[name], str):
            raise Rejected(f"hub info {name} must be a string", hub=event.hub, event_type=event.type)
    if data.get("clusterId") and as_uuid(data["clusterId"]) is None:
        raise Rejected("hub info clusterId must be a UUID", hub=event.hub, event_type=event.type)
    try:
        jsonutil.dumps(data)  # it is stored as JSON: it must be writable again
    except ValueError as error:
        raise Rejected(f"hub info cannot be stored: {error}", hub=event.hub, event_type=event.type) from None
    return data


def apply_hub_info(event: StatusEvent, info: dict[str, Any], versions: VersionBook) -> str:
    """One hub's info: :func:`apply_hub_info_states` of it alone."""
    apply_hub_info_states([(event, info)], versions)
    return ""


def apply_hub_info_states(states: Sequence[tuple[StatusEvent, dict[str, Any]]], versions: VersionBook) -> None:
    """Each hub's info (one per hub) upserted, in one statement."""
    now = timezone.now()
    rows = []
    for event, info in states:
        cluster_id = as_uuid(info.get("clusterId"))
        if cluster_id is None:
            log.info("hub=%s hub info without a clusterId ignored, as upstream does", event.hub)
            continue
        rows.append(
            HubInfo(
                hub_id=event.hub,
                cluster_id=cluster_id,
                payload=info,
                console_url=info.get("consoleURL", ""),
                grafana_url=info.get("grafanaURL", ""),
                created_at=now,
                updated_at=now,
                deleted_at=None,
            )
        )
    if rows:
        HubInfo.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["hub", "cluster_id"],
            update_fields=["payload", "console_url", "grafana_url", "updated_at", "deleted_at"],
        )


# --- local compliance ----------------------------------------------------------------------------------------------

ComplianceRow = tuple[str, str, str]  # (canonical policy UUID, cluster name, status)
_LIST_STATUSES = tuple((key, status.value) for key, status in COMPLIANCE_LISTS.items())


def parse_compliance(data: Any, event: StatusEvent) -> list[ComplianceRow]:
    """Upstream's ``[{policyId, compliantClusters, nonCompliantClusters, ...}]`` as (policy, cluster, status)."""
    if not isinstance(data, list):
        raise Rejected("local compliance must be a JSON array", hub=event.hub, event_type=event.type)
    rows: dict[tuple[str, str], str] = {}
    for index, entry in enumerate(data):
        policy_id = _policy_id(entry, index, event)
        for key, status in _LIST_STATUSES:  # a cluster listed twice keeps its last status, as upstream's loop does
            rows.update(dict.fromkeys(((policy_id, cluster) for cluster in _names(entry, key, index, event)), status))
    return [(policy_id, cluster, status) for (policy_id, cluster), status in rows.items()]


def _policy_id(entry: Any, index: int, event: StatusEvent) -> str:
    if not isinstance(entry, dict):
        raise Rejected(f"compliance entry {index} must be an object", hub=event.hub, event_type=event.type)
    policy_id = canonical_uuid(entry.get("policyId")) if isinstance(entry.get("policyId"), str) else None
    if policy_id is None:
        raise Rejected(f"compliance entry {index} needs a UUID policyId", hub=event.hub, event_type=event.type)
    return policy_id


def _names(entry: dict[str, Any], key: str, index: int, event: StatusEvent) -> list[str]:
    names = entry.get(key) or []
    if not isinstance(names, list) or not all(isinstance(n, str) and 0 < len(n) <= 253 for n in names):
        raise Rejected(f"compliance entry {index} {key} must be cluster names", hub=event.hub, event_type=event.type)
    return names


def apply_compliance(event: StatusEvent, rows: list[ComplianceRow], versions: VersionBook) -> str:
    """One hub's compliance state: :func:`apply_compliance_states` of it alone."""
    apply_compliance_states([(event, rows)], versions)
    return ""


def apply_compliance_states(states: Sequence[tuple[StatusEvent, list[ComplianceRow]]], versions: VersionBook) -> None:
    """Replace each hub's compliance with its state: write what changed, add what is new, hard-delete what is no
    longer listed. Many hubs' states (one per hub) cost the statements of one.

    Set operations (joins against the staged states) instead of one ``INSERT … ON CONFLICT``: a state is mostly
    unchanged rows, which a conflict-checked insert would still try one by one (three times slower here). Hubs with
    no rows yet (a first state, or after an inactive hub's cleanup) go straight in with COPY. Only the consumer
    holding a hub's partition writes its rows (its advisory lock), so nothing can slip in between.
    """
    table = LocalCompliance._meta.db_table
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT h FROM unnest(%s::text[]) AS h WHERE EXISTS (SELECT 1 FROM {table} WHERE leaf_hub_name = h)",
            [[event.hub for event, _ in states]],
        )
        known = {hub for (hub,) in cursor.fetchall()}
        first = [(event.hub, rows) for event, rows in states if event.hub not in known]
        again = [(event.hub, rows) for event, rows in states if event.hub in known]
        if first:
            with copy_into(cursor, f"COPY {table} ({_COMPLIANCE_COLUMNS}) FROM STDIN") as copy:
                copy.write(_compliance_lines(first, f"\tnone\t{now.isoformat()}"))
        if again:
            _replace_compliance(cursor, table, again, now)


def _replace_compliance(cursor: Any, table: str, states: list[tuple[str, list[ComplianceRow]]], now: datetime) -> None:
    _stage_compliance(cursor, states)
    cursor.execute("ANALYZE _stage_compliance")  # a temporary table has no statistics: let joins hash
    # Mark what exists first, so the insert below never reads the table it writes.
    cursor.execute(
        f"""
        UPDATE _stage_compliance AS s SET present = true, changed = t.compliance <> s.compliance
        FROM {table} t
        WHERE t.leaf_hub_name = s.hub AND t.policy_id = s.policy_id AND t.cluster_name = s.cluster_name
        """
    )
    cursor.execute(
        f"""
        UPDATE {table} AS t SET compliance = s.compliance, updated_at = %s FROM _stage_compliance s
        WHERE s.changed AND t.leaf_hub_name = s.hub AND t.policy_id = s.policy_id AND t.cluster_name = s.cluster_name
        """,
        [now],
    )
    cursor.execute(
        f"""
        INSERT INTO {table} ({_COMPLIANCE_COLUMNS})
        SELECT s.hub, s.policy_id, s.cluster_name, s.compliance, 'none', %s FROM _stage_compliance s
        WHERE NOT s.present
        """,
        [now],
    )
    cursor.execute(
        f"""
        DELETE FROM {table} AS t WHERE t.leaf_hub_name = ANY(%s) AND NOT EXISTS (
            SELECT 1 FROM _stage_compliance s
            WHERE s.hub = t.leaf_hub_name AND s.policy_id = t.policy_id AND s.cluster_name = t.cluster_name)
        """,
        [[hub for hub, _ in states]],
    )


_COMPLIANCE_COLUMNS = "leaf_hub_name, policy_id, cluster_name, compliance, error, updated_at"


def _compliance_lines(states: Iterable[tuple[str, list[ComplianceRow]]], tail: str = "") -> bytes:
    """COPY text lines ``hub, policy, cluster, status`` (then ``tail``, tab-led) of every hub's rows."""
    lines: list[str] = []
    for hub, rows in states:
        head = copy_text(hub).decode()
        if _needs_copy_escape(cluster for _, cluster, _ in rows):
            lines += [f"{head}\t{policy}\t{copy_text(c).decode()}\t{status}{tail}\n" for policy, c, status in rows]
        else:  # the usual case: one formatted string per row, encoded once
            lines += [f"{head}\t{policy}\t{cluster}\t{status}{tail}\n" for policy, cluster, status in rows]
    return "".join(lines).encode("utf-8")


def _needs_copy_escape(values: Iterable[str]) -> bool:
    text = "".join(values)
    return any(char in text for char in "\\\t\n\r")


def _stage_compliance(cursor: Any, states: Iterable[tuple[str, list[ComplianceRow]]]) -> None:
    stage_table(
        cursor,
        "_stage_compliance",
        "hub text, policy_id uuid, cluster_name text, compliance text, "
        "present boolean DEFAULT false, changed boolean DEFAULT false",
    )
    with copy_into(cursor, "COPY _stage_compliance (hub, policy_id, cluster_name, compliance) FROM STDIN") as copy:
        copy.write(_compliance_lines(states))


# --- local complete compliance (upstream agents only) ---------------------------------------------------------------


def parse_complete_compliance(data: Any, event: StatusEvent) -> list[ComplianceRow]:
    """Upstream's non-compliant subset; the listed rows, each with its status."""
    rows = parse_compliance(data, event)
    if any(status == Compliance.COMPLIANT for _, _, status in rows):
        raise Rejected("complete compliance lists only non-compliant clusters", hub=event.hub, event_type=event.type)
    return rows


def apply_complete_compliance(event: StatusEvent, rows: list[ComplianceRow], versions: VersionBook) -> str:
    """Upstream's rules: listed rows take their status, every other non-compliant row of the hub becomes compliant.

    Only updates, never inserts; it applies on top of the compliance bundle whose Value it names.
    """
    dependency = event.extensions.get(EXT_DEPENDENCY_VERSION)
    try:
        needed = Version.parse(dependency) if dependency else None
    except VersionError as error:
        return f"malformed {EXT_DEPENDENCY_VERSION}: {error}"
    processed = versions.last_of(event.hub, EventType.LOCAL_COMPLIANCE)
    if needed is not None and (processed is None or processed.value != needed.value):
        log.info("hub=%s complete compliance %s skipped: compliance %s not processed", event.hub, event.version, needed)
        return ""
    table = LocalCompliance._meta.db_table
    with connection.cursor() as cursor:
        _stage_compliance(cursor, [(event.hub, rows)])
        cursor.execute(
            f"""
            UPDATE {table} AS t SET compliance = s.compliance, updated_at = now() FROM _stage_compliance s
            WHERE t.leaf_hub_name = %s AND t.policy_id = s.policy_id AND t.cluster_name = s.cluster_name
              AND t.compliance <> s.compliance
            """,
            [event.hub],
        )
        cursor.execute(
            f"""
            UPDATE {table} AS t SET compliance = 'compliant', updated_at = now()
            WHERE t.leaf_hub_name = %s AND t.compliance <> 'compliant' AND NOT EXISTS (
                SELECT 1 FROM _stage_compliance s WHERE s.policy_id = t.policy_id AND s.cluster_name = t.cluster_name)
            """,
            [event.hub],
        )
    return ""
