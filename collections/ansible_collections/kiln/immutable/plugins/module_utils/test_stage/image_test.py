# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image test stage: run a Molecule scenario against one catalog version and record the result.

A scenario receives the candidate through the environment, so a user's own scenario gets the
same contract as kiln's ``image`` scenario:

    KILN_TEST_VERSION   the version under test ("web/7"; what /version must answer)
    KILN_TEST_IMAGE     the Docker image of that version (its image id)
    KILN_TEST_INSTANCE  a container name unique to this run (kiln removes it afterwards)
    KILN_TEST_PACKAGES  a JSON file {package: version} captured at build time ("" when unknown)
    KILN_TEST_REPORT    where the scenario writes {"check": ..., "msg": ...} when a check fails

The result (pass or fail, duration, log, the failed check) is appended to the version in the
catalog, where the promotion policy reads it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from ..common.errors import KilnError
from ..common.files import private_dirs

DEFAULT_SCENARIO = "image"
DEFAULT_TIMEOUT_S = 900.0

_TASK = re.compile(r"^TASK \[(?P<name>.*)\]")
_FAILED = re.compile(r"^(fatal|failed): \[")
_INSTANCE = re.compile(r"^# instance (\S+)$", re.M)  # the line run_molecule writes first


class ImageTestError(KilnError):
    """The test could not be started (unknown version, no image, no Molecule): nothing recorded."""


@dataclass
class Candidate:
    """What a scenario tests: one catalog version and its Docker image."""

    ref: str
    image: str
    packages: dict = field(default_factory=dict)


@dataclass
class TestOutcome:
    """The result of one test stage run, as recorded on the version."""

    ref: str
    scenario: str
    passed: bool
    duration_s: float
    log_path: str | None
    check: str | None = None  # the check (task) that failed, when one did
    msg: str | None = None
    rc: int | None = None
    skipped: bool = False  # an earlier result was reused, nothing ran
    recorded_at: str | None = None

    def details(self) -> dict:
        return {"scenario": self.scenario, "check": self.check, "msg": self.msg, "rc": self.rc}

    def summary(self) -> str:
        text = f"{self.ref} {'passed' if self.passed else 'FAILED'} scenario {self.scenario!r}"
        if self.skipped:
            text += f" (recorded at {self.recorded_at}; not run again)"
        elif self.log_path:
            text += f" in {self.duration_s:.1f}s"
        if not self.passed:
            text += f": check failed: {self.check}" if self.check else ""
            text += f": {self.msg}" if self.msg else ""
        if self.log_path:
            text += f" (log: {self.log_path})"
        return text

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- packages


def parse_dpkg(text: str) -> dict[str, str]:
    """Installed packages from dpkg-query output, as {name: version}.

    Reads ``--showformat='${db:Status-Abbrev} ${Package} ${Version}\\n'`` (packages that are not
    installed are left out) and the shorter ``'${Package} ${Version}\\n'``, tabs or spaces.
    """
    packages: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            status, name, version = parts
            # the second letter of the abbreviation is the current state: "i" = installed
            if len(status) < 2 or status[1] != "i":
                continue
        elif len(parts) == 2:
            name, version = parts
        else:
            continue
        packages[name] = version
    return packages


def package_drift(expected: dict, actual: dict) -> list[str]:
    """Every difference between the catalog's package list and an image's, one readable line each."""
    drift = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if want == got:
            continue
        if got is None:
            drift.append(f"{name} {want} is in the catalog but not installed")
        elif want is None:
            drift.append(f"{name} {got} is installed but not in the catalog")
        else:
            drift.append(f"{name} is {got}, the catalog says {want}")
    return drift


# ---------------------------------------------------------------------------- candidate


