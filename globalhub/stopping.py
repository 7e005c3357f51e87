"""Stopping a long-running process on SIGTERM or SIGINT, without deadlocking it. Django-free: the agents use it too.

A signal handler runs in the main thread, between two bytecodes, wherever that thread is: possibly inside
``threading.Event.wait``, holding the event's lock, which is not reentrant. A handler that calls ``Event.set`` (or
anything else taking that lock) then waits for the lock forever, and the process never stops: the hub simulator
did, once in a few hundred stops. So the handler only starts a thread, and the thread does the work.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def call_on_signals(callback: Callable[[], None], signals: Iterable[int] = STOP_SIGNALS) -> Callable[[], None]:
    """Run ``callback`` in a thread of its own when one of ``signals`` arrives; returns a function that puts the
    previous handlers back. Only the main thread may install handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=callback, name=f"on-signal-{signum}", daemon=True).start()

    previous = {number: signal.signal(number, handler) for number in signals}

    def restore() -> None:
        for number, old in previous.items():
            signal.signal(number, old)

    return restore
