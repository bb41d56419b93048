"""Drift logic against a real catalog (SQLite in a temp folder) and a fake provider and inspector."""

from __future__ import annotations

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.observe.drift import (
    DriftReport,
    GroupTarget,
    PathChange,
    detect,
    filter_changes,
    render,
)
from drift_fakes import IMAGE_IDS, FakeInspector, FakeProvider, inst, seeded_catalog


@pytest.fixture
def catalog(tmp_path):
    cat = seeded_catalog(str(tmp_path / "catalog.db"))
    yield cat
    cat.close()


PROD = GroupTarget("web-prod", "web", "prod")


def test_a_clean_group_reports_no_drift(catalog):
    provider = FakeProvider([inst(0, "web/2"), inst(1, "web/2")])
    report = detect([PROD], catalog, provider, FakeInspector())
    assert not report.drifted
    assert report.findings == []
    group = report.groups[0]
    assert group.expected == "web/2"
    assert [i.drift for i in group.instances] == [[], []]
    assert "no drift in 2 instance(s)" in render(report)


def test_an_instance_on_another_version_is_reported(catalog):
    provider = FakeProvider([inst(0, "web/2"), inst(1, "web/1")])
    report = detect([PROD], catalog, provider, FakeInspector())
    assert report.drifted
    [finding] = report.findings
    assert (finding.kind, finding.instance, finding.slot) == ("version", "kiln-web-prod-1", 1)
    assert (finding.expected, finding.actual) == ("web/2", "web/1")
    assert "channel prod wants web/2" in finding.detail


def test_an_instance_on_a_revoked_version_is_reported_with_the_reason(catalog):
    provider = FakeProvider([inst(0, "web/2"), inst(1, "web/1")])
    catalog.revoke("web/1", reason="CVE-2026-0001")
    report = detect([PROD], catalog, provider, FakeInspector())
    kinds = {(f.instance, f.kind) for f in report.findings}
    assert kinds == {("kiln-web-prod-1", "version"), ("kiln-web-prod-1", "revoked")}
    revoked = next(f for f in report.findings if f.kind == "revoked")
    assert "CVE-2026-0001" in revoked.detail
    assert report.groups[0].instances[1].drift == ["version", "revoked"]


def test_revoking_the_channels_version_makes_it_fall_back_and_the_instances_drift(catalog):
    provider = FakeProvider([inst(0, "web/2")])
    catalog.revoke("web/2", reason="bad build")
    report = detect([PROD], catalog, provider, FakeInspector())
    assert {f.kind for f in report.findings} == {"version", "revoked"}
    # the channel fell back to its previous assignment: none
    assert report.groups[0].expected is None
    assert "channel prod is empty" in report.findings[0].detail


def test_a_version_missing_from_the_catalog_counts_as_revoked(catalog):
    provider = FakeProvider([inst(0, "web/99")])
    report = detect([PROD], catalog, provider, FakeInspector())
    assert {f.kind for f in report.findings} == {"version", "revoked"}
    assert "not in the catalog" in next(f.detail for f in report.findings if f.kind == "revoked")


def test_a_container_on_another_image_with_kilns_labels_is_reported(catalog):
    provider = FakeProvider([inst(0, "web/2")])
    inspector = FakeInspector(images={"kiln-web-prod-0": "sha256:" + "f" * 64})
    [finding] = detect([PROD], catalog, provider, inspector).findings
    assert finding.kind == "image"
    assert finding.expected == IMAGE_IDS["web/2"]
    assert finding.actual == "sha256:" + "f" * 64


def test_filesystem_changes_are_reported_with_their_paths(catalog):
    provider = FakeProvider([inst(0, "web/2"), inst(1, "web/2")])
    changes = {"kiln-web-prod-1": [PathChange("/etc/x", "added"), PathChange("/etc/issue", "deleted")]}
    report = detect([PROD], catalog, provider, FakeInspector(changes=changes))
    [finding] = report.findings
    assert finding.kind == "filesystem"
    assert [p.path for p in finding.paths] == ["/etc/x", "/etc/issue"]
    text = render(report)
    assert "A /etc/x" in text and "D /etc/issue" in text
    assert report.to_dict()["groups"][0]["findings"][0]["paths"][0] == {"path": "/etc/x", "kind": "added"}


def test_filesystem_check_can_be_left_out(catalog):
    provider = FakeProvider([inst(0, "web/2")])
    changes = {"kiln-web-prod-0": [PathChange("/etc/x", "added")]}
    report = detect([PROD], catalog, provider, FakeInspector(changes=changes), filesystem=False)
    assert not report.drifted


