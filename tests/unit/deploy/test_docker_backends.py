"""The docker provider and HAProxy load balancer without Docker: parsers of HAProxy's recorded answers,
the runtime API client, option checks and name conventions."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.common.docker_api import (
    started_at as _started_at,
)
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from ansible_collections.kiln.immutable.plugins.module_utils.loadbalancers.haproxy.loadbalancer import (
    HAProxyLoadBalancer,
    LoadBalancerError,
    RuntimeAPI,
    admin_state,
    config_servers,
    config_text,
    parse_servers_state,
    parse_sessions,
)
from ansible_collections.kiln.immutable.plugins.module_utils.providers.docker.provider import (
    DockerProvider,
    ProviderError,
    image_of,
    volume_name,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.interfaces import Instance

DATA = Path(__file__).parent / "data" / "haproxy"


def test_servers_state_recorded_from_haproxy_2_6_maps_admin_bits():
    # Recorded with one server ready, one drained (0x08) and one in forced maintenance (0x01).
    states = parse_servers_state((DATA / "show_servers_state.txt").read_text())
    assert states == {
        "kiln-kdexp3-web-0-139c57": (2, 0),
        "kiln-kdexp3-web-2-e8c878": (0, 1),
        "kiln-kdexp3-web-1-b59060": (2, 8),
    }
    assert {name: admin_state(bits) for name, (_, bits) in states.items()} == {
        "kiln-kdexp3-web-0-139c57": "ready",
        "kiln-kdexp3-web-2-e8c878": "maint",
        "kiln-kdexp3-web-1-b59060": "drain",
    }
    assert parse_servers_state((DATA / "show_servers_state.txt").read_text(), backend="other") == {}


@pytest.mark.parametrize(
    ("bits", "state"),
    [
        (0, "ready"),
        (0x01, "maint"),
        (0x04, "maint"),
        (0x20, "maint"),
        (0x08, "drain"),
        (0x10, "drain"),
        (0x09, "maint"),
    ],
)
def test_any_maintenance_bit_wins_over_drain(bits, state):
    assert admin_state(bits) == state


def test_sessions_come_from_the_recorded_show_stat_csv():
    csv_text = (DATA / "show_stat.csv").read_text()
    assert parse_sessions(csv_text, "app", "kiln-kdexp3-web-0-139c57") == 0
    assert parse_sessions(csv_text, "app", "absent") is None
    busy = csv_text.replace("app,kiln-kdexp3-web-0-139c57,0,0,0,", "app,kiln-kdexp3-web-0-139c57,2,0,3,", 1)
    assert parse_sessions(busy, "app", "kiln-kdexp3-web-0-139c57") == 5  # queued + current


def test_the_configuration_has_an_admin_socket_and_lists_the_servers_in_service():
    text = config_text("/ready")
    # Each HAProxy container names its own socket (two run side by side while one replaces the other).
    assert 'stats socket "/run/kiln/${KILN_LB_SOCKET}" mode 600 level admin' in text
    assert "option httpchk GET /ready" in text
    assert "\n    server " not in text and config_servers(text) == {}
    assert "option redispatch" in text and "option http-server-close" in text
    servers = {"kiln-web-1-0002": "kiln-web-1-0002:8080", "kiln-web-0-0001": "kiln-web-0-0001:8080"}
    text = config_text("/ready", servers, check_interval=0.5)
    assert config_servers(text) == servers
    # Same checks as a server added at run time; a name Docker no longer resolves does not stop HAProxy.
    assert (
        "    server kiln-web-0-0001 kiln-web-0-0001:8080 check inter 500 rise 1 fall 2 "
        "init-addr last,libc,none\n" in text
    )


class _FakeHAProxy:
    """A unix socket that answers one line per connection, like HAProxy's non-interactive mode."""

    def __init__(self, path: str, answers: dict[str, str]):
        self.seen: list[str] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cwd = os.getcwd()
        os.chdir(os.path.dirname(path))  # bind a deep path by its short name
        try:
            self.server.bind(os.path.basename(path))
        finally:
            os.chdir(cwd)
        self.server.listen(4)
        self.answers = answers
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                line = conn.recv(4096).decode().strip()
                self.seen.append(line)
                conn.sendall(self.answers.get(line, "Unknown command.\n").encode())

    def close(self) -> None:
        self.server.close()


