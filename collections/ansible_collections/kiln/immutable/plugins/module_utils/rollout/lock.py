# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One roll-out per group at a time: the group's lock.

Two kinds, one interface (``acquire``, ``release``):

- :class:`GroupLock`, an flock on a file that is the same for every state folder of the machine
  (:func:`machine_lock_path`): the lock when the catalog is an SQLite file on this machine;
- :class:`LeaseLock`, a lease in a shared database (owner, heartbeat, expiry) for runners on
  several machines: taken over once its holder stopped renewing it, never while the holder lives.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
import uuid
from typing import Any, Protocol

from .journal import _iso, _now
from .options import RolloutError

DEFAULT_LOCK_DIRS = ("/run/lock/kiln", "/tmp/kiln-locks")


class RolloutLocked(RolloutError):
    """Another roll-out of the same group holds the group's lock."""


def machine_lock_path(group: str) -> str:
    """The group's lock file, one per machine: ``$KILN_LOCK_DIR`` or /run/lock/kiln, else /tmp/kiln-locks."""
    explicit = os.environ.get("KILN_LOCK_DIR")
    for folder in (explicit,) if explicit else DEFAULT_LOCK_DIRS:
        try:
            os.makedirs(folder, exist_ok=True)
            if os.stat(folder).st_uid == os.geteuid():
                os.chmod(folder, 0o1777)  # every user's roll-outs meet here; sticky, like /tmp
            if os.access(folder, os.W_OK):
                return os.path.join(folder, f"{group}.lock")
        except OSError:
            continue
    raise RolloutError(f"no folder for roll-out locks is writable (tried {', '.join(DEFAULT_LOCK_DIRS)})")


class GroupLock:
    """An exclusive flock per group; the kernel releases it when the holder dies, even by SIGKILL."""

    def __init__(self, path: str | None, group: str):
        self.path = path  # None: the machine-wide one, found when first taken
        self.group = group
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path = self.path or machine_lock_path(self.group)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RolloutLocked(
                f"a roll-out of group '{self.group}' is already running ({holder or 'holder unknown'}); "
                f"wait for it to end (lock {self.path})",
                lock=self.path,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {_iso(_now())}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Leases(Protocol):
    """Where leases live (the shared catalog's database); times are the database server's clock."""

    def take(self, group: str, owner: str, token: str, ttl_s: float) -> dict[str, Any]:
        """Take the lease unless a live one is held: returns the holder (``token`` is ours when taken)."""

    def renew(self, group: str, token: str, ttl_s: float) -> bool:
        """Extend our lease; False when it is no longer ours."""

    def release(self, group: str, token: str) -> None: ...


class LeaseLock:
    """A lease with an owner, a heartbeat every ``ttl_s / 3`` and an expiry ``ttl_s`` after the last one."""

    def __init__(self, leases: Leases, group: str, ttl_s: float = 30.0):
        self.leases = leases
        self.group = group
        self.ttl_s = ttl_s
        self.owner = f"{socket.gethostname()} pid {os.getpid()}"
        self.token = ""
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        token = uuid.uuid4().hex
        holder = self.leases.take(self.group, self.owner, token, self.ttl_s)
        if holder["token"] != token:
            raise RolloutLocked(
                f"a roll-out of group '{self.group}' is already running ({holder['owner']}, last heartbeat "
                f"{holder['heartbeat_age_s']:.0f}s ago; its lease expires in {holder['expires_in_s']:.0f}s "
                "unless renewed); wait for it to end",
                owner=holder["owner"],
            )
        self.token = token
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lease-{self.group}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.leases.renew(self.group, self.token, self.ttl_s):
                    return  # no longer ours: the database said another runner holds it
            except Exception:  # a missed beat; the next one retries well before the lease ends
                continue

    def release(self) -> None:
        if not self.token:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=self.ttl_s)
        try:
            self.leases.release(self.group, self.token)
        finally:
            self.token = ""