def candidate(
    catalog, version: str | None = None, channel: str | None = None, image: str | None = None
) -> Candidate:
    """The catalog version to test: ``version`` ("web/7") or what ``channel`` of ``image`` points at."""
    if bool(version) == bool(channel):
        raise ImageTestError("the test stage needs exactly one of version (e.g. web/7) or channel (e.g. dev)")
    if channel:
        if not image:
            raise ImageTestError(f"testing channel {channel!r} needs the image name (e.g. web)")
        found = catalog.channel_version(image, channel)
        if found is None:
            raise ImageTestError(f"channel {channel!r} of image {image!r} points at no version")
    else:
        found = catalog.get(version, image)
    docker = (found.artifacts or {}).get("docker") or {}
    ref = docker.get("image_id") or docker.get("tag")
    if not ref:
        raise ImageTestError(f"version {found.ref} has no Docker image in the catalog (artifacts.docker)")
    return Candidate(ref=found.ref, image=ref, packages=dict(found.packages or {}))


def previous_result(catalog, ref: str, scenario: str) -> dict | None:
    """The newest recorded result of ``scenario`` on version ``ref``, or None."""
    for result in reversed(catalog.get(ref).tests or []):
        if (result.get("details") or {}).get("scenario") == scenario:
            return result
    return None


# ---------------------------------------------------------------------------- Molecule


def molecule_command() -> str:
    """The molecule beside the running interpreter (the venv), else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "molecule")
    found = beside if os.access(beside, os.X_OK) else shutil.which("molecule")
    if not found:
        raise ImageTestError(
            "molecule is not installed: pip install 'molecule>=25.1' (scripts/setup installs it into .venv)"
        )
    return found


def scenario_env(cand: Candidate, instance: str, workdir: str) -> dict[str, str]:
    """The environment a scenario runs in: the candidate, a private Molecule work folder."""
    packages = ""
    if cand.packages:
        packages = os.path.join(workdir, "packages.json")
        with open(packages, "w", encoding="utf-8") as handle:
            json.dump(cand.packages, handle, sort_keys=True)
    bindir = os.path.dirname(sys.executable)
    return {
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KILN_TEST_VERSION": cand.ref,
        "KILN_TEST_IMAGE": cand.image,
        "KILN_TEST_INSTANCE": instance,
        "KILN_TEST_PACKAGES": packages,
        "KILN_TEST_REPORT": os.path.join(workdir, "report.json"),
        # one folder per run, so two runs of one scenario never share Molecule's state
        "MOLECULE_EPHEMERAL_DIRECTORY": os.path.join(workdir, "molecule"),
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
        "NO_COLOR": "1",
    }


def run_molecule(
    project_dir: str,
    scenario: str,
    env: dict[str, str],
    log_path: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int | None, list[str]]:
    """``molecule test -s scenario`` in ``project_dir``; the full output goes to ``log_path``.

    Returns (rc, output lines); rc is None when the run timed out and was stopped.
    """
    cmd = [molecule_command(), "test", "--scenario-name", scenario, "--no-command-borders", "--no-report"]
    lines: list[str] = []
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"$ cd {project_dir} && {' '.join(cmd)}\n")
        if env.get("KILN_TEST_INSTANCE"):  # the run's container, named before Molecule says anything
            log.write(f"# instance {env['KILN_TEST_INSTANCE']}\n")  # read by logged_instances
        # its own session: on a timeout or Ctrl-C the whole tree (ansible-playbook too) is stopped
        proc = subprocess.Popen(
            cmd,
            cwd=project_dir,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        # a silent, stuck run must time out too, so the clock runs beside the reading loop
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _stop(proc)

        watchdog = threading.Timer(timeout_s, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            for line in proc.stdout or ():
                log.write(line)
                lines.append(line.rstrip("\n"))
                if on_line:
                    on_line(line.rstrip("\n"))
            rc = proc.wait()
        except BaseException:
            _stop(proc)
            raise
        finally:
            watchdog.cancel()
        if timed_out.is_set():
            log.write(f"kiln: stopped after the {timeout_s:g}s timeout\n")
            return None, lines
        return rc, lines


def logged_instances(log_text: str) -> list[str]:
    """The containers a test run's log names as its own (the line run_molecule writes first)."""
    return _INSTANCE.findall(log_text)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def failure_from_output(lines: list[str]) -> tuple[str | None, str | None]:
    """(check, message) from Molecule's output when the scenario wrote no report: the failed task."""
    task = None
    for line in lines:
        m = _TASK.match(line)
        if m:
            task = m.group("name")
        elif _FAILED.match(line):
            msg = None
            found = re.search(r'"msg": "((?:[^"\\]|\\.)*)"', line)
            if found:
                msg = found.group(1).encode().decode("unicode_escape", errors="replace")
            return task, msg
    for line in reversed(lines):
        if "ERROR" in line or "CRITICAL" in line:
            return None, line.strip()
    return None, None


