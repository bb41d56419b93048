"""kiln's stages for a laptop or a CI job: build, test, promote, roll out.

Each task is thin: it runs one of the collection's playbooks, Molecule, or the catalog.
Defaults live in ``ns.configure`` below (or an ``invoke.yaml``); command-line flags override them.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent
VENV_BIN = ROOT / ".venv" / "bin"


def _env(c) -> dict:
    """The environment every stage runs in: the venv first on PATH, the repo's ansible.cfg, the state."""
    state = Path(c.kiln.state_dir).resolve()
    return {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "KILN_STATE_DIR": str(state),
        "KILN_CATALOG": _utils("common.paths").catalog_location(c.kiln.catalog, str(state)),
        "KILN_ROOT": str(ROOT),
        # its signing section decides whether events are signed; no policy file: no rules
        **({"KILN_POLICY": policy} if (policy := _policy_path(c)) else {}),
    }


def _policy_path(c) -> str | None:
    """The promotion policy: $KILN_POLICY, else policy.yml beside the inventory (a folder or a file)."""
    if os.environ.get("KILN_POLICY"):
        return os.environ["KILN_POLICY"]
    inventory = ROOT / c.kiln.inventory
    beside = (inventory if inventory.is_dir() else inventory.parent) / "policy.yml"
    return str(beside) if beside.is_file() else None


def _playbook(c, name: str, extra_vars: dict | None = None, check: bool = False, follow: dict | None = None):
    """Run ``kiln.immutable.<name>`` with ``extra_vars`` (None values left out) as one JSON document.

    The document goes in a file only this user can read, removed afterwards: values (build variables,
    secrets among them) never appear on a command line, which every local user can read, or in the
    command echoed here. ``follow`` maps a prefix to a progress file that the playbook appends to; its
    lines are shown as they come. A failed run ends the task: Ansible has printed why.
    """
    import json
    import tempfile

    extra = {k: v for k, v in (extra_vars or {}).items() if v is not None}
    cmd = ["ansible-playbook", f"kiln.immutable.{name}", "-i", str(ROOT / c.kiln.inventory)]
    if check:
        cmd.append("--check")
    with tempfile.NamedTemporaryFile("w", prefix="kiln-vars-", suffix=".json") as handle:  # mode 0600
        if extra:
            json.dump(extra, handle)
            handle.flush()
            cmd += ["-e", f"@{handle.name}"]
        with c.cd(str(ROOT)), _following(follow or {}):
            result = c.run(shlex.join(cmd), env=_env(c), pty=False, warn=True)
    if result.failed:
        raise Exit(f"kiln: {name} failed (see the output above)", code=1)
    return result


@contextlib.contextmanager
def _following(files: dict):
    """Show the lines appended to each file of ``files`` (prefix -> path) while the block runs."""
    import threading
    import time

    offsets = {path: (Path(path).stat().st_size if Path(path).exists() else 0) for path in files.values()}
    stop = threading.Event()

    def follow() -> None:
        while True:
            done = stop.is_set()
            for prefix, path in files.items():
                if Path(path).exists() and Path(path).stat().st_size > offsets[path]:
                    with open(path, encoding="utf-8", errors="replace") as handle:
                        handle.seek(offsets[path])
                        chunk = handle.read()
                        offsets[path] = handle.tell()
                    for line in chunk.splitlines():
                        print(f"{prefix}{line}", flush=True)
            if done:
                return
            time.sleep(0.2)

    reader = threading.Thread(target=follow, daemon=True)
    if files:
        reader.start()
    try:
        yield
    finally:
        stop.set()
        if reader.is_alive():
            reader.join(timeout=5)


