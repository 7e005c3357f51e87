"""Version admission: which status bundles may change the manager's copy, and how. The one place that decides it.

Per (hub, type) the manager keeps the last version it processed, the hub-clock time the agent's current *run*
began (``run_started_at``) and the send time of the newest bundle it admitted (``last_sent_at``). A bundle is
judged in this order:

1. **Authority.** A full state that answers an open manager request (it carries the request's id, see
   ``globalhub/protocol/requests.py``) is admitted whatever version is stored, and it starts a new run: it re-bases
   the slot. So no stored version can hold a hub's data back past one resync round trip. So is the next complete
   state of a stalled type that no request can ask for (upstream's complete compliance): every complete bundle is
   a whole state.
2. **Stragglers.** Any bundle sent (by the hub's clock) before the current run began comes from an earlier run of
   the agent: refused. Upstream admits it (its hybrid rule compares Generations only) and lets it overwrite newer
   rows.
3. **Agent start.** Generation 0 means the agent restarted: admitted, and a new run (as upstream) when it was sent
   strictly after everything the slot holds (the run's start and the newest bundle admitted). A duplicate of the
   run's first bundle, or a Generation-0 bundle reordered behind later bundles of its own run, starts nothing: it
   is judged as any bundle of the run (rule 4), and never writes over newer rows nor moves the version back.
4. **Within a run**, as upstream: complete and delta types need a version component-wise ``>=`` the last. Hybrid
   bundles are admitted and their rows decide, one by one: a row is written only by a bundle newer than the one
   that last wrote it (:class:`Stamp`: the run, then the version, compared in that order). Upstream overwrites a
   row with an older bundle's content (a replay of 5.7 after 5.8, a straggler of 7.2 after a restart's 0.2).

Append-only event streams (mode ``append``) are always admitted, after rule 1: an event overwrites nothing, and each
is stored once, so an older, replayed or straggling bundle stores only what is new in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from globalhub.manager.models import STAMP_EPOCH
from globalhub.protocol.version import Version


class Mode(StrEnum):
    COMPLETE = "complete"
    DELTA = "delta"
    HYBRID = "hybrid"
    APPEND = "append"  # append-only events: every bundle is admitted, each event is stored once (no overwrite)


@dataclass(frozen=True)
class Slot:
    """What the manager holds for one (hub, type)."""

    version: Version | None = None  # None: nothing processed yet
    run_started_at: datetime | None = None  # None: no start or answer seen yet
    last_sent_at: datetime | None = None  # the hub-clock time of the newest bundle admitted; None: not known


@dataclass(frozen=True)
class Stamp:
    """Which bundle wrote a row: the run it came from, then its version. Later stamps are newer content."""

    run: datetime
    generation: int
    value: int

    def key(self) -> tuple[datetime, int, int]:
        return (self.run, self.generation, self.value)

    def newer_than(self, other: Stamp) -> bool:
        return self.key() > other.key()


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    authoritative: bool = False  # re-bases the slot (a new run) and writes rows whatever they hold
    reason: str = ""  # why it was refused


def judge(
    mode: Mode,
    version: Version,
    sent_at: datetime | None,
    slot: Slot,
    *,
    answers_request: bool,
    heals_stall: bool = False,
) -> Verdict:
    """The verdict on one bundle of version ``version``, sent at ``sent_at`` (hub clock), given the slot.

    ``heals_stall``: a whole state of a stalled type no request can ask for; authoritative as an answer is.
    """
    if answers_request or heals_stall:
        return Verdict(True, authoritative=True)
    if mode is Mode.APPEND:
        return Verdict(True)  # nothing to overwrite: an old, replayed or reordered bundle stores what is new in it
    straggler = _straggler(sent_at, slot)
    if straggler:
        return Verdict(False, reason=straggler)
    if version.init_gen() and starts_a_run(sent_at, slot):
        return Verdict(True, authoritative=True)
    if slot.version is None or mode is Mode.HYBRID or version.newer_than_or_equal(slot.version):
        return Verdict(True)
    return Verdict(False, reason=f"version {version} is older than {slot.version}")


def _straggler(sent_at: datetime | None, slot: Slot) -> str:
    """Why a bundle sent at ``sent_at`` comes from an earlier run of the agent (empty: it does not)."""
    if slot.run_started_at is None or sent_at is None or sent_at >= slot.run_started_at:
        return ""
    return f"sent at {sent_at.isoformat()}, before the agent's run began ({slot.run_started_at.isoformat()})"


def starts_a_run(sent_at: datetime | None, slot: Slot) -> bool:
    """Whether a Generation-0 bundle sent at ``sent_at`` starts a new run: it was sent strictly after the current
    run began and after the newest bundle admitted. (Without a time, as before: it does.)"""
    if sent_at is None:
        return True
    known = [at for at in (slot.run_started_at, slot.last_sent_at) if at is not None]
    return not known or sent_at > max(known)


def next_slot(slot: Slot, version: Version, sent_at: datetime | None, verdict: Verdict, now: datetime) -> Slot:
    """The slot after an admitted bundle: re-based by an authoritative one, else moved to the newer version."""
    if verdict.authoritative:
        return Slot(version.copy(), sent_at or now, sent_at or now)
    last_sent = slot.last_sent_at if sent_at is None else max(sent_at, slot.last_sent_at or sent_at)
    if slot.version is None or not slot.version.newer_than(version):
        return Slot(version.copy(), slot.run_started_at, last_sent)
    # an older bundle of the run (a replay; a hybrid one had its rows judged one by one): the version stays
    return Slot(slot.version, slot.run_started_at, last_sent)


def stamp_of(slot: Slot, version: Version) -> Stamp:
    """The stamp rows written by a bundle get: the slot's run (after the bundle re-based it, if it did)."""
    return Stamp(slot.run_started_at or STAMP_EPOCH, version.generation, version.value)