def test_groups_are_checked_each_against_their_own_channel(catalog):
    provider = FakeProvider([inst(0, "web/2"), inst(0, "web/2", group="web-staging")])
    staging = GroupTarget("web-staging", "web", "staging")
    report = detect([PROD, staging], catalog, provider, FakeInspector())
    assert [(g.group, g.drifted) for g in report.groups] == [("web-prod", False), ("web-staging", True)]
    assert report.findings[0].expected == "web/3"


def test_an_unknown_channel_is_refused_naming_group_and_channel(catalog):
    provider = FakeProvider([inst(0, "web/2")])
    with pytest.raises(
        KilnError, match=r"group 'web-prod' follows channel 'qa'.*known channels: prod, staging"
    ):
        detect([GroupTarget("web-prod", "web", "qa")], catalog, provider, FakeInspector())


def test_without_an_inspector_only_catalog_drift_is_checked(catalog):
    provider = FakeProvider([inst(0, "web/1")])
    report = detect([PROD], catalog, provider, None)
    assert [f.kind for f in report.findings] == ["version"]
    assert report.groups[0].instances[0].health == "unknown"


def test_an_empty_report_is_not_drift():
    assert not DriftReport(groups=[]).drifted


def test_group_target_from_dict_names_what_is_missing():
    assert GroupTarget.from_dict({"group": "g", "image": "web", "channel": "prod"}) == GroupTarget(
        "g", "web", "prod"
    )
    with pytest.raises(KilnError, match="groups\\[0\\]: missing channel"):
        GroupTarget.from_dict({"group": "g", "image": "web"}, where="groups[0]")


# docker diff output recorded from a container of kiln/base:bookworm with a volume at /srv/data and a
# tmpfs at /tmp, after `touch /etc/x /srv/data/f /tmp/t; mkdir -p /opt/a/b; echo hi > /opt/a/b/c;
# rm /etc/issue`
RECORDED_DIFF = [
    {"Path": "/etc", "Kind": 0},
    {"Path": "/etc/x", "Kind": 1},
    {"Path": "/etc/issue", "Kind": 2},
    {"Path": "/opt", "Kind": 0},
    {"Path": "/opt/a", "Kind": 1},
    {"Path": "/opt/a/b", "Kind": 1},
    {"Path": "/opt/a/b/c", "Kind": 1},
    {"Path": "/srv", "Kind": 0},
    {"Path": "/srv/data", "Kind": 1},
]


def test_filter_changes_keeps_real_changes_and_drops_mounts_and_their_parents():
    kept = filter_changes(RECORDED_DIFF, ["/srv/data", "/tmp"])
    assert [str(c) for c in kept] == [
        "D /etc/issue",
        "A /etc/x",
        "A /opt/a",
        "A /opt/a/b",
        "A /opt/a/b/c",
    ]


@pytest.mark.parametrize(
    ("raw", "excluded", "expected"),
    [
        ([], ["/srv/data"], []),
        (None, [], []),
        # the untouched mount points of a fresh container are no drift
        ([{"Path": "/srv", "Kind": 0}, {"Path": "/srv/data", "Kind": 1}], ["/srv/data"], []),
        # a file changed in place is reported; the same prefix outside the mount is not hidden
        ([{"Path": "/srv/database", "Kind": 1}], ["/srv/data"], ["A /srv/database"]),
        ([{"Path": "/etc/passwd", "Kind": 0}], [], ["C /etc/passwd"]),
        # a directory whose own metadata changed, with nothing below it, stays
        ([{"Path": "/var/log", "Kind": 0}], [], ["C /var/log"]),
        # tmpfs at /run: nothing under it counts
        ([{"Path": "/run/lock/x", "Kind": 1}], ["/run"], []),
        ([{"Path": "/etc//x/", "Kind": 1}], [], ["A /etc/x"]),
    ],
)
def test_filter_changes_edge_cases(raw, excluded, expected):
    assert [str(c) for c in filter_changes(raw, excluded)] == expected


INVENTORY = {
    "_meta": {
        "hostvars": {
            "web-prod": {
                "kiln_group_image": "web",
                "kiln_group_channel": "prod",
                "kiln_group_provider": "docker",
                "kiln_group_provider_options": {"port": 8080},
                "kiln_group_health": {"type": "http", "path": "/healthz"},
            },
            "web-staging": {"kiln_group_image": "web"},
        }
    },
    "kiln_groups": {"hosts": ["web-prod"]},
    "all": {"children": ["kiln_groups", "ungrouped"]},
}


def test_groups_come_from_the_inventory_kiln_groups():
    [target] = GroupTarget.from_inventory(INVENTORY)
    assert target == GroupTarget(
        "web-prod",
        "web",
        "prod",
        "docker",
        {"port": 8080},
        {"type": "http", "path": "/healthz"},
        load_balancer="haproxy",
    )
    broken = {**INVENTORY, "kiln_groups": {"hosts": ["web-prod", "web-staging"]}}
    with pytest.raises(KilnError, match=r"inventory host web-staging \(kiln_group_\*\): missing channel"):
        GroupTarget.from_inventory(broken)