@contextlib.contextmanager
def _progress_file():
    """A scratch file the build appends Packer's progress to (the packer_build option progress_file)."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="kiln-build-", suffix=".progress")
    os.close(fd)
    try:
        yield path
    finally:
        os.unlink(path)


def _parse_vars(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Exit(f"--var expects key=value, got {pair!r}")
        out[key] = value
    return out


@task(
    iterable=["var"],
    help={
        "image": "image to bake: a folder under packer/ (default: web)",
        "force": "build even when an identical version is in the catalog",
        "var": "a Packer variable as key=value; repeat for several",
    },
)
def build(c, image=None, force=False, var=None):
    """Bake a golden image with Packer and record it in the catalog (skipped when nothing changed)."""
    extra = {
        "kiln_image": image or c.kiln.image,
        "kiln_force": force,
        "kiln_variables": _parse_vars(var) if var else None,
    }
    with _progress_file() as progress:
        _playbook(c, "build", {**extra, "kiln_progress_file": progress}, follow={"  packer | ": progress})


# --- catalog: promote, revoke, diff, prune, history, verify, export/import ---------------------------


def _utils(name: str):
    """A module of the collection's module_utils, imported in-process."""
    import importlib
    import sys

    if str(ROOT / "collections") not in sys.path:
        sys.path.insert(0, str(ROOT / "collections"))
    return importlib.import_module(f"ansible_collections.kiln.immutable.plugins.module_utils.{name}")


def _catalog_call(c, fn):
    """Run ``fn(catalog)`` on the stages' catalog, turning a kiln error into a clean exit with its message."""
    try:
        env = _env(c)
        trust = _utils("catalog.trust").Trust.from_environment(env)  # the policy's allowed_signers
        with _utils("catalog.catalog").Catalog(env["KILN_CATALOG"], trust=trust) as catalog:
            return fn(catalog)
    except _utils("common.errors").KilnError as exc:
        raise Exit(f"kiln: {exc}") from exc


@task(
    help={
        "version": "the version to promote, e.g. web/7",
        "channel": "the channel to move, e.g. staging (same as --to)",
        "to": "the channel to move (with --from)",
        "from": "promote what this channel points at, e.g. --from staging --to prod",
        "image": "the image, with --from (default: the configured image, web)",
        "reason": "why; kept in the channel history",
        "check": "say what would happen (including policy refusals) without changing anything",
    }
)
def promote(c, version=None, channel=None, to=None, from_=None, image=None, reason="", check=False):
    """Point a channel at a version, or at what another channel points at, if the policy allows."""
    target = channel or to
    if not target or bool(version) == bool(from_):
        raise Exit("promote needs --channel (or --to) and exactly one of --version or --from")
    extra = {
        "kiln_channel": target,
        "kiln_version": version,
        "kiln_from_channel": from_,
        "kiln_image": (image or c.kiln.image) if from_ else image,
        "kiln_reason": reason,
    }
    _playbook(c, "promote", extra, check=check)


@task(
    help={
        "version": "the version to revoke, e.g. web/6",
        "reason": "why (required to revoke), e.g. a CVE id",
        "at": "revoke at this time (ISO 8601, e.g. 2026-12-31T23:59:59Z) instead of now",
        "no-fallback": "leave channels that point at the version where they are",
        "restore": "undo the revocation (or cancel a scheduled one)",
    }
)
def revoke(c, version, reason=None, at=None, no_fallback=False, restore=False):
    """Revoke a version: it can no longer be promoted or rolled out; channels on it fall back."""
    if not restore and not reason:
        raise Exit("revoke needs --reason")
    extra = {
        "kiln_version": version,
        "kiln_reason": reason,
        "kiln_revoke_at": at,
        "kiln_fallback": not no_fallback,
        "kiln_restore": restore,
    }
    _playbook(c, "revoke", extra)


@task(
    positional=["old", "new"],
    help={"old": "the older version, e.g. web/6", "new": "the newer one, e.g. web/7", "json": "print JSON"},
)
def diff(c, old, new, json=False):
    """Show packages added, removed and upgraded, and build inputs changed, between two versions."""
    import json as jsonlib

    def compare(catalog):
        diff = _utils("catalog.diff")
        found = diff.diff_versions(catalog.get(old), catalog.get(new))
        return jsonlib.dumps(found, indent=2) if json else diff.format_diff(found)

    print(_catalog_call(c, compare))


@task(
    help={
        "keep": "how many of the newest versions of each image to keep (default 5)",
        "image": "prune only this image (default: every image)",
        "dry-run": "list what would be removed and why the rest stays, without removing anything",
    }
)
def prune(c, keep=5, image=None, dry_run=False):
    """Remove old versions and their Docker images; never what a channel or an instance uses."""
    _playbook(c, "prune", {"kiln_keep": int(keep), "kiln_image": image}, check=dry_run)


