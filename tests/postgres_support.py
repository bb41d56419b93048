"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary folder, 127.0.0.1 on a free port.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to ``nobody``
(an unprivileged system user every Debian machine has). Local socket connections are trusted;
TCP connections need the password of the ``kiln`` role, so tests can exercise ``PGPASSFILE``.
Every test gets a schema of its own (``dsn(schema)``), which is as good as a fresh catalog.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

PASSWORD = "kiln-test-secret"
_counter = itertools.count(1)


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]), None
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (scripts/setup installs postgresql)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="kiln-pg-")
        self.data = os.path.join(self.folder, "data")
        self.port = _free_port()
        self.user = None if os.geteuid() else "nobody"
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        os.chmod(self.folder, 0o755)

    def _as_owner(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(cmd),
            user=self.user,
            cwd=self.folder,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def start(self) -> Cluster:
        pwfile = os.path.join(self.folder, "pw")
        with open(pwfile, "w") as handle:
            handle.write(PASSWORD + "\n")
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self._as_owner(
            _binary("initdb"),
            "-D",
            self.data,
            "-U",
            "kiln",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        os.unlink(pwfile)
        self.pg_ctl("start")
        return self

    def pg_ctl(self, action: str) -> None:
        """``start`` or ``stop`` (a restart would hand the server pg_ctl's output pipe: stop, then start)."""
        args = [_binary("pg_ctl"), "-D", self.data, "-w", "-t", "60"]
        if action == "start":
            options = f"-k {self.folder} -h 127.0.0.1 -p {self.port} -c fsync=off -c max_connections=100"
            args += ["-l", os.path.join(self.folder, "log"), "-o", options, "start"]
        else:
            args += ["-m", "fast", action]
        self._as_owner(*args)

    def stop(self) -> None:
        try:
            self.pg_ctl("stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def dsn(self, schema: str | None = None, password: bool = True) -> str:
        """A URL for the ``kiln`` database role over TCP; ``schema`` is created when missing."""
        url = f"postgresql://kiln{':' + PASSWORD if password else ''}@127.0.0.1:{self.port}/postgres"
        if schema:
            self.sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            url += f"?options=-csearch_path%3D{schema}"
        return url

    def fresh_dsn(self) -> str:
        """A URL whose catalog is empty: a new schema."""
        return self.dsn(f"t{os.getpid()}_{next(_counter)}_{int(time.time() * 1000) % 100000}")

    def sql(self, statement: str, params: tuple = (), schema: str | None = None) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if schema:
                conn.execute(f'SET search_path TO "{schema}"')
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []
