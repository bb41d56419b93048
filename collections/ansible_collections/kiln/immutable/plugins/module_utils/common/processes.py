# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Telling whether a process is still the one we saw: its pid and start time, from /proc (Linux)."""

from __future__ import annotations


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards); None without the process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None when it has exited.

    An exited process that its parent has not reaped yet (a zombie) counts as exited.
    """
    fields = _stat(pid)
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def parent(pid: int) -> int | None:
    fields = _stat(pid)
    try:
        return int(fields[1]) if fields else None
    except ValueError:
        return None


def alive(pid: int, started: str | None) -> bool:
    """True while ``pid`` runs and is the process that started at ``started`` (not a reused pid)."""
    return started is not None and start_time(pid) == started
