"""The manager end-to-end benchmark (``bench/manager_e2e.py``) reads a resync's timeline from samples of the
database and the agent's Redis: these tests build the samples by hand, so they need no service."""

from __future__ import annotations

from bench.manager_e2e import AgentCounters, Sample, agent_types, consumer_commits, timeline

T0 = 1_000.0


def sample(
    at: float,
    offsets: int = 0,
    position_at: float | None = None,
    transactions: tuple[float, ...] = (),
    totals: dict[str, int] | None = None,
    drain_started: float | None = None,
    queued: dict[str, float] | None = None,
    in_flight: dict[str, float] | None = None,
) -> Sample:
    return Sample(
        at=T0 + at,
        offsets=offsets,
        position_at=None if position_at is None else T0 + position_at,
        transactions=tuple(T0 + t for t in transactions),
        totals=totals or {},
        drain_started=None if drain_started is None else T0 + drain_started,
        queued={k: T0 + v for k, v in (queued or {}).items()},
        in_flight={k: T0 + v for k, v in (in_flight or {}).items()},
    )


def counters(sent: dict[str, float], messages: dict[str, int], size: dict[str, float]) -> AgentCounters:
    return AgentCounters({k: T0 + v for k, v in sent.items()}, messages, size, {"send": 0, "sync": 0, "resync": 0})


def test_each_commit_of_the_consumer_is_a_batch_timed_from_its_open_transaction() -> None:
    samples = [
        sample(-0.1, offsets=10, position_at=-5.0, totals={"managedcluster stored": 3}),
        sample(0.5, offsets=10, position_at=-5.0, transactions=(0.4,), totals={"managedcluster stored": 3}),
        sample(0.7, offsets=17, position_at=0.65, transactions=(0.66,), totals={"managedcluster stored": 10}),
        sample(0.9, offsets=18, position_at=0.8, totals={"managedcluster stored": 10, "managedhub.info stored": 1}),
    ]

    commits = consumer_commits(samples, T0)

    assert commits == [
        {"at": 0.65, "records": 7, "ms": 250, "applied": 7, "by_type": {"managedcluster": 7}},
        {"at": 0.8, "records": 1, "ms": 140, "applied": 1, "by_type": {"managedhub.info": 1}},
    ]


def test_a_batch_shorter_than_the_sampling_interval_has_no_duration() -> None:
    samples = [sample(0.0, offsets=5, position_at=-1.0), sample(0.1, offsets=6, position_at=0.05)]

    assert consumer_commits(samples, T0)[0]["ms"] is None


def test_a_type_starts_at_its_in_flight_entry_or_the_last_drain_start_before_its_send() -> None:
    samples = [
        sample(0.01, queued={"managedcluster": 0.004, "policy.localspec": 0.004}, drain_started=0.005),
        sample(0.03, queued={"policy.localspec": 0.004}, in_flight={"managedcluster": 0.02}, drain_started=0.02),
        sample(1.05, drain_started=1.02),
    ]
    before = counters({}, {"managedcluster": 2}, {"managedcluster": 10.0})
    after = counters(
        {"managedcluster": 0.9, "policy.localspec": 1.1},
        {"managedcluster": 5, "policy.localspec": 1},
        {"managedcluster": 40.0, "policy.localspec": 7.0},
    )

    queued_at, types = agent_types(samples, T0, before, after)

    assert queued_at == 0.004
    assert types["managedcluster"] == {
        "sent_at": 0.9,
        "messages": 3,
        "bytes": 30,
        "drain_started_at": 0.02,
        "send_ms": 880,
        "queue_wait": 0.016,
    }
    assert types["policy.localspec"]["drain_started_at"] == 1.02
    assert types["policy.localspec"]["queue_wait"] == 1.016


def test_the_consumer_figures_count_only_batches_up_to_consistent() -> None:
    samples = [
        sample(0.0, offsets=0, position_at=-1.0),
        sample(0.5, offsets=2, position_at=0.4, transactions=(0.3,)),
        sample(2.0, offsets=3, position_at=1.9, transactions=(1.8,)),
    ]
    nothing = counters({}, {}, {})
    metrics: tuple[dict[str, float], dict[str, float]] = ({"globalhub_ingest_batch_duration_seconds_count": 4.0}, {})

    parts = timeline(T0, 1.0, samples, (nothing, nothing), {}, metrics)

    assert [b["at"] for b in parts["batches"]] == [0.4]
    assert parts["consumer_batches"] == 1  # the metrics were not read at the end: the commits seen
    assert parts["consumer_records"] == 2
    assert parts["consumer_largest_batch_ms"] == 100
    assert parts["kafka_errors"] == {"consumer": 0, "agent_send": 0, "agent_sync": 0, "agent_resync": 0}
