# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One roll-out per group at a time: the group's lock."""

from __future__ import annotations

import errno
import fcntl
import os

from ..common.files import private_dirs
from .journal import _iso, _now
from .options import RolloutError


class RolloutLocked(RolloutError):
    """Another roll-out of the same group holds the group's lock."""


class GroupLock:
    """An exclusive flock per group; the kernel releases it when the holder dies, even by SIGKILL."""

    def __init__(self, path: str, group: str):
        self.path = path
        self.group = group
        self._fd: int | None = None

    def acquire(self) -> None:
        private_dirs(os.path.dirname(self.path))
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