def _remove_instance(instance: str) -> None:
    """Remove the run's container and data volume if Molecule could not (killed, timed out)."""
    from ..common.docker_api import DockerUnavailable, client

    try:
        engine = client()
    except DockerUnavailable:
        return
    import docker.errors

    # the container first: its volume cannot go while it is in use
    for getter, name in ((engine.containers.get, instance), (engine.volumes.get, f"{instance}-data")):
        try:
            getter(name).remove(force=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError:
            pass


def run_image_test(
    catalog,
    *,
    version: str | None = None,
    channel: str | None = None,
    image: str | None = None,
    scenario: str = DEFAULT_SCENARIO,
    project_dir: str,
    state_dir: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    skip_passed: bool = False,
    check_mode: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> TestOutcome:
    """Test one version with a Molecule scenario and record the result on it.

    With ``skip_passed`` a version whose newest result for ``scenario`` is a pass is not run again;
    that result is returned (``skipped``); a failed one is tested again. In check mode nothing runs
    and nothing is recorded.
    """
    cand = candidate(catalog, version=version, channel=channel, image=image)
    layouts = (os.path.join("extensions", "molecule", scenario), os.path.join("molecule", scenario))
    if not any(os.path.isfile(os.path.join(project_dir, d, "molecule.yml")) for d in layouts):
        raise ImageTestError(
            f"no Molecule scenario {scenario!r} in {project_dir} "
            f"(looked for extensions/molecule/{scenario}/molecule.yml and molecule/{scenario}/molecule.yml)"
        )
    earlier = previous_result(catalog, cand.ref, scenario) if skip_passed else None
    if earlier is not None and earlier.get("passed"):
        return TestOutcome(
            ref=cand.ref,
            scenario=scenario,
            passed=True,
            duration_s=float(earlier.get("duration_s") or 0.0),
            log_path=earlier.get("log_path"),
            rc=(earlier.get("details") or {}).get("rc"),
            skipped=True,
            recorded_at=earlier.get("at"),
        )
    if check_mode:
        return TestOutcome(ref=cand.ref, scenario=scenario, passed=True, duration_s=0.0, log_path=None)

    image_name, name = cand.ref.split("/", 1)
    run_id = f"{image_name}-{name}-{uuid.uuid4().hex[:8]}"
    instance = f"kiln-test-{run_id}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = os.path.join(state_dir, "logs")
    workdir = os.path.join(state_dir, "tests", run_id)
    private_dirs(logs)
    private_dirs(workdir)
    log_path = os.path.join(logs, f"test-{image_name}-{name}-{scenario}-{stamp}.log")

    started = time.monotonic()
    try:
        env = scenario_env(cand, instance, workdir)
        rc, lines = run_molecule(project_dir, scenario, env, log_path, timeout_s, on_line)
        duration = round(time.monotonic() - started, 2)
        check, msg = _read_report(env["KILN_TEST_REPORT"])
        if rc is None:
            msg = f"timed out after {timeout_s:g}s"
        elif rc != 0 and check is None:
            check, msg = failure_from_output(lines)
            msg = msg or f"molecule exited {rc}"
    finally:
        _remove_instance(instance)
        shutil.rmtree(workdir, ignore_errors=True)
    outcome = TestOutcome(
        ref=cand.ref,
        scenario=scenario,
        passed=rc == 0,
        duration_s=duration,
        log_path=log_path,
        check=check,
        msg=msg,
        rc=rc,
    )
    recorded = catalog.record_test(
        cand.ref, passed=outcome.passed, duration_s=duration, log_path=log_path, details=outcome.details()
    )
    outcome.recorded_at = recorded.get("at")
    return outcome


def _read_report(path: str) -> tuple[str | None, str | None]:
    try:
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        return None, None
    return report.get("check"), report.get("msg")
