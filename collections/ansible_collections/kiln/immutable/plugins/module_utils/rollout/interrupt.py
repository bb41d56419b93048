# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A request to stop a roll-out at its next safe point.

Ansible runs a module in a session of its own, so Ctrl-C in the terminal never reaches it and a
killed ``ansible-playbook`` leaves it running. The module therefore stops on its own signals
(SIGINT, SIGTERM, SIGHUP) and also when a process that started it is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator

from ..common.processes import alive, parent, start_time

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest:
    """Set once, by a signal handler or a watcher thread; the engine looks at it between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True (at once) when a stop is requested meanwhile."""
        return self._event.wait(timeout)


def _is_ansible(pid: int) -> bool:
    """An ``ansible-playbook`` (or ``ansible``) process or one of its forked workers."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")[:2]
    except OSError:
        return False
    return any(re.fullmatch(rb"ansible(-[a-z]+)?", os.path.basename(arg)) for arg in argv)


def ancestors(pid: int | None = None) -> list[tuple[int, str]]:
    """(pid, start time) of the ancestors up to the nearest Ansible process, else of the parent alone.

    Processes above Ansible (a login shell, a CI runner) may end without the roll-out having to.
    """
    chain: list[tuple[int, str]] = []
    current = parent(pid or os.getpid())
    while current and current > 1:
        started = start_time(current)
        if started is None:
            break
        chain.append((current, started))
        if _is_ansible(current):
            return chain
        current = parent(current)
    return chain[:1]


def gone(watched: list[tuple[int, str]]) -> int | None:
    """The first watched process that has exited (a reused pid has another start time)."""
    for pid, started in watched:
        if not alive(pid, started):
            return pid
    return None


@contextlib.contextmanager
def stop_when_asked(stop: StopRequest, interval: float = 0.5) -> Iterator[StopRequest]:
    """While inside: signals and the exit of an ancestor process set ``stop`` instead of killing us.

    Signal handlers can only be set from the main thread; elsewhere only the watcher runs.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, lambda num, _frame: stop.set(signal.Signals(num).name))
    watched = ancestors()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval):
            pid = gone(watched)
            if pid is not None:
                stop.set(f"process {pid} that started the roll-out exited")
                return

    watcher = threading.Thread(target=watch, name="kiln-stop-watch", daemon=True)
    watcher.start()
    try:
        yield stop
    finally:
        done.set()
        watcher.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
