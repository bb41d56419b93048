"""The test stage's logic without Docker: package lists, failure reports, candidates, reuse, summaries.

Molecule itself is replaced by a two-line script here; tests/integration/test_molecule.py runs it for real.
"""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog, Version
from ansible_collections.kiln.immutable.plugins.module_utils.test_stage import image_test
from ansible_collections.kiln.immutable.plugins.module_utils.test_stage.image_test import (
    ImageTestError,
    candidate,
    failure_from_output,
    package_drift,
    parse_dpkg,
    run_image_test,
)

# captured from `dpkg-query --show --showformat='${db:Status-Abbrev} ${Package} ${Version}\n'` in kiln/web
DPKG = """ii  adduser 3.134
ii  nginx 1.22.1-9+deb12u3
rc  nginx-common 1.22.1-9
ii  libssl3:amd64 3.0.17-1~deb12u2
iU  half-done 1.0
"""


def test_parse_dpkg_keeps_installed_packages_only():
    assert parse_dpkg(DPKG) == {
        "adduser": "3.134",
        "nginx": "1.22.1-9+deb12u3",
        "libssl3:amd64": "3.0.17-1~deb12u2",
    }  # "rc" (removed, config left) and "iU" (unpacked, never configured) are not installed


@pytest.mark.parametrize(
    "text, expected",
    [
        ("nginx\t1.22\nadduser\t3.134\n", {"nginx": "1.22", "adduser": "3.134"}),  # the short format
        ("", {}),
        ("garbage\n\nii a b c d\n", {}),
    ],
)
def test_parse_dpkg_other_shapes(text, expected):
    assert parse_dpkg(text) == expected


def test_package_drift_names_every_difference():
    catalog = {"nginx": "1.22.1-9", "adduser": "3.134", "curl": "7.88"}
    image = {"nginx": "1.22.1-9+deb12u3", "adduser": "3.134", "vim": "9.0"}
    assert package_drift(catalog, image) == [
        "curl 7.88 is in the catalog but not installed",
        "nginx is 1.22.1-9+deb12u3, the catalog says 1.22.1-9",
        "vim 9.0 is installed but not in the catalog",
    ]
    assert package_drift(catalog, dict(catalog)) == []


def test_failure_from_output_names_the_failed_task():
    lines = [
        "TASK [Start the instance from the image as built] ******",
        'fatal: [localhost]: FAILED! => {"changed": false, "msg": "No such image: kiln/web:9\\nsecond line"}',
        "TASK [Later] ***",
    ]
    assert failure_from_output(lines) == (
        "Start the instance from the image as built",
        "No such image: kiln/web:9\nsecond line",
    )
    assert failure_from_output(["INFO ok", "CRITICAL 'extensions/molecule/x/molecule.yml' glob failed."]) == (
        None,
        "CRITICAL 'extensions/molecule/x/molecule.yml' glob failed.",
    )
    assert failure_from_output([]) == (None, None)


@pytest.fixture
def catalog(tmp_path):
    with Catalog(str(tmp_path / "catalog.db")) as opened:
        for fp in ("a", "b"):
            opened.register(
                Version(
                    image="web",
                    name=opened.reserve_version("web"),
                    fingerprint=fp,
                    artifacts={"docker": {"image_id": f"sha256:{fp * 8}", "tag": f"kiln/web:{fp}"}},
                    packages={"nginx": "1.22"},
                )
            )
        opened.register(Version(image="web", name=opened.reserve_version("web"), fingerprint="ami-only"))
        opened.promote("dev", "web/2")
        yield opened


def test_candidate_by_version_or_channel(catalog):
    assert candidate(catalog, version="web/1").image == "sha256:aaaaaaaa"
    by_channel = candidate(catalog, channel="dev", image="web")
    assert (by_channel.ref, by_channel.image, by_channel.packages) == (
        "web/2",
        "sha256:bbbbbbbb",
        {"nginx": "1.22"},
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of version"),
        ({"version": "web/1", "channel": "dev", "image": "web"}, "exactly one of version"),
        ({"channel": "dev"}, "needs the image name"),
        ({"channel": "prod", "image": "web"}, "channel 'prod' of image 'web' points at no version"),
        ({"version": "web/3"}, "web/3 has no Docker image"),
        ({"version": "web/9"}, "unknown version web/9"),
    ],
)
def test_candidate_refuses_what_cannot_be_tested(catalog, kwargs, message):
    with pytest.raises(Exception, match=message):
        candidate(catalog, **kwargs)


