"""A private Docker daemon, in a network namespace of its own, for tests that stop and start the daemon.

Restarting the machine's dockerd would stop every other Docker test running at the same time, so such a
test gets a dockerd of its own: its own data root, exec root (and so its own containerd and runc state),
pid file and socket, all in one temporary folder. Sharing the host's network with the machine's daemon
does not work: a dockerd started with ``--bridge=none``, or restarted with ``--default-address-pool``,
deletes the host's docker0 (the machine's daemon's default bridge), and with its defaults it would share
iptables chains and address ranges with the machine's daemon. In a network namespace of its own it runs
with Docker's defaults (docker0, iptables, published ports) and cannot touch the host's network.

A test reaches it with :meth:`PrivateDockerd.serving`: kiln's Docker client is pointed at its socket
(DOCKER_HOST), and the calling thread enters its network namespace, so the containers' addresses and
the ports published on 127.0.0.1 are the private daemon's; threads and processes started in the block
(the playbooks a test runs) inherit both.

Images come from the machine's daemon with ``docker save | docker load``, which keeps image ids (what
the catalog records). Everything the daemon made goes at the end: containers, networks and volumes,
its processes, mounts, the namespace (its interfaces and rules with it) and the folder, with bounded
waits, also when the test failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time

from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from rollout_fixtures import _environ

_CLONE_NEWNET = 0x40000000
_SUN_PATH = 107  # bytes of a unix socket path (sun_path is 108 with its NUL)


class DockerdError(RuntimeError):
    pass


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd`` (os.setns is Python 3.12+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns into a network namespace: {os.strerror(errno)}")


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)


class PrivateDockerd:
    """One dockerd in a temporary folder and network namespace: ``start``, ``restart``, ``load`` images,
    ``serving`` (kiln pointed at it), ``close``."""

    def __init__(self, start_timeout: float = 60.0, stop_timeout: float = 60.0):
        self.folder = tempfile.mkdtemp(prefix="kiln-dockerd-")
        self.socket = os.path.join(self.folder, "d.sock")
        if len(self.socket.encode()) > _SUN_PATH:
            shutil.rmtree(self.folder)
            raise DockerdError(f"socket path {self.socket} is too long for a unix socket: set a short TMPDIR")
        self.host = f"unix://{self.socket}"
        self.netns = os.path.join(self.folder, "netns")
        self.exec_root = os.path.join(self.folder, "exec")
        self.log = os.path.join(self.folder, "dockerd.log")
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.proc: subprocess.Popen | None = None
        self.timings: dict[str, float] = {}  # seconds: start, load
        config = os.path.join(self.folder, "daemon.json")
        with open(config, "w") as handle:
            handle.write("{}\n")  # not the machine's /etc/docker/daemon.json
        self.args = [
            "nsenter",  # execs dockerd in the namespace: the process is dockerd itself
            f"--net={self.netns}",
            "dockerd",
            f"--config-file={config}",
            f"--data-root={os.path.join(self.folder, 'data')}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={os.path.join(self.folder, 'dockerd.pid')}",
            f"--host={self.host}",
        ]

    # ------------------------------------------------------------------ the daemon

    def _make_netns(self) -> None:
        """A network namespace kept by a bind mount on a file of the folder, with its loopback up."""
        open(self.netns, "w").close()
        for cmd in (
            ["unshare", f"--net={self.netns}", "true"],
            ["nsenter", f"--net={self.netns}", "ip", "link", "set", "lo", "up"],
        ):
            done = _run(*cmd)
            if done.returncode:
                raise DockerdError(
                    f"cannot make the private network namespace: {' '.join(cmd)}: {done.stderr}"
                )

    def client(self, timeout: int = 10):
        import docker

        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def _answers(self) -> bool:
        try:
            with contextlib.closing(self.client(timeout=2)) as engine:
                return bool(engine.ping())
        except Exception:
            return False

    def start(self) -> float:
        """Start the daemon; the seconds until it answers."""
        started = time.monotonic()
        if not os.path.ismount(self.netns):
            self._make_netns()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() - started > self.start_timeout:
                raise DockerdError(f"the private dockerd did not start ({self.args}):\n{self._log_tail()}")
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self) -> float:
        """SIGTERM, as an operator's restart does: the daemon stops its containers, then exits. The seconds
        it took; a daemon that does not stop within ``stop_timeout`` is an error."""
        started = time.monotonic()
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            raise DockerdError(
                f"the private dockerd did not stop within {self.stop_timeout:g}s:\n{self._log_tail()}"
            ) from None
        return time.monotonic() - started

    def restart(self) -> float:
        """Stop and start again; the seconds from the SIGTERM until it answers."""
        return self.stop() + self.start()

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError), open(self.log, errors="replace") as handle:
            return "".join([line for line in handle if "module=grpc" not in line][-lines:])
        return ""

    # ------------------------------------------------------------------ images

    def load(self, images: list[str], timeout: float = 300) -> float:
        """Copy ``images`` (ids or tags) from the Docker engine kiln uses now (call it outside
        :meth:`serving`); the seconds it took. Their ids stay."""
        started = time.monotonic()
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            load = subprocess.run(
                ["docker", "-H", self.host, "load", "-q"],
                stdin=save.stdout,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            save.stdout.close()
            save_err = save.communicate(timeout=30)[1].decode(errors="replace")
        finally:
            if save.poll() is None:
                save.kill()
                save.wait()
        if save.returncode or load.returncode:
            raise DockerdError(f"docker save {images} | docker load failed: {save_err}{load.stderr}")
        with contextlib.closing(self.client()) as engine:
            wanted = {docker_api.client().images.get(ref).id for ref in images}
            have = {image.id for image in engine.images.list(all=True)}
        if wanted - have:
            raise DockerdError(f"images {sorted(wanted - have)} are missing after docker load: {load.stdout}")
        return time.monotonic() - started

    # ------------------------------------------------------------------ kiln pointed at it

    @contextlib.contextmanager
    def serving(self):
        """kiln in this thread, and the threads and processes it starts, use this daemon and its network."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(self.netns, os.O_RDONLY)
        try:
            _setns(target)
            docker_api.client.cache_clear()
            with _environ(DOCKER_HOST=self.host):
                yield self
        finally:
            os.close(target)
            try:
                _setns(home)
            finally:
                os.close(home)
                docker_api.client.cache_clear()

    # ------------------------------------------------------------------ the end

    def close(self) -> None:
        """Remove everything the daemon made, whatever state it is in; never raises."""
        for step in (self._remove_objects, self._stop_or_kill, self._unmount):
            try:
                step()
            except Exception as exc:  # keep cleaning
                print(f"private dockerd cleanup: {step.__name__} failed: {exc}")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _remove_objects(self) -> None:
        if self.proc is None or self.proc.poll() is not None or not self._answers():
            return
        with contextlib.closing(self.client(timeout=60)) as engine:
            for container in engine.containers.list(all=True):
                container.remove(force=True, v=True)
            for network in engine.networks.list():
                if network.name not in ("bridge", "host", "none"):
                    network.remove()
            for volume in engine.volumes.list():
                volume.remove(force=True)

    def _stop_or_kill(self) -> None:
        try:
            self.stop()
            return
        except DockerdError as exc:
            print(f"private dockerd cleanup: {exc}")
        # Hung: kill its containers through runc's state, then every process that names its folder
        # (dockerd, containerd, the shims) and dockerd's children (docker-proxy).
        runc = ["runc", "--root", os.path.join(self.exec_root, "runtime-runc", "moby")]
        for container in _run(*runc, "list", "-q").stdout.split():
            _run(*runc, "delete", "--force", container)  # kills it, then removes its cgroups and state
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)

    def _processes(self) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmdline = handle.read().decode(errors="replace")
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if self.folder in cmdline or parent == self.proc.pid:
                found.append(int(entry))
        return found

    def _unmount(self) -> None:
        """The namespace's bind mount, and mounts left by a daemon that was killed (overlays)."""
        with open("/proc/self/mounts") as handle:
            points = [line.split()[1] for line in handle]
        for point in sorted((p for p in points if p.startswith(self.folder + "/")), reverse=True):
            done = _run("umount", point)
            if done.returncode:
                _run("umount", "-l", point)


@contextlib.contextmanager
def private_dockerd(images: list[str]):
    """A started private daemon holding ``images``; removed with everything it made when the block ends."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("a private Docker daemon needs root (CI runs as root)")
    daemon = PrivateDockerd()
    try:
        daemon.timings["start"] = daemon.start()
        daemon.timings["load"] = daemon.load(images)
        yield daemon
    finally:
        daemon.close()