def test_runtime_api_reaches_a_socket_deeper_than_sun_path_allows(tmp_path):
    deep = tmp_path.joinpath(*["a-long-folder-name"] * 6)
    deep.mkdir(parents=True)
    path = str(deep / "admin.sock")
    assert len(path) > 108
    fake = _FakeHAProxy(path, {"show info": "Name: HAProxy\n"})
    try:
        assert RuntimeAPI(path).command("show info") == "Name: HAProxy\n"
        assert fake.seen == ["show info"]
    finally:
        fake.close()


def test_runtime_api_failure_names_the_socket_and_command(tmp_path):
    path = str(tmp_path / "missing.sock")
    with pytest.raises(LoadBalancerError, match=r"missing.sock did not answer 'show info'"):
        RuntimeAPI(path, timeout=0.5).command("show info")


def test_load_balancer_commands_and_refusals(tmp_path, monkeypatch):
    path = str(tmp_path / "admin.sock")
    fake = _FakeHAProxy(
        path,
        {
            "add server app/i1 10.0.0.2:8080 check inter 1000 rise 1 fall 2": "New server registered.\n",
            "enable health app/i1": "\n",
            "enable server app/i1": "\n",
            "set server app/i1 health up": "\n",
            "show servers state app": "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state\n"
            "3 app 1 i1 10.0.0.2 2 0 1 1 0 6 3 4 6 0 0 0 - 8080 - 0 0 - - 0\n",
            "set server app/i1 state drain": "\n",
            "set server app/gone state maint": "No such server.\n",
            "enable server app/i2": "No such server.\n",
        },
    )
    lb = HAProxyLoadBalancer("web-test")
    monkeypatch.setattr(lb, "api", lambda: RuntimeAPI(path))
    monkeypatch.setattr(lb, "_container", lambda: object())

    def inst(name: str) -> Instance:
        return Instance(
            id=name,
            name=name,
            group="web-test",
            slot=0,
            version="web/1",
            probe_address="127.0.0.1:1",
            backend_address="10.0.0.2:8080",
        )

    configured = lambda: config_servers((tmp_path / "haproxy.cfg").read_text())  # noqa: E731
    try:
        lb.add(inst("i1"))
        assert not (tmp_path / "haproxy.cfg").exists()  # in maintenance: not for a restart to serve
        lb.enable(inst("i1"))
        assert configured() == {"i1": "i1:8080"}  # in service, by name: a restarted HAProxy serves it
        lb.drain(inst("i1"))
        assert configured() == {}
        lb.remove(inst("gone"))  # already gone: not an error
        with pytest.raises(
            LoadBalancerError, match=r"HAProxy refused 'enable server app/i2' for group web-test"
        ):
            lb._cmd("enable server app/i2")
        assert fake.seen[:6] == [
            "add server app/i1 10.0.0.2:8080 check inter 1000 rise 1 fall 2",
            "enable health app/i1",
            "enable server app/i1",
            "set server app/i1 health up",
            "show servers state app",
            "set server app/i1 state drain",
        ]
    finally:
        fake.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, r"load_balancer_options.port must be a port number"),
        ({"port": "8081"}, r"load_balancer_options.port must be a port number"),
        ({"health_path": "healthz"}, r"load_balancer_options.health_path must start with '/'"),
    ],
)
def test_load_balancer_options_are_checked(kwargs, message):
    with pytest.raises(LoadBalancerError, match=message):
        HAProxyLoadBalancer("web-test", **kwargs)


def test_unknown_backend_options_name_the_parameter():
    with pytest.raises(KilnError, match=r"provider_options: unknown option\(s\) colour; known: .*port"):
        docker_environment.provider({"colour": "blue"})
    with pytest.raises(KilnError, match=r"load_balancer_options: unknown option\(s\) group"):
        docker_environment.load_balancer("web-test", {"group": "other"})
    with pytest.raises(ProviderError, match=r"provider_options.data_path must be an absolute path"):
        DockerProvider(data_path="data")


class _Version:
    image, name, ref = "web", "7", "web/7"

    def __init__(self, artifacts):
        self.artifacts = artifacts