@pytest.fixture
def fake_molecule(tmp_path, monkeypatch):
    """A stand-in `molecule` that fails like a verify would: it writes the report and exits 2."""
    script = tmp_path / "bin" / "molecule"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "print('TASK [Health: /healthz answers 200] ***')\n"
        "if os.environ.get('FAKE_RC', '0') != '0':\n"
        "    json.dump({'check': 'Health: /healthz answers 200', 'msg': 'GET /healthz answered 503'},\n"
        "              open(os.environ['KILN_TEST_REPORT'], 'w'))\n"
        "print('env', os.environ['KILN_TEST_VERSION'], os.environ['KILN_TEST_IMAGE'], sys.argv[1:])\n"
        "sys.exit(int(os.environ.get('FAKE_RC', '0')))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(image_test, "molecule_command", lambda: str(script))
    monkeypatch.setattr(image_test, "_remove_instance", lambda instance: None)
    project = tmp_path / "project"
    (project / "extensions" / "molecule" / "image").mkdir(parents=True)
    (project / "extensions" / "molecule" / "image" / "molecule.yml").write_text("---\n")
    return str(project)


def test_a_failed_check_is_recorded_with_its_name(catalog, fake_molecule, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_RC", "2")
    lines: list[str] = []
    outcome = run_image_test(
        catalog,
        version="web/1",
        project_dir=fake_molecule,
        state_dir=str(tmp_path / "state"),
        on_line=lines.append,
    )
    assert not outcome.passed and outcome.rc == 2
    assert outcome.check == "Health: /healthz answers 200" and outcome.msg == "GET /healthz answered 503"
    assert "env web/1 sha256:aaaaaaaa ['test', '--scenario-name', 'image'" in "\n".join(lines)
    last = catalog.get("web/1").last_test
    assert last["passed"] is False
    assert last["details"] == {"scenario": "image", "check": outcome.check, "msg": outcome.msg, "rc": 2}
    assert open(last["log_path"]).read().count("env web/1") == 1
    assert "FAILED scenario 'image'" in outcome.summary() and "check failed: Health" in outcome.summary()
    # the run's working folder (packages file, report) is gone
    assert os.listdir(tmp_path / "state" / "tests") == []


def test_skip_passed_reuses_a_pass_of_the_same_scenario_only(catalog, fake_molecule, tmp_path, monkeypatch):
    state = str(tmp_path / "state")
    first = run_image_test(catalog, version="web/1", project_dir=fake_molecule, state_dir=state)
    again = run_image_test(
        catalog, version="web/1", project_dir=fake_molecule, state_dir=state, skip_passed=True
    )
    assert first.passed and again.passed and again.skipped and not first.skipped
    assert again.log_path == first.log_path and len(catalog.get("web/1").tests) == 1
    assert "not run again" in again.summary()
    # a pass of another scenario does not count as a pass of this one
    catalog.record_test("web/2", passed=True, details={"scenario": "smoke"})
    monkeypatch.setenv("FAKE_RC", "2")
    failed = run_image_test(
        catalog, version="web/2", project_dir=fake_molecule, state_dir=state, skip_passed=True
    )
    assert not failed.skipped and not failed.passed and len(catalog.get("web/2").tests) == 2
    # a failure is not "done": the next run tests again
    monkeypatch.setenv("FAKE_RC", "0")
    retried = run_image_test(
        catalog, version="web/2", project_dir=fake_molecule, state_dir=state, skip_passed=True
    )
    assert not retried.skipped and retried.passed and len(catalog.get("web/2").tests) == 3


def test_check_mode_and_a_missing_scenario_run_and_record_nothing(catalog, fake_molecule, tmp_path):
    state = str(tmp_path / "state")
    planned = run_image_test(
        catalog, version="web/1", project_dir=fake_molecule, state_dir=state, check_mode=True
    )
    assert planned.passed and planned.log_path is None
    with pytest.raises(ImageTestError, match="no Molecule scenario 'smoke' in"):
        run_image_test(catalog, version="web/1", scenario="smoke", project_dir=fake_molecule, state_dir=state)
    assert catalog.get("web/1").tests == [] and not os.path.exists(os.path.join(state, "logs"))


def test_a_timeout_stops_molecule_and_is_recorded_as_a_failure(catalog, fake_molecule, tmp_path, monkeypatch):
    slow = tmp_path / "bin" / "slow-molecule"
    slow.write_text(f"#!{sys.executable}\nimport time\nprint('started', flush=True)\ntime.sleep(60)\n")
    slow.chmod(0o755)
    monkeypatch.setattr(image_test, "molecule_command", lambda: str(slow))
    outcome = run_image_test(
        catalog, version="web/1", project_dir=fake_molecule, state_dir=str(tmp_path / "state"), timeout_s=1.5
    )
    assert not outcome.passed and outcome.rc is None and outcome.msg == "timed out after 1.5s"
    assert outcome.duration_s < 20
    assert json.loads(json.dumps(catalog.get("web/1").last_test))["details"]["msg"] == "timed out after 1.5s"