@task(
    help={
        "image": "the image (default: the configured image, web)",
        "channel": "only this channel (default: every channel of the image)",
        "limit": "how many moves to show (default 20)",
    }
)
def history(c, image=None, channel=None, limit=20):
    """Show the moves of an image's channels: when, who, from which version to which, and why."""
    image = image or c.kiln.image

    def show(catalog):
        current = catalog.channels(image)
        if channel and channel not in current:
            known = ", ".join(current) or "none"
            raise Exit(f"kiln: unknown channel {channel!r} of image {image!r}; known: {known}")
        for name, ref in current.items():
            print(f"{image}@{name} -> {ref or '(none)'}")
        for move in catalog.channel_history(image, channel, limit=int(limit)):
            print(
                f"{move['at']}  {move['channel']:<8} {move['action']:<8} {move['previous'] or '-'} -> "
                f"{move['version'] or '-'}  by {move['principal']}"
                + (f": {move['reason']}" if move["reason"] else "")
            )

    _catalog_call(c, show)


@task
def catalog_verify(c):
    """Check the catalog's audit trail; an edited or deleted event, or a row changed outside kiln, fails."""
    report = _catalog_call(c, lambda catalog: catalog.verify())
    if not report["ok"]:
        raise Exit(
            f"kiln: the catalog does not verify; first: {report['problems'][0]}\n  "
            + "\n  ".join(report["problems"])
        )
    signed = "every event signed" if report["signed"] else "unsigned (the policy does not turn signing on)"
    print(f"catalog verified: {report['events']} events, head {report['head']}, {signed}")