def test_a_version_without_a_docker_artifact_is_refused_by_name():
    with pytest.raises(ProviderError, match=r"version web/7 has no docker artifact"):
        image_of(_Version({"ami": {"eu-west-1": "ami-1"}}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00.123456789Z", 1714557600.123456),
        ("2024-05-01T10:00:00Z", 1714557600.0),
        ("0001-01-01T00:00:00Z", 0.0),
        (None, 0.0),
    ],
)
def test_docker_start_times_become_epoch_seconds(text, expected):
    assert _started_at(text) == pytest.approx(expected)


def test_names_follow_the_shared_convention():
    assert volume_name("web-prod", 3) == "kiln-web-prod-3-data"
    assert HAProxyLoadBalancer("web-prod").container_name == "kiln-web-prod-lb"
    assert HAProxyLoadBalancer("web-prod").network == "kiln-web-prod"


def _fake_container(id_: str, status: str, started: str, network_mode: str = "default"):
    attrs = {"State": {"StartedAt": started}, "HostConfig": {"NetworkMode": network_mode}}
    return SimpleNamespace(id=id_, status=status, attrs=attrs)


def test_start_times_sort_in_time_order_although_docker_trims_their_fraction():
    early = _started_at("2026-12-01T10:00:00.123456789Z")
    late = _started_at("2026-12-01T10:00:00.5Z")  # as Docker writes .500000000
    assert early < late
    assert _started_at("2026-12-01T10:00:01Z") > late


@pytest.mark.parametrize(
    ("haproxy", "holder", "serving"),
    [
        (("running", "10:00:02", "container:h1"), ("h1", "running", "10:00:01"), True),
        # The holder started again after HAProxy: HAProxy is left in the holder's old network namespace.
        (("running", "10:00:01", "container:h1"), ("h1", "running", "10:00:02"), False),
        # The holder was recreated: a new container, HAProxy joined the old one.
        (("running", "10:00:02", "container:h1"), ("h2", "running", "10:00:01"), False),
        # A load balancer made before there was a holder publishes its own port.
        (("running", "10:00:02", "kiln-web-test"), ("h1", "running", "10:00:01"), False),
        (("exited", "10:00:02", "container:h1"), ("h1", "running", "10:00:01"), False),
        (("running", "10:00:02", "container:h1"), None, False),
    ],
)
def test_a_load_balancer_serves_only_inside_its_address_holders_current_network(
    haproxy, holder, serving, monkeypatch
):
    lb = HAProxyLoadBalancer("web-test")
    status, started, mode = haproxy
    containers = {lb.container_name: _fake_container("p1", status, f"2026-12-01T{started}Z", mode)}
    if holder is not None:
        containers[lb.holder_name] = _fake_container(holder[0], holder[1], f"2026-12-01T{holder[2]}Z")
    monkeypatch.setattr(lb, "_container", lambda name=None: containers.get(name or lb.container_name))
    monkeypatch.setattr(lb, "_socket_path", lambda: "/nowhere/admin.sock")
    assert lb.serving() is serving
    if not serving:  # drift reads the servers: an error says why nobody is served
        with pytest.raises(LoadBalancerError, match=r"does not serve: kiln-web-test-lb is not running"):
            lb.servers()


class _Containers:
    """The SDK's ``containers`` of an engine that holds ``found`` (id -> container) or raises ``error``."""

    def __init__(self, found: dict, error: Exception | None = None):
        self.found, self.error = found, error

    def get(self, key: str):
        import docker.errors

        if self.error is not None:
            raise self.error
        if key not in self.found:
            raise docker.errors.NotFound(f"No such container: {key}")
        return self.found[key]


LAUNCHED = "2026-12-01T10:00:00.25Z"


def _launched(started: str = LAUNCHED) -> Instance:
    return Instance(
        id="c1",
        name="kiln-web-test-0-abc123",
        group="web-test",
        slot=0,
        version="web/2",
        probe_address="172.18.0.8:8080",
        backend_address="172.18.0.8:8080",
        started_at=_started_at(started),
    )


