"""Manager ingest, both halves on one hub: ``manager_e2e.py``, then ``manager_ingest_rate.py`` on its records.

    .venv/bin/python bench/manager_ingest.py                     # 10,000 clusters, 1,000 policies x 50 clusters
    .venv/bin/python bench/manager_ingest.py --resyncs 3 --repeat 3 --profile

One scratch database, hub and Redis database (``bench/manager_run.py``): the end-to-end resyncs run first
(``--resyncs``, see ``manager_e2e.py``), and the in-process timings (``--repeat``, ``--profile``, ``--naive-*``, see
``manager_ingest_rate.py``) then use the records of the first measured resync. One report and one JSON line with
the figures of both, under the names this script has always used. Run either half alone for its figures only.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os

from bench.common import Report, stop_on_sigterm
from bench.manager_e2e import add_e2e_arguments, render_e2e, run_e2e
from bench.manager_ingest_rate import add_ingest_arguments, render_ingest, run_ingest_rate
from bench.manager_run import ScratchHub, add_hub_arguments, read_records, render_setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_hub_arguments(p)
    add_e2e_arguments(p)
    add_ingest_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    scratch = ScratchHub(args)
    report = Report("manager_ingest")
    f = report.figures
    try:
        tables = scratch.create(f)
        resyncs = run_e2e(scratch, tables, args, f)
        first, topic = resyncs[0], scratch.names.status_topic
        records, others = read_records(scratch.kafka, topic, first.start_offsets, first.end_offsets)
        run_ingest_rate(scratch, tables, records, others, args, f)
        f["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        render_setup(report, f, "manager ingest")
        render_e2e(report, f)
        render_ingest(report, f, "resync #1")
    finally:
        scratch.close()
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
