# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A group's load balancer: one HAProxy container, driven over HAProxy's runtime API.

Two containers per group:

- ``kiln-<group>-lb-net`` holds the address: it is on the group's docker network, publishes the port
  clients use and runs nothing but ``sleep``, so it never needs replacing;
- ``kiln-<group>-lb`` runs HAProxy from the ``lb`` image baked by kiln (packer/lb) inside the holder's
  network namespace, with a read-only root filesystem, as the calling user. Its only writable place is
  a folder of the state dir bind-mounted at ``/run/kiln``: the generated ``haproxy.cfg`` and its admin
  socket live there.

Instances come and go with ``add server`` (in maintenance), ``enable server``, ``set server ... state
drain`` and ``del server``, so nothing is ever reloaded. The runtime API keeps no state over a restart,
so ``haproxy.cfg`` is rewritten with the servers in service after every change: a restarted or
recreated container serves them again as soon as it starts.

A newer ``lb`` version replaces HAProxy without a failed request (:meth:`HAProxyLoadBalancer.upgrade`):
the new container starts in the same namespace and binds the same port beside the old one (HAProxy
listens with SO_REUSEPORT; the holder sets ``net.ipv4.tcp_migrate_req`` so connections waiting in the
old listener's queue move to the new one), and once it serves, the old one stops listening and finishes
its requests (SIGUSR1, HAProxy's soft stop).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable

from ...common import docker_api
from ...common.docker_api import network_name
from ...common.errors import KilnError
from ...common.paths import state_dir
from ...rollout.analysis import ServerStats
from ...rollout.interfaces import SERVER_DRAIN, SERVER_MAINT, SERVER_READY, Instance

BACKEND = "app"
CONTAINER_PORT = 8080
SOCKET_DIR = "/run/kiln"  # inside the container
SOCKET_NAME = "admin.sock"  # of a load balancer made before each HAProxy had a socket of its own
SOCKET_ENV = "KILN_LB_SOCKET"  # the socket's name, given to each HAProxy container
CONFIG_NAME = "haproxy.cfg"
LABEL_SOCKET = "kiln.lb.socket"
_NEXT = "-next"  # the name of a new HAProxy until the old one is gone
# Both containers of a group's load balancer: the calling user, a read-only root, no capabilities.
_CONFINED = {
    "user": f"{os.getuid()}:{os.getgid()}",
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "restart_policy": {"Name": "unless-stopped"},
}
SOFT_STOP_TIMEOUT = 30  # seconds an old HAProxy has to finish its requests (= timeout client/server)

# srv_admin_state bits (HAProxy's include/haproxy/server-t.h): any maintenance bit wins over drain.
_ADMF_MAINT = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
_ADMF_DRAIN = 0x08 | 0x10
_OP_RUNNING = 2


class LoadBalancerError(KilnError):
    pass


# A server line of config_text(); the address is a container name that Docker's DNS resolves.
_SERVER_LINE = re.compile(r"^    server (\S+) (\S+) ", re.MULTILINE)


def server_options(check_interval: float) -> str:
    """Options of every server, added over the runtime API or listed in the configuration."""
    return f"check inter {max(100, int(check_interval * 1000))} rise 1 fall 2"


def config_servers(text: str) -> dict[str, str]:
    """Server name -> address of the servers listed in a configuration written by config_text()."""
    return dict(_SERVER_LINE.findall(text))


def config_text(
    health_path: str = "/healthz", servers: dict[str, str] | None = None, check_interval: float = 1.0
) -> str:
    """The HAProxy configuration; ``servers`` (name -> address) are the ones in service when written.

    An address that no longer resolves leaves its server without one (``init-addr last,libc,none``)
    instead of failing the start; its health check keeps it out of service.
    """
    lines = "".join(
        f"    server {name} {address} {server_options(check_interval)} init-addr last,libc,none\n"
        for name, address in sorted((servers or {}).items())
    )
    return f"""# Written by kiln: servers change over the runtime API; this list follows them for a restart.
global
    stats socket "{SOCKET_DIR}/${{{SOCKET_ENV}}}" mode 600 level admin
    stats timeout 10s
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 5s
    timeout http-request 10s
    # A request whose server vanished is sent to another one instead of failing.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    # No idle server connections: a drained server reaches zero connections and can be deleted.
    option http-server-close

frontend web
    bind :{CONTAINER_PORT}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET {health_path}
    http-check expect status 200
{lines}"""


class RuntimeAPI:
    """HAProxy's runtime API on a unix socket: one command per connection."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.timeout = timeout

    def command(self, line: str) -> str:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        dir_fd = None
        try:
            target = self.path
            if len(target.encode()) > 100:
                # sun_path holds 108 bytes; reach a socket in a deep folder through its folder's fd.
                dir_fd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
                target = f"/proc/self/fd/{dir_fd}/{os.path.basename(target)}"
            sock.connect(target)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except OSError as exc:
            raise LoadBalancerError(
                f"HAProxy runtime API at {self.path} did not answer '{line}': {exc}", socket=self.path
            ) from exc
        finally:
            sock.close()
            if dir_fd is not None:
                os.close(dir_fd)
        return b"".join(chunks).decode(errors="replace")


def parse_servers_state(text: str, backend: str = BACKEND) -> dict[str, tuple[int, int]]:
    """``show servers state`` -> server name -> (srv_op_state, srv_admin_state)."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or " " not in line:
            continue
        fields = line.split()
        if len(fields) < 7 or fields[1] != backend:
            continue
        out[fields[3]] = (int(fields[5]), int(fields[6]))
    return out


def admin_state(bits: int) -> str:
    if bits & _ADMF_MAINT:
        return SERVER_MAINT
    if bits & _ADMF_DRAIN:
        return SERVER_DRAIN
    return SERVER_READY


def parse_stat(csv_text: str, backend: str) -> dict[str, dict[str, str]]:
    """``show stat`` CSV -> server name -> its row (column name -> text) for the servers of ``backend``."""
    header: list[str] = []
    rows: dict[str, dict[str, str]] = {}
    for line in csv_text.splitlines():
        if line.startswith("# "):
            header = line[2:].split(",")
            continue
        fields = line.split(",")
        if header and len(fields) >= 4 and fields[0] == backend and fields[1] not in ("FRONTEND", "BACKEND"):
            rows[fields[1]] = dict(zip(header, fields, strict=False))
    return rows


def _int(row: dict[str, str], *names: str) -> int:
    return sum(int(row.get(name) or 0) for name in names)


def parse_sessions(csv_text: str, backend: str, server: str) -> int | None:
    """Current plus queued sessions of one server from ``show stat`` CSV; None when it is not listed."""
    row = parse_stat(csv_text, backend).get(server)
    return None if row is None else _int(row, "scur", "qcur")


_RESPONSES = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


def server_stats(row: dict[str, str]) -> ServerStats:
    """A server's numbers: responses by status class plus connection errors; ttime is HAProxy's average
    total time over the server's last 1024 requests. A response the server cut short (``srv_abrt``) was
    counted by its status, yet failed for the client: it is an error too."""
    return ServerStats(
        requests=_int(row, *_RESPONSES, "econ"),
        errors=_int(row, "hrsp_5xx", "econ", "srv_abrt"),
        time_ms=float(row.get("ttime") or 0),
    )


class HAProxyLoadBalancer:
    """The LoadBalancer of rollout.interfaces for one group: a HAProxy container on the group's network.

    ``port``: the host port on 127.0.0.1 that clients use (0 or None: one Docker picks).
    ``image``: a docker image reference, or a catalog image name that ``resolve_image`` (given by whoever
    knows the catalog) turns into ``(docker image, catalog ref)``.
    """

    def __init__(
        self,
        group: str,
        port: int | None = None,
        image: str = "lb",
        bind: str = "127.0.0.1",
        health_path: str = "/healthz",
        check_interval: float = 1.0,
        enable_timeout: float = 10.0,
        network: str | None = None,
        resolve_image: Callable[[str], tuple[str, str | None]] | None = None,
    ):
        if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
            raise LoadBalancerError(f"load_balancer_options.port must be a port number, got {port!r}")
        if not str(health_path).startswith("/"):
            raise LoadBalancerError(
                f"load_balancer_options.health_path must start with '/', got {health_path!r}"
            )
        self.group = group
        self.port = port or None
        self.image = image
        self.bind = bind
        self.health_path = health_path
        self.check_interval = check_interval
        self.enable_timeout = enable_timeout
        self.resolve_image = resolve_image
        self.network = network or network_name(group)
        self.container_name = lb_container_name(group)
        self.holder_name = f"{self.container_name}-net"
        self._api: RuntimeAPI | None = None
        self._config_lock = threading.Lock()

    # ------------------------------------------------------------------ the containers

    def folder(self) -> str:
        return os.path.join(state_dir(), "lb", self.group)

    def _container(self, name: str | None = None):
        import docker.errors

        try:
            return docker_api.client().containers.get(name or self.container_name)
        except docker.errors.NotFound:
            return None

    def image_ref(self) -> tuple[str, str | None]:
        """(docker image, catalog ref or None) for ``self.image``; a missing image is refused."""
        if self.resolve_image is not None and not (":" in self.image or "/" in self.image):
            return self.resolve_image(self.image)
        if docker_api.image_id(self.image) is None:
            raise LoadBalancerError(f"load balancer image {self.image} is not in the local Docker engine")
        return self.image, None

    def serving(self) -> bool:
        """True when HAProxy runs inside the address holder's current network namespace.

        A holder started again (``docker restart``, the Docker daemon's restart) has a new namespace; a
        HAProxy left in the old one answers on its socket but serves nobody.
        """
        haproxy, holder = self._container(), self._container(self.holder_name)
        return (
            haproxy is not None
            and holder is not None
            and haproxy.status == "running"
            and holder.status == "running"
            and (haproxy.attrs.get("HostConfig") or {}).get("NetworkMode") == f"container:{holder.id}"
            and _started_at(haproxy) >= _started_at(holder)
        )

    def outdated(self) -> bool:
        """True when HAProxy's image is not the one ``image`` names now (a newer version); a missing image
        is refused."""
        wanted = docker_api.image_id(self.image_ref()[0])
        haproxy = self._container()
        return haproxy is not None and haproxy.attrs.get("Image") != wanted

    def prepare(self, group: str | None = None) -> bool:
        """Create the network, the address holder and HAProxy unless they serve; True if changed."""
        changed = docker_api.ensure_network(self.network, {"kiln.group": self.group})
        self._settle_upgrade()
        if self.serving():
            self._wait_api()
            return changed
        # Stopped, dead, outside the holder's namespace, or made before there was a holder: a new one
        # starts with the servers last in service. It goes first, so a port it published is free.
        docker_api.remove_container(self.container_name, stop_timeout=2)
        holder = self._container(self.holder_name)
        if holder is not None and holder.status != "running":
            docker_api.remove_container(holder.id, stop_timeout=0)
            holder = None
        image, ref = self.image_ref()
        folder = self.folder()
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self._write_config(folder, self._configured(folder))
        self._run_haproxy(self.container_name, image, ref, holder or self._run_holder(image))
        return True

    def upgrade(self) -> bool:
        """Hand the group's traffic to a HAProxy of the image ``image`` names now, without a failed request.

        The new HAProxy starts beside the serving one with the same configuration and listens on the same
        port; once it has every configured server up, the old one stops listening, finishes its requests
        (soft stop) and is removed. False when HAProxy already runs that image.
        """
        self._settle_upgrade()
        if not self.serving():
            return self.prepare()
        if not self.outdated():
            return False
        image, ref = self.image_ref()
        old, holder = self._container(), self._container(self.holder_name)
        new, api = self._run_haproxy(self.container_name + _NEXT, image, ref, holder)
        try:
            self._wait_servers_up(api, set(self._configured(self.folder())))
        except LoadBalancerError:
            docker_api.remove_container(new.id, stop_timeout=0)
            raise
        old.update(restart_policy={"Name": "no"})  # its soft stop is an exit the policy must not undo
        old.kill(signal="SIGUSR1")
        deadline = time.monotonic() + SOFT_STOP_TIMEOUT
        while old.status == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            old.reload()
        docker_api.remove_container(old.id, stop_timeout=0)
        self._forget_socket(old)
        new.rename(self.container_name)
        self._api = None
        return True

    def _settle_upgrade(self) -> None:
        """Finish an interrupted upgrade: the new HAProxy takes the group's name once the old one is gone,
        and is removed while the old one still serves."""
        new = self._container(self.container_name + _NEXT)
        if new is None:
            return
        old = self._container()
        if old is not None and old.status == "running":
            docker_api.remove_container(new.id, stop_timeout=0)
            self._forget_socket(new)
            return
        if old is not None:
            docker_api.remove_container(old.id, stop_timeout=0)
            self._forget_socket(old)
        new.rename(self.container_name)
        self._api = None

    def _run_holder(self, image: str):
        """The container that owns the group's address: network, published port, nothing else running."""
        try:
            return docker_api.client().containers.run(
                image,
                name=self.holder_name,
                entrypoint=["sleep", "infinity"],
                stop_signal="SIGKILL",  # sleep has nothing to finish
                detach=True,
                labels={"kiln.lb": self.group, "kiln.lb.role": "address"},
                network=self.network,
                ports={f"{CONTAINER_PORT}/tcp": (self.bind, self.port)},
                sysctls={"net.ipv4.tcp_migrate_req": "1"},
                **_CONFINED,
            )
        except Exception as exc:
            docker_api.remove_container(self.holder_name, stop_timeout=0)
            raise LoadBalancerError(
                f"cannot publish the load balancer of group {self.group} on "
                f"{self.bind}:{self.port or 'random'} ({self.holder_name} from {image}): {exc}"
            ) from exc

    def _run_haproxy(self, name: str, image: str, ref: str | None, holder) -> tuple[object, RuntimeAPI]:
        """A HAProxy container in ``holder``'s network namespace with a socket of its own; waits for it."""
        socket_name = f"admin-{secrets.token_hex(4)}.sock"
        labels = {"kiln.lb": self.group, "kiln.image": self.image, LABEL_SOCKET: socket_name}
        if ref:
            labels["kiln.version"] = ref
        try:
            container = docker_api.client().containers.run(
                image,
                name=name,
                detach=True,
                labels=labels,
                environment={SOCKET_ENV: socket_name},
                tmpfs={"/tmp": "rw,size=8m"},
                volumes={self.folder(): {"bind": SOCKET_DIR, "mode": "rw"}},
                network_mode=f"container:{holder.id}",
                stop_signal="SIGUSR1",  # docker stop is HAProxy's soft stop: its requests end first
                **_CONFINED,
            )
        except Exception as exc:
            docker_api.remove_container(name)
            raise LoadBalancerError(
                f"cannot start the load balancer {name} of group {self.group} from {image}: {exc}"
            ) from exc
        api = RuntimeAPI(os.path.join(self.folder(), socket_name))
        self._wait_api(api, name)
        return container, api

    def _forget_socket(self, container) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.folder(), container.labels.get(LABEL_SOCKET, SOCKET_NAME)))

    @staticmethod
    def _configured(folder: str) -> dict[str, str]:
        try:
            with open(os.path.join(folder, CONFIG_NAME)) as handle:
                return config_servers(handle.read())
        except FileNotFoundError:
            return {}

    def _write_config(self, folder: str, servers: dict[str, str]) -> None:
        cfg = os.path.join(folder, CONFIG_NAME)
        with open(cfg + ".tmp", "w") as handle:
            handle.write(config_text(self.health_path, servers, self.check_interval))
        os.replace(cfg + ".tmp", cfg)

    def _remember(self, instance: Instance, in_service: bool) -> None:
        """Keep ``instance`` in (or out of) the configuration's list of servers in service."""
        folder = os.path.dirname(self.api().path)  # the running container's folder
        with self._config_lock:
            servers = self._configured(folder)
            if in_service:
                # By name: Docker's DNS on the group network finds the instance again if its address
                # changed (instances restarted with the Docker daemon).
                servers[instance.name] = f"{instance.name}:{instance.backend_address.rsplit(':', 1)[-1]}"
            elif servers.pop(instance.name, None) is None:
                return
            self._write_config(folder, servers)

    def destroy(self) -> list[str]:
        """Remove HAProxy, the address holder and their folder; the containers there were."""
        names = (self.container_name + _NEXT, self.container_name, self.holder_name)
        removed = [name for name in names if docker_api.remove_container(name, stop_timeout=0)]
        folder = self.folder()
        for path in [os.path.join(folder, CONFIG_NAME), *glob.glob(os.path.join(folder, "admin*.sock"))]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(folder)
        self._api = None
        return removed

    def address(self) -> str | None:
        """Where clients reach the group: ``127.0.0.1:<port>``; None without a running address holder."""
        holder = self._container(self.holder_name)
        if holder is None:
            return None
        bindings = (holder.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        for binding in bindings.get(f"{CONTAINER_PORT}/tcp") or []:
            return f"{binding.get('HostIp') or self.bind}:{binding['HostPort']}"
        return None

    def _socket_path(self) -> str | None:
        """The HAProxy container's admin socket, found from its mount (not from this process's state dir)."""
        container = self._container()
        if container is None:
            return None
        for mount in container.attrs.get("Mounts") or []:
            if mount.get("Destination") == SOCKET_DIR:
                return os.path.join(mount["Source"], container.labels.get(LABEL_SOCKET, SOCKET_NAME))
        return None

    def api(self) -> RuntimeAPI:
        if self._api is None:
            path = self._socket_path()
            if path is None:
                raise LoadBalancerError(
                    f"group {self.group} has no load balancer (container {self.container_name}); "
                    "create it with `invoke up` or a roll-out"
                )
            self._api = RuntimeAPI(path)
        return self._api

    def _wait_api(self, api: RuntimeAPI | None = None, name: str | None = None, timeout: float = 15) -> None:
        """Until HAProxy answers on ``api`` (default: the group's HAProxy container's socket)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                (api or self.api()).command("show info")
                return
            except LoadBalancerError as exc:
                self._api = None
                if time.monotonic() > deadline:
                    logs = ""
                    container = self._container(name)
                    if container is not None:
                        logs = container.logs(tail=20).decode(errors="replace")
                    raise LoadBalancerError(
                        f"the load balancer of group {self.group} did not come up within {timeout:g}s: {exc}",
                        logs=logs,
                    ) from None
            time.sleep(0.1)

    def _wait_servers_up(self, api: RuntimeAPI, names: set[str]) -> None:
        """Until every one of ``names`` is up in the HAProxy behind ``api``, or ``enable_timeout``."""
        deadline = time.monotonic() + self.enable_timeout
        while True:
            states = parse_servers_state(api.command(f"show servers state {BACKEND}"))
            down = sorted(name for name in names if states.get(name, (0, 0))[0] != _OP_RUNNING)
            if not down:
                return
            if time.monotonic() > deadline:
                raise LoadBalancerError(
                    f"the new load balancer of group {self.group} has servers not up "
                    f"{self.enable_timeout:g}s after it started: {', '.join(down)}; the old one still serves"
                )
            time.sleep(0.05)

    def _cmd(self, line: str, ok: tuple[str, ...] = ()) -> str:
        """Run a command; HAProxy answers errors in plain text, so anything unexpected raises."""
        answer = self.api().command(line).strip()
        if answer and not any(marker in answer for marker in ok):
            raise LoadBalancerError(f"HAProxy refused '{line}' for group {self.group}: {answer}")
        return answer

    # ------------------------------------------------------------------ the LoadBalancer protocol

    def _server(self, instance: Instance) -> str:
        return f"{BACKEND}/{instance.name}"

    def add(self, instance: Instance) -> None:
        if not instance.backend_address:
            raise LoadBalancerError(f"instance {instance.name} has no backend address to add")
        answer = self._cmd(
            f"add server {self._server(instance)} {instance.backend_address} "
            f"{server_options(self.check_interval)}",
            ok=("New server registered", "Already exists a server with the same name"),
        )
        if "New server registered" in answer:
            self._cmd(f"enable health {self._server(instance)}")

    def enable(self, instance: Instance) -> None:
        """Put the server in service and wait until HAProxy sends it traffic.

        kiln enables a server only once its own probe found it healthy, so its health is set up at once
        rather than after HAProxy's next check, up to a check interval later; HAProxy's checks go on.
        """
        self._cmd(f"enable server {self._server(instance)}")
        self._cmd(f"set server {self._server(instance)} health up")
        deadline = time.monotonic() + self.enable_timeout
        while True:
            state = self._states().get(instance.name)
            if state is None:
                raise LoadBalancerError(
                    f"server {instance.name} vanished from the load balancer of {self.group}"
                )
            if state[0] == _OP_RUNNING and admin_state(state[1]) == SERVER_READY:
                self._remember(instance, in_service=True)
                return
            if time.monotonic() > deadline:
                raise LoadBalancerError(
                    f"server {instance.name} is not up in the load balancer of {self.group} "
                    f"{self.enable_timeout:g}s after enable (op state {state[0]}, admin state {state[1]})"
                )
            time.sleep(0.05)

    def drain(self, instance: Instance) -> None:
        self._remember(instance, in_service=False)
        self._cmd(f"set server {self._server(instance)} state drain")

    def sessions(self, instance: Instance) -> int | None:
        return parse_sessions(self.api().command("show stat -1 4 -1"), BACKEND, instance.name)

    def stats(self) -> dict[str, ServerStats]:
        """Server name -> its cumulative numbers (``show stat``), for analysis; empty without a balancer."""
        if self._socket_path() is None:
            return {}
        rows = parse_stat(self.api().command("show stat -1 4 -1"), BACKEND)
        return {name: server_stats(row) for name, row in rows.items()}

    def set_weight(self, instance: Instance, weight: int) -> None:
        """The server's share of new requests against the others' (0: none, it stays in service)."""
        if not (isinstance(weight, int) and 0 <= weight <= 256):
            raise LoadBalancerError(f"weight of {instance.name} must be from 0 to 256, got {weight!r}")
        self._cmd(f"set server {self._server(instance)} weight {weight}")

    def wait_drained(self, instance: Instance, timeout: float) -> None:
        """Until the server has no sessions or ``timeout`` passes (then remove() cuts what is left)."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.sessions(instance)
            if not count or time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def remove(self, instance: Instance) -> None:
        """Maintenance, cut sessions, delete; an unknown server is not an error."""
        server = self._server(instance)
        gone = ("No such server", "No such backend")
        if self._container() is None:
            return
        self._remember(instance, in_service=False)
        answer = self._cmd(f"set server {server} state maint", ok=gone)
        if any(marker in answer for marker in gone):
            return
        self._cmd(f"shutdown sessions server {server}", ok=gone)
        deadline = time.monotonic() + 10.0
        while True:
            answer = self.api().command(f"del server {server}").strip()
            if "Server deleted" in answer or any(marker in answer for marker in gone):
                return
            if time.monotonic() > deadline:
                raise LoadBalancerError(
                    f"HAProxy refused 'del server {server}' for group {self.group}: {answer}"
                )
            time.sleep(0.05)

    def _states(self) -> dict[str, tuple[int, int]]:
        return parse_servers_state(self.api().command(f"show servers state {BACKEND}"))

    def servers(self) -> dict[str, str]:
        """Server name -> SERVER_READY / SERVER_DRAIN / SERVER_MAINT; empty without a load balancer.

        A HAProxy that does not serve (stopped, or left outside the address holder's network) is an
        error, whatever its socket says: none of its servers gets a request.
        """
        if self._socket_path() is None:
            return {}
        if not self.serving():
            raise LoadBalancerError(
                f"the load balancer of group {self.group} does not serve: {self.container_name} is not "
                f"running in the network of {self.holder_name}; `invoke up` or a roll-out starts it again"
            )
        return {name: admin_state(state[1]) for name, state in self._states().items()}


def lb_container_name(group: str) -> str:
    return f"kiln-{group}-lb"


def _started_at(container) -> float:
    return docker_api.started_at((container.attrs.get("State") or {}).get("StartedAt"))