def _engine(monkeypatch, found: dict, error: Exception | None = None) -> None:
    from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api

    monkeypatch.setattr(docker_api, "client", lambda: SimpleNamespace(containers=_Containers(found, error)))


@pytest.mark.parametrize(
    ("found", "error", "verdict"),
    [
        ({"c1": _fake_container("c1", "running", LAUNCHED)}, None, None),
        # Started again (its restart policy after a crash, a restart of the daemon): another address.
        (
            {"c1": _fake_container("c1", "running", "2026-12-01T10:00:31.5Z")},
            None,
            (False, True, "started again"),
        ),
        # Stopped, or restarting: it may come back (the daemon restarting); no verdict yet.
        ({"c1": _fake_container("c1", "exited", LAUNCHED)}, None, (False, False, "is exited")),
        ({}, None, (False, True, "is gone")),
        # The daemon restarting: no verdict yet, the probe goes on.
        ({}, ConnectionError("Connection refused"), (False, False, "does not answer")),
    ],
)
def test_the_docker_provider_fails_a_new_instance_that_is_not_the_container_it_launched(
    monkeypatch, found, error, verdict
):
    _engine(monkeypatch, found, error)
    result = DockerProvider().health(_launched())
    if verdict is None:
        assert result is None
    else:
        assert (result.ok, result.answered) == verdict[:2] and verdict[2] in result.detail


def test_a_probe_answered_at_the_address_of_a_restarted_instance_does_not_make_it_healthy(monkeypatch):
    from ansible_collections.kiln.immutable.plugins.module_utils.deploy.rolling_replace import backend_probe
    from ansible_collections.kiln.immutable.plugins.module_utils.rollout.health import (
        HealthCheck,
        Prober,
        ProbeResult,
    )

    # After a restart of the daemon, another container took the launched one's old address and answers.
    _engine(monkeypatch, {"c1": _fake_container("c1", "running", "2026-12-01T10:00:31.5Z")})
    monkeypatch.setattr(
        "ansible_collections.kiln.immutable.plugins.module_utils.deploy.rolling_replace.probe_once",
        lambda check, instance: ProbeResult(True, True, "GET /healthz -> 200"),
    )
    check = HealthCheck(interval=0.001, healthy_threshold=2, unhealthy_threshold=3, deadline=5)
    outcome = Prober(check, probe=backend_probe(DockerProvider())).wait_healthy(_launched())
    assert not outcome.healthy and outcome.attempts == 3 and "started again" in outcome.detail


class _Network:
    def __init__(self, errors: list[str], containers: dict | None = None):
        self.errors = errors
        self.attrs = {"Containers": containers or {}}

    def remove(self) -> None:
        import docker.errors

        if self.errors:
            raise docker.errors.APIError(self.errors.pop(0))


def _engine_with(network: _Network, monkeypatch) -> None:
    nothing = SimpleNamespace(list=lambda **filters: [])
    engine = SimpleNamespace(
        networks=SimpleNamespace(get=lambda name: network), containers=nothing, volumes=nothing
    )
    monkeypatch.setattr(docker_api, "client", lambda: engine)


def test_remove_network_removes_it_or_fails_naming_it(monkeypatch):
    _engine_with(_Network(["permission denied"]), monkeypatch)
    with pytest.raises(KilnError, match="cannot remove docker network kiln-web: .*permission denied"):
        docker_api.remove_network("kiln-web")
    network = _Network([])
    _engine_with(network, monkeypatch)
    assert docker_api.remove_network("kiln-web") is True


def test_down_leaves_an_empty_network_the_engine_will_not_let_go_of_with_a_warning(monkeypatch):
    stale = "error while removing network: network kiln-web has active endpoints"
    _engine_with(_Network([stale]), monkeypatch)
    removed = DockerProvider().destroy("web")
    assert removed["networks"] == []
    assert (
        "kiln-web of group web stays" in removed["warnings"][0]
        and "moby/moby#43286" in removed["warnings"][0]
    )

    # A container still attached is no engine bug: down fails and names the network.
    _engine_with(_Network([stale], containers={"abc": {"Name": "kiln-web-0-abc123"}}), monkeypatch)
    with pytest.raises(ProviderError, match="cannot remove the network of group web: .*kiln-web"):
        DockerProvider().destroy("web")
