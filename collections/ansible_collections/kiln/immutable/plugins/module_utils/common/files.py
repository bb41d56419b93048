# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files written so that a reader, or a re-run after SIGKILL, sees the old content or the new, never half;
progress files that a terminal follows line by line."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any


def private_dirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)`` where every folder it creates is its owner's only (mode 0700).

    The state folder holds logs, journals and the catalog: nobody else's to read.
    """
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent writer made it first
            os.mkdir(folder, 0o700)


def dump_json(doc: Any) -> str:
    """``doc`` as the JSON kiln's state files hold: compact, keys sorted."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, default=str)


def write_json_atomic(path: str, doc: Any) -> None:
    """``write_text_atomic`` of ``doc`` as JSON."""
    write_text_atomic(path, dump_json(doc))


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` so a reader (or a re-run after SIGKILL) sees the old file or the new one, never half."""
    folder = os.path.dirname(path)
    private_dirs(folder)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def line_appender(path: str) -> Callable[[str], None]:
    """A callback that appends each text it gets to ``path`` as one line, for a terminal to follow."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)

    def append(text: str) -> None:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text.rstrip("\n") + "\n")

    return append


def private_file(path: str) -> None:
    """Make ``path`` readable by its owner only (mode 0600), creating it empty when missing.

    A file someone else owns, or on a read-only file system, is left as it is: the caller's own
    access then decides what happens.
    """
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    with contextlib.suppress(OSError):
        if os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o600)