def test_an_unknown_provider_is_refused_naming_the_group(catalog):
    target = GroupTarget("web-prod", "web", "prod", provider="ec2")
    with pytest.raises(KilnError, match="group 'web-prod': unknown provider 'ec2'; known: docker"):
        detect([target], catalog)


@pytest.fixture
def health_server():
    """An app on 127.0.0.1 answering 200 on /healthz and 503 on /sick."""
    import http.server
    import threading

    probes: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            probes.append(self.path)
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", probes
    server.shutdown()
    server.server_close()


def test_health_is_probed_once_per_running_instance(catalog, health_server):
    address, probes = health_server
    good, other, sick, stopped = inst(0, "web/2"), inst(1, "web/2"), inst(1, "web/2"), inst(2, "web/2")
    good.probe_address = other.probe_address = sick.probe_address = address
    stopped.alive, stopped.probe_address = False, ""
    inspector = FakeInspector(health={stopped.name: "exited"})
    healthz = GroupTarget("web-prod", "web", "prod", health={"type": "http", "path": "/healthz"})
    sickz = GroupTarget("web-prod", "web", "prod", health={"type": "http", "path": "/sick"})
    provider = FakeProvider([good, other, stopped])
    states = detect([healthz], catalog, provider, inspector).groups[0].instances
    assert [s.health for s in states] == ["healthy", "healthy", "exited"]
    assert probes == ["/healthz", "/healthz"]  # one probe per running instance, none for the stopped one
    provider = FakeProvider([sick])
    assert detect([sickz], catalog, provider, inspector).groups[0].instances[0].health == "unhealthy"
    assert probes[2:] == ["/sick"]  # an unhealthy answer is not retried
    # nothing listens: no answer
    sick.probe_address = "127.0.0.1:1"
    assert detect([sickz], catalog, provider, inspector).groups[0].instances[0].health == "no answer"


class FakeLoadBalancer:
    def __init__(self, servers=None, error=None):
        self.states, self.error = servers or {}, error

    def servers(self):
        if self.error:
            raise KilnError(self.error)
        return dict(self.states)


def test_instances_the_load_balancer_does_not_serve_are_drift(catalog):
    served, missing, drained, stopped = inst(0, "web/2"), inst(1, "web/2"), inst(2, "web/2"), inst(3, "web/2")
    stopped.alive = False
    provider = FakeProvider([served, missing, drained, stopped])
    lb = FakeLoadBalancer({served.name: "ready", drained.name: "maint"})
    report = detect([PROD], catalog, provider, FakeInspector(), load_balancer=lb)
    assert report.drifted
    assert [(f.instance, f.kind) for f in report.findings] == [(missing.name, "lb"), (drained.name, "lb")]
    assert "has no server for the instance" in report.findings[0].detail
    assert "in state maint" in report.findings[1].detail
    assert [i.drift for i in report.groups[0].instances] == [[], ["lb"], ["lb"], []]
    # A restarted load balancer that has all its servers back is no drift.
    lb = FakeLoadBalancer({i.name: "ready" for i in (served, missing, drained)})
    assert not detect([PROD], catalog, provider, FakeInspector(), load_balancer=lb).drifted


def test_a_load_balancer_that_does_not_answer_is_drift_naming_why(catalog):
    provider = FakeProvider([inst(0, "web/2")])
    lb = FakeLoadBalancer(error="HAProxy runtime API at /x/admin.sock did not answer 'show servers state'")
    [finding] = detect([PROD], catalog, provider, FakeInspector(), load_balancer=lb).findings
    assert finding.kind == "lb" and "does not answer (HAProxy runtime API" in finding.detail


def test_the_inventory_names_the_groups_load_balancer():
    inventory = {
        "kiln_groups": {"hosts": ["web-prod"]},
        "_meta": {
            "hostvars": {
                "web-prod": {
                    "kiln_group_image": "web",
                    "kiln_group_channel": "prod",
                    "kiln_group_load_balancer": "haproxy",
                }
            }
        },
    }
    [target] = GroupTarget.from_inventory(inventory)
    assert target.load_balancer == "haproxy"
    none = {
        **inventory,
        "_meta": {
            "hostvars": {
                "web-prod": {
                    "kiln_group_image": "web",
                    "kiln_group_channel": "prod",
                    "kiln_group_load_balancer": "none",
                }
            }
        },
    }
    assert GroupTarget.from_inventory(none)[0].load_balancer == "none"
    with pytest.raises(KilnError, match="group 'web-prod': unknown load balancer 'nginx'"):
        detect([GroupTarget("web-prod", "web", "prod", load_balancer="nginx")], catalog=None)
