"""A wall clock stepped at will, for the chaos suite's hub clock scenario.

A Python process started with this directory on ``PYTHONPATH`` and ``GH_TEST_CLOCK_SHIFT_FILE`` set has its wall
clock (``time.time``, ``datetime.now`` and the like, through time-machine) shifted by the number of seconds in that
file, re-read every 0.2 s, in every process it forks too. Monotonic clocks are left alone, as an NTP step leaves
them. (libfaketime does the same at the C level, but breaks Python's ``time.sleep`` when monotonic clocks are not
faked.) Native libraries (librdkafka) keep the real clock: the status topics use the broker's time anyway.
"""

from __future__ import annotations

import os
import threading
import time

import time_machine

_PATH = os.environ.get("GH_TEST_CLOCK_SHIFT_FILE")


def _read_shift(path: str) -> float:
    try:
        with open(path) as handle:
            return float(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0


class _Shift:
    """The shift in force and its traveller (module state, so a forked child's watcher carries on from it)."""

    seconds = 0.0
    traveller: time_machine.travel | None = None


def _watch(path: str) -> None:
    while True:
        wanted = _read_shift(path)
        if wanted != _Shift.seconds:
            if _Shift.traveller is not None:
                _Shift.traveller.stop()  # the real clock again
            _Shift.traveller = time_machine.travel(time.time() + wanted, tick=True)
            _Shift.traveller.start()
            _Shift.seconds = wanted
        time.sleep(0.2)


def _start_watching() -> None:
    assert _PATH is not None
    threading.Thread(target=_watch, args=(_PATH,), name="clock-shift", daemon=True).start()


if _PATH:
    _start_watching()
    os.register_at_fork(after_in_child=_start_watching)