@task(help={"output": "the file to write (default: catalog.json; '-' for standard output)"})
def catalog_export(c, output="catalog.json"):
    """Write the whole catalog as JSON, for review or to keep in git."""
    import json

    doc = _catalog_call(c, lambda catalog: catalog.export())
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    if output == "-":
        print(text, end="")
        return
    tmp = Path(f"{output}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)  # never a half-written export
    print(f"exported {len(doc['versions'])} versions and {len(doc['events'])} events to {output}")


@task(help={"input": "the export to load (default: catalog.json)"})
def catalog_import(c, input="catalog.json"):
    """Load an export into an empty catalog; it must verify, or nothing is imported."""
    import json

    try:
        doc = json.loads(Path(input).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Exit(f"kiln: cannot read the export {input}: {exc}") from exc
    # The catalog names itself: a PostgreSQL URL is shown without its password.
    report, where = _catalog_call(c, lambda catalog: (catalog.import_(doc), catalog.path))
    print(f"imported {report['events']} events into {where} (head {report['head']})")


# --- the test stage and the pipeline ------------------------------------------------------------------

COLLECTION_DIR = ROOT / "collections" / "ansible_collections" / "kiln" / "immutable"


@task(
    help={
        "version": "the version to test, e.g. web/7",
        "channel": "test what this channel points at, e.g. dev (of --image, default web)",
        "image": "the image, with --channel",
        "scenario": "the Molecule scenario to run (default: image)",
        "project-dir": "where your own scenario lives: a collection root (extensions/molecule/<scenario>) "
        "or a project (molecule/<scenario>); default: kiln's collection",
        "skip-passed": "reuse the recorded pass when the version already passed the scenario",
        "timeout": "seconds Molecule may run before it is stopped (default 900)",
    }
)
def test(
    c,
    version=None,
    channel=None,
    image=None,
    scenario=None,
    project_dir=None,
    skip_passed=False,
    timeout=None,
):
    """Start one version with Molecule, verify it as a user would, and record the result in the catalog."""
    if bool(version) == bool(channel):
        raise Exit("test needs exactly one of --version (e.g. web/7) or --channel (e.g. dev)")
    outcome = _catalog_call(
        c,
        lambda catalog: _utils("test_stage.image_test").run_image_test(
            catalog,
            version=version,
            channel=channel,
            image=(image or c.kiln.image) if channel else image,
            scenario=scenario or c.kiln.test.scenario,
            project_dir=str(Path(project_dir).resolve() if project_dir else COLLECTION_DIR),
            state_dir=_env(c)["KILN_STATE_DIR"],
            timeout_s=float(timeout or c.kiln.test.timeout),
            skip_passed=skip_passed,
            on_line=print,  # Molecule's output as it runs
        ),
    )
    if not outcome.passed:
        raise Exit(f"kiln: {outcome.summary()}", code=1)
    print(outcome.summary())


@task(
    iterable=["var"],
    help={
        "image": "the image to take through the pipeline (default: web)",
        "var": "a Packer variable for the build as key=value; repeat for several",
        "force": "build even when an identical version is in the catalog",
        "retest": "test again even when the version already passed its test",
    },
)
def pipeline(c, image=None, var=None, force=False, retest=False):
    """Build, test, promote to staging, roll out to staging, promote to prod, roll out to prod."""
    extra = {
        "kiln_pipeline_image": image or c.kiln.image,
        "kiln_pipeline_variables": _parse_vars(var),
        "kiln_pipeline_force": force,
        "kiln_pipeline_retest": retest,
    }
    with _progress_file() as progress:
        _playbook(c, "pipeline", {**extra, "kiln_progress_file": progress}, follow={"  packer | ": progress})


# --- see what runs: status, drift, roll-out reports ----------------------------------------------------


def _groups(c, only: str | None = None) -> list:
    """The groups of the inventory (hosts of kiln_groups), through ansible-inventory."""
    inventory = str(ROOT / c.kiln.inventory)
    targets = _utils("observe.status").inventory_targets(inventory, str(VENV_BIN / "ansible-inventory"))
    if only:
        targets = [t for t in targets if t.group == only]
        if not targets:
            known = ", ".join(t.group for t in _groups(c)) or "none"
            raise Exit(f"kiln: unknown group {only!r}; the hosts of kiln_groups in {inventory}: {known}")
    return targets


@task(
    help={
        "json": "print the status as JSON instead of a table",
        "no-filesystem": "skip looking for filesystem changes (one docker diff per instance)",
    }
)
def status(c, json=False, no_filesystem=False):
    """Show images and tests, channels, and each group's instances with version, health, age and drift."""
    import json as jsonlib

    show = _utils("observe.status")
    doc = _catalog_call(c, lambda catalog: show.collect(catalog, _groups(c), filesystem=not no_filesystem))
    print(jsonlib.dumps(doc, indent=2) if json else show.render(doc))


@task(
    help={
        "group": "check only this group (default: every host of kiln_groups)",
        "json": "print the findings as JSON",
        "no-filesystem": "skip looking for filesystem changes (one docker diff per instance)",
    }
)
def drift(c, group=None, json=False, no_filesystem=False):
    """List instances that drifted from their channel's version or changed on disk; exits 1 on drift."""
    import json as jsonlib

    drift_utils = _utils("observe.drift")
    report = _catalog_call(
        c, lambda catalog: drift_utils.detect(_groups(c, group), catalog, filesystem=not no_filesystem)
    )
    print(jsonlib.dumps(report.to_dict(), indent=2) if json else drift_utils.render(report))
    if report.drifted:
        raise Exit(f"kiln: drift found: {len(report.findings)} finding(s)", code=1)


@task(
    help={
        "group": "the newest roll-out of this group (default: the newest of any group)",
        "result": "the roll-out result JSON to render instead of the newest",
    }
)
def report(c, group=None, result=None):
    """Write the newest roll-out's report (HTML page with a timeline, next to its JSON) and print its path."""
    pages = _utils("observe.report")
    try:
        source = result or pages.newest_result(str(Path(_env(c)["KILN_STATE_DIR"]) / "rollouts"), group)
        print(pages.write_html(source))
    except _utils("common.errors").KilnError as exc:
        raise Exit(f"kiln: {exc}") from exc


# --- the local environment: up and down ---------------------------------------------------------------


@task(help={"group": "create only this group (default: every host of kiln_groups)"})
def up(c, group=None):
    """Create each group's docker network and HAProxy load balancer on 127.0.0.1 (roll-outs add instances)."""
    _playbook(c, "build", {"kiln_image": "lb"})  # the lb image; skipped when the catalog has this build
    extra = {"kiln_group": group} if group else {}
    _playbook(c, "up", extra)


@task(
    help={
        "group": "remove only this group (default: every host of kiln_groups)",
        "keep-data": "keep the slots' data volumes",
    }
)
def down(c, group=None, keep_data=False):
    """Remove each group's instances, load balancer, network and (unless --keep-data) data volumes."""
    extra: dict = {"kiln_keep_data": keep_data}
    if group:
        extra["kiln_group"] = group
    _playbook(c, "down", extra)


# --- roll-out and rollback ----------------------------------------------------------------------------


def _rollout_playbook(c, name: str, extra: dict, check: bool) -> None:
    """Run the rollout or rollback playbook, printing each event of the groups while it runs."""
    targets = _groups(c, extra.get("kiln_group"))  # an unknown group stops here
    groups = [t.group for t in targets]
    if (
        not check
        and any(t.load_balancer == "haproxy" for t in targets)
        and _catalog_call(c, lambda catalog: not catalog.list_versions("lb", limit=1))
    ):
        _playbook(c, "build", {"kiln_image": "lb"})  # HAProxy's image, once per catalog
    state = Path(_env(c)["KILN_STATE_DIR"])
    logs = {f"[{g}] ": str(state / "rollouts" / g / "progress.log") for g in groups}
    _playbook(c, name, extra, check=check, follow=None if check else logs)


_ROLLOUT_HELP = {
    "group": "the group to roll out (default: every group of the inventory following --channel)",
    "batch-size": "instances per batch: a number, a percentage like 25%, or a list like 1,50%",
    "check": "print the plan (batches, instances, versions) and change nothing",
    "strategy": "rolling, canary or blue_green (default: the group's kiln_group_rollout)",
}


def _rollout_options(batch_size, strategy=None) -> dict | None:
    options = {"strategy": strategy} if strategy else {}
    if batch_size:
        sizes = [s.strip() for s in str(batch_size).split(",")]
        options["batch_size"] = sizes if len(sizes) > 1 else sizes[0]
    return options or None


@task(
    help={
        **_ROLLOUT_HELP,
        "channel": "roll out what this channel points at (default: each group's own channel)",
        "version": "roll out this version (e.g. web/7) instead of a channel",
    }
)
def rollout(c, channel=None, group=None, version=None, batch_size=None, strategy=None, check=False):
    """Replace a group's instances with a version, batch by batch, rolling back by itself on failure."""
    if channel and version:
        raise Exit("rollout takes --channel or --version, not both")
    extra = {
        "kiln_channel": channel,
        "kiln_group": group,
        "kiln_version": version,
        "kiln_rollout": _rollout_options(batch_size, strategy),
    }
    _rollout_playbook(c, "rollout", extra, check)


@task(
    help={
        **_ROLLOUT_HELP,
        "channel": "the channel to move back, e.g. prod (required)",
        "image": "the image of the channel (default: web)",
        "to": "a version the channel had before, instead of the previous one",
        "reason": "why; kept in the channel history",
    }
)
def rollback(
    c, channel, group=None, image=None, to=None, reason="", batch_size=None, strategy=None, check=False
):
    """Move a channel back to its previous version and roll its groups out to it."""
    extra = {
        "kiln_channel": channel,
        "kiln_group": group,
        "kiln_image": image or c.kiln.image,
        "kiln_to": to,
        "kiln_reason": reason,
        "kiln_rollout": _rollout_options(batch_size, strategy),
    }
    _rollout_playbook(c, "rollback", extra, check)


ns = Collection(
    build,
    test,
    promote,
    revoke,
    diff,
    prune,
    history,
    catalog_verify,
    catalog_export,
    catalog_import,
    pipeline,
    status,
    drift,
    report,
    up,
    down,
    rollout,
    rollback,
)
ns.configure(
    {
        "kiln": {
            "image": "web",
            "inventory": "inventories/local",
            "state_dir": str(ROOT / ".kiln"),
            "catalog": None,
            "test": {"scenario": "image", "timeout": 900},
        },
        "run": {"echo": True},
    }
)
