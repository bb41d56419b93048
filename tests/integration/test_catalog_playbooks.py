"""The catalog through real Ansible runs and invoke: modules, playbooks, policy refusals, Docker retention."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.policy import Policy
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.trust import Trust

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def env(tmp_path, monkeypatch):
    values = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "KILN_STATE_DIR": str(tmp_path / "state"),
        "KILN_CATALOG": str(tmp_path / "state" / "catalog.db"),
        "KILN_PRINCIPAL": "release-tester",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    values.pop("KILN_POLICY", None)
    return values


def play(env: dict, tasks: list[dict], tmp_path: Path, check: bool = False) -> list[dict]:
    """Run tasks in a play on localhost; returns each task's result (the real JSON of the run)."""
    book = tmp_path / f"play-{uuid.uuid4().hex[:8]}.yml"
    book.write_text(json.dumps([{"name": "t", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    cmd = [str(BIN / "ansible-playbook"), str(book)] + (["--check", "--diff"] if check else [])
    return _results(subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300))


def playbook(env: dict, name: str, extra: dict, check: bool = False) -> list[dict]:
    cmd = [str(BIN / "ansible-playbook"), f"kiln.immutable.{name}", "-e", json.dumps(extra)]
    cmd += ["--check", "--diff"] if check else []
    return _results(subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300))


def _results(run: subprocess.CompletedProcess) -> list[dict]:
    try:
        doc = json.loads(run.stdout)
    except ValueError:
        raise AssertionError(
            f"ansible-playbook printed no JSON:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        ) from None
    return [task["hosts"]["localhost"] for p in doc["plays"] for task in p["tasks"]]


def invoke(env: dict, *args: str) -> subprocess.CompletedProcess:
    plain = {**env, "ANSIBLE_STDOUT_CALLBACK": "default"}
    return subprocess.run(
        [str(BIN / "invoke"), *args], cwd=ROOT, env=plain, capture_output=True, text=True, timeout=300
    )


def register(n: int, image: str = "web") -> dict:
    return {
        "kiln.immutable.image_version": {
            "image": image,
            "fingerprint": f"fp-{n}",
            "artifacts": {"docker": {"tag": f"kiln/web:{n}"}},
            "packages": {"openssl": f"3.0.{n}-1"},
        }
    }


def test_modules_register_promote_and_report_changes_honestly(env, tmp_path):
    first = play(env, [register(1), register(2)], tmp_path)
    assert [(r["changed"], r["ref"]) for r in first] == [(True, "web/1"), (True, "web/2")]
    again = play(env, [register(1), register(2)], tmp_path)
    assert [(r["changed"], r["ref"]) for r in again] == [(False, "web/1"), (False, "web/2")]

    planned = play(
        env, [{"kiln.immutable.image_channel": {"channel": "dev", "version": "web/2"}}], tmp_path, check=True
    )[0]
    assert planned["changed"] and planned["diff"] == {"before": {"dev": None}, "after": {"dev": "web/2"}}
    info = play(env, [{"kiln.immutable.image_info": {"image": "web"}}], tmp_path)[0]
    assert not info["changed"] and info["channels"] == {}  # check mode moved nothing
    assert [v["ref"] for v in info["versions"]] == ["web/2", "web/1"]

    promoted = playbook(env, "promote", {"kiln_version": "web/2", "kiln_channel": "dev"})
    assert promoted[0]["changed"] and promoted[0]["after"] == "web/2"
    assert not playbook(env, "promote", {"kiln_version": "web/2", "kiln_channel": "dev"})[0]["changed"]


def test_the_repository_policy_refuses_with_the_rule_and_changes_nothing(env, tmp_path):
    play(env, [register(1)], tmp_path)
    playbook(env, "promote", {"kiln_version": "web/1", "kiln_channel": "dev"})
    with Catalog(env["KILN_CATALOG"]) as catalog:
        before = catalog.export()  # versions, channels, their history and the audit events
    refused = playbook(env, "promote", {"kiln_version": "web/1", "kiln_channel": "staging"})[0]
    assert refused["failed"]
    assert refused["msg"] == (
        "promotion of web/1 to channel 'staging' refused: "
        "rule 'requires_passing_test': web/1 has no recorded test result"
    )
    unknown = playbook(env, "promote", {"kiln_version": "web/1", "kiln_channel": "prdo"})[0]
    assert "channel 'prdo' of image 'web' is not in the promotion policy" in unknown["msg"]
    with Catalog(env["KILN_CATALOG"]) as catalog:
        assert catalog.export() == before
    tested = play(
        env,
        [{"kiln.immutable.image_version": {"version": "web/1", "test_result": {"passed": True}}}],
        tmp_path,
    )[0]
    assert tested["changed"] and tested["version"]["tests"][-1]["passed"]
    # invoke promote --from staging --to prod: refused until staging has it; then allowed.
    assert invoke(env, "promote", "--from", "staging", "--to", "prod").returncode != 0
    assert invoke(env, "promote", "--version", "web/1", "--channel", "staging").returncode == 0
    done = invoke(env, "promote", "--from", "staging", "--to", "prod", "--reason", "release 1")
    assert done.returncode == 0, done.stdout[-2000:]
    with Catalog(env["KILN_CATALOG"]) as catalog:
        assert catalog.channels("web") == {"dev": "web/1", "staging": "web/1", "prod": "web/1"}
        last = catalog.channel_history("web", "prod")[0]
        # the repository policy signs: who moved prod is the key's identity, not $KILN_PRINCIPAL
        assert (last["principal"], last["reason"]) == (f"{getpass.getuser()}@local", "release 1")
    policy = Policy.load(str(ROOT / "inventories" / "local" / "policy.yml"))
    with Catalog(env["KILN_CATALOG"], trust=Trust.of(policy)) as catalog:
        assert catalog.verify_channel("web", "prod")["signed"] is True


def test_rollback_revoke_verify_and_errors_through_the_cli(env, tmp_path):
    play(env, [register(1), register(2), register(3)], tmp_path)
    with Catalog(env["KILN_CATALOG"]) as catalog:
        for ref in ("web/1", "web/2", "web/3"):
            catalog.promote("prod", ref)
    back = playbook(env, "channel_rollback", {"kiln_image": "web", "kiln_channel": "prod", "kiln_policy": ""})
    assert (back[0]["before"], back[0]["after"]) == ("web/3", "web/2")

    revoked = invoke(env, "revoke", "--version", "web/2", "--reason", "CVE-2026-0001")
    assert revoked.returncode == 0, revoked.stdout[-2000:]
    history = invoke(env, "history", "--channel", "prod")
    assert "web@prod -> web/1" in history.stdout
    signer = (
        f"{getpass.getuser()}@local"  # the repository policy signs: the key's identity, not $KILN_PRINCIPAL
    )
    assert f"fallback web/2 -> web/1  by {signer}: web/2 revoked: CVE-2026-0001" in history.stdout

    assert invoke(env, "catalog-verify").returncode == 0
    unknown = invoke(env, "revoke", "--version", "web/9", "--reason", "x")
    assert unknown.returncode != 0 and "unknown version web/9" in unknown.stdout
    assert "unknown channel 'qa' of image 'web'" in invoke(env, "history", "--channel", "qa").stderr

    diff = invoke(env, "diff", "web/1", "web/3")
    assert "^ openssl 3.0.1-1 -> 3.0.3-1" in diff.stdout

    exported = tmp_path / "catalog.json"
    assert invoke(env, "catalog-export", "--output", str(exported)).returncode == 0
    copy = {**env, "KILN_CATALOG": str(tmp_path / "copy.db")}
    assert invoke(copy, "catalog-import", "--input", str(exported)).returncode == 0
    verified = play(copy, [{"kiln.immutable.image_info": {"verify": True}}], tmp_path)[0]
    assert verified["verify"]["ok"] and not verified["changed"]

    # An edited event: the module option and the invoke task both fail and name it.
    import sqlite3

    conn = sqlite3.connect(copy["KILN_CATALOG"])
    conn.execute("UPDATE events SET principal='nobody' WHERE id=2")
    conn.commit()
    conn.close()
    tampered = play(copy, [{"kiln.immutable.image_info": {"verify": True}}], tmp_path)[0]
    assert tampered["failed"] and "event 2 (register web/2) was edited" in tampered["msg"]
    assert "event 2 (register web/2) was edited" in invoke(copy, "catalog-verify").stderr


@pytest.mark.docker
def test_prune_removes_old_docker_images_but_never_what_an_instance_runs(env, tmp_path):
    from ansible_collections.kiln.immutable.plugins.module_utils.common.docker_api import client

    engine = client()
    prefix = f"kilncattest-{uuid.uuid4().hex[:8]}"
    base = engine.images.get("kiln/base:bookworm")
    # An image name of its own: other catalogs' instances on this Docker engine protect their "web/2".
    web = prefix
    tags = {n: f"{prefix}/web:{n}" for n in range(1, 6)}
    container = None
    try:
        tasks = []
        for n, tag in tags.items():
            base.tag(tag)
            tasks.append(register(n, web))
            tasks[-1]["kiln.immutable.image_version"]["artifacts"] = {
                "docker": {"tag": tag, "image_id": base.id}
            }
        play(env, tasks, tmp_path)
        # An instance (a stopped container is enough) runs web/1; prod points at web/4.
        container = engine.containers.create(
            "kiln/base:bookworm", command="true", name=f"{prefix}-web-1", labels={"kiln.version": f"{web}/1"}
        )
        with Catalog(env["KILN_CATALOG"]) as catalog:
            catalog.promote("prod", f"{web}/4")

        dry = invoke(env, "prune", "--keep", "1", "--dry-run")
        assert dry.returncode == 0, dry.stdout[-2000:]
        assert all(engine.images.list(name=tag) for tag in tags.values())

        done = playbook(env, "prune", {"kiln_keep": 1})[-2]
        assert sorted(done["removed"]) == [f"{web}/2", f"{web}/3"]
        assert done["kept"] == {
            f"{web}/5": "one of the newest 1",
            f"{web}/4": "channel prod points at it",
            f"{web}/1": "run by an instance",
        }
        assert sorted(done["images_removed"]) == [tags[2], tags[3]]
        remaining = {
            t for img in engine.images.list(name=f"{prefix}/web") for t in img.tags if t.startswith(prefix)
        }
        assert remaining == {tags[1], tags[4], tags[5]}
        assert engine.images.get("kiln/base:bookworm").id == base.id  # the shared image itself stays
        assert not playbook(env, "prune", {"kiln_keep": 1})[-2]["changed"]
    finally:
        if container is not None:
            container.remove(force=True)
        for tag in tags.values():
            if engine.images.list(name=tag):
                engine.images.remove(tag)
