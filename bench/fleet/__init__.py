"""A fleet emulator: many hubs played from a few processes, a load generator for the manager (issue 14).

    python -m bench.fleet --hubs 1000 --clusters 100 --policies 10 --compliance 50 --processes 2

Each hub has its own inventory (the simulator's objects, seeded by hub name), versions, resync queue, heartbeat,
delta sync and status topic ``<prefix><hub>``; the spec topic's requests for it (or ``broadcast``) go on its queue,
which is drained one type per second. The wire is the agent's: every message is built by the agent's ``Emitter``
(``agent_tasks/emitter.py``: versions, ``Incr``/``Next``, framing, bundles, CloudEvent encoding), requests are read
by its ``handle_spec_message``, objects come from its simulator's ``populate``, and the producer keeps its
settings. Same hub, inventory and versions: same bytes, except the per-message ``ce_id``/``ce_time`` and the
resync id, which are fresh on every send for a real agent too (``tests/test_fleet_emulator.py``).

How it differs from a real agent (what the manager cannot see is marked *invisible*):

* **No Redis.** Inventory, versions, cursors and the queue live in memory (``memory.py``); a fleet process that
  stops forgets them, and the next run is an agent start (versions ``0.0``) for every hub.
* **No Kubernetes, no simulator process.** Objects are generated and changed in-process (``changes.py``); the
  change kinds are label/annotation edits and compliance flips (no clusters join or leave).
* **No leases, no Celery.** One lock per hub serialises its sends (an agent serialises per type); one asyncio loop
  schedules the drain, deltas and heartbeats; one thread pool waits for Kafka. *Invisible.*
* **One spec consumer per process** (its own group, newest offsets first) instead of one per hub. The per-hub
  filtering is the agent's. A request that arrives before the consumer is assigned is missed, as by an agent.
* **One producer per process**, shared by its hubs (``producer.py``), instead of one per agent. *Invisible* apart
  from batching across hubs, which an agent cannot do.
* **Failures.** A failed resync is queued again at the tail and retried a second later, not after the agent's
  doubling backoff; there is no in-flight recovery (nothing dies alone here). A send that stalls is failed without
  purging its messages from the shared producer (the agent replaces its own producer): they may still arrive,
  before the retry at the same version. A send's stall clock counts only its own confirmations, so with many hubs on
  one producer a slow broker fails sends sooner than it would an agent's.
* **Compliance flips** change only the compliance row; the simulator's churn also rewrites the policy's status (a
  policy delta per flip), so the fleet makes less policy traffic than the simulator for the same change rate.
* **One delta interval** for every type (the agent's hub info is 60 s by default; it never changes here), and no
  periodic 6-hour full resync.
* **Change times.** Each cluster and policy change carries its creation time in the annotation
  ``bench.globalhub.io/changed-at``, and every change is written to the change log (``--change-log``): see
  ``changes.py`` for how a benchmark measures change → row.
"""
