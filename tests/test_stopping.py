"""SIGTERM/SIGINT stop a long-running loop even when they arrive while the main thread waits on the stop event."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from globalhub.stopping import call_on_signals


@pytest.mark.timeout(30)
def test_a_signal_that_arrives_while_the_main_thread_holds_the_events_lock_still_stops_it() -> None:
    stop = threading.Event()
    restore = call_on_signals(stop.set, signals=(signal.SIGUSR1,))
    try:
        # Where the simulator once hung: inside Event.wait, the main thread holds the event's own lock, which is not
        # reentrant. A handler calling stop.set() right there would wait for that lock forever.
        with stop._cond:  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.1)  # the handler runs in this thread, at the next bytecode
        assert stop.wait(10), "the signal did not set the event"
    finally:
        restore()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_handlers_are_installed_from_the_main_thread_only() -> None:
    results: list[object] = []

    def install() -> None:
        restore = call_on_signals(lambda: None, signals=(signal.SIGUSR2,))
        results.append(signal.getsignal(signal.SIGUSR2))
        restore()

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert results == [signal.SIG_DFL]
