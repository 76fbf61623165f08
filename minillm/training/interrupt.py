"""Stopping a run cleanly on SIGINT or SIGTERM (Ctrl-C, or what a cluster scheduler sends).

    with stop_requests() as stop:
        while training:
            step()
            if stop:                      # a signal came: finish here, save, then raise
                save(); raise TrainingInterrupted(stop.name, step, folder)

The first signal only sets the flag, so the step in flight finishes and its checkpoint can be
written; a second Ctrl-C interrupts at once (Python's usual KeyboardInterrupt), and a second
SIGTERM ends the process as SIGTERM always does. Outside the main thread (where Python cannot
install handlers) nothing is installed and the flag stays down.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StopRequest", "TrainingInterrupted", "stop_requests"]


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped on a signal after finishing a step; `folder` is the checkpoint written
    for that step (None without an out_dir). A KeyboardInterrupt, so code that catches
    Exception lets it through, as it does Ctrl-C."""

    def __init__(self, signal_name: str, step: int, folder):
        self.signal_name, self.step, self.folder = signal_name, step, folder
        saved = (f"checkpoint saved to {folder}" if folder is not None
                 else "nothing saved (no out_dir)")
        super().__init__(f"stopped by {signal_name} after step {step}; {saved}")


class StopRequest:
    """Truthy once a stop signal arrived; `name` is the signal's (e.g. "SIGTERM")."""

    def __init__(self) -> None:
        self.name: str | None = None

    def __bool__(self) -> bool:
        return self.name is not None


@contextmanager
def stop_requests(signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[StopRequest]:
    """Within the block, the first of `signals` sets the yielded flag instead of stopping the
    process; the previous handlers come back afterwards."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum, frame):
        if stop:  # the second one: what that signal did before
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        stop.name = signal.Signals(signum).name

    for s in signals:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
