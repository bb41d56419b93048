# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Packer runner: find Packer and its version, validate, build with ``-machine-readable``.

Packer's machine-readable output is one message a line, ``timestamp,target,type,data...``, with commas
inside data escaped as ``%!(PACKER_COMMA)`` and newlines as a literal ``\\n``. :class:`BuildStream` folds
those messages into ui lines, artifacts (several per build, several builds per run) and errors while
Packer runs; :func:`run_packer` streams them to a log file and a progress callback, enforces a timeout
and passes SIGINT/SIGTERM on so Packer can clean up after itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..common.errors import KilnError
from ..common.files import private_dirs
from ..common.paths import state_dir
from .leftovers import BuildRecord

HOW_TO_INSTALL = (
    "install Packer (Debian: apt-get install packer; other systems: "
    "https://developer.hashicorp.com/packer/install) or set the packer_path option"
)
MODERN = (1, 7)  # plugins, `packer init` and the `packer { required_plugins }` block
TAIL_LINES = 40
GRACE_S = 60.0  # how long Packer gets to clean up after an interrupt before it is killed

_ESCAPES = (("%!(PACKER_COMMA)", ","), ("\\n", "\n"), ("\\r", "\r"))
_CONTAINER_ID = re.compile(r"Container ID: ([0-9a-f]{12,64})\b")


class PackerError(KilnError):
    """Packer failed: ``details`` carries cmd, rc, stdout (the tail of the output) and stderr."""


class PackerNotFound(PackerError):
    pass


class PackerTimeout(PackerError):
    pass


class PackerInterrupted(PackerError):
    pass


# ---------------------------------------------------------------------------------------------- version


@dataclass(frozen=True)
class PackerInfo:
    path: str
    version: str

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", self.version)[:3])

    @property
    def modern(self) -> bool:
        """Packer 1.7 or newer: external plugins, ``packer init``, ``required_plugins``."""
        return self.version_tuple >= MODERN


def find_packer(path: str | None = None) -> str:
    """The Packer executable: ``path`` when given, else ``packer`` on PATH; else PackerNotFound."""
    found = shutil.which(path) if path else shutil.which("packer")
    if not found:
        where = f"'{path}' is not an executable" if path else "no 'packer' on PATH"
        raise PackerNotFound(f"Packer not found: {where}; {HOW_TO_INSTALL}")
    return os.path.realpath(found)


def packer_info(path: str | None = None) -> PackerInfo:
    """Find Packer and ask its version.

    Cached in memory and in the state folder per executable, size and modification time, so the
    no-op path of a build (a fresh process each time) does not start Packer at all.
    """
    exe = find_packer(path)
    stat = os.stat(exe)
    key = f"{exe}:{stat.st_size}:{stat.st_mtime_ns}"
    cache_file = os.path.join(state_dir(), "packer-version.json")
    try:
        with open(cache_file, encoding="utf-8") as handle:
            cached = json.load(handle).get(key)
        if cached:
            return PackerInfo(exe, cached)
    except (OSError, ValueError, AttributeError):
        pass
    info = _packer_info(exe, stat.st_mtime_ns)
    try:
        private_dirs(os.path.dirname(cache_file))
        tmp = f"{cache_file}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({key: info.version}, handle)
        os.replace(tmp, cache_file)  # atomic: concurrent builds never read half a file
    except OSError:
        pass  # a read-only state folder only costs a `packer version` per run
    return info


@functools.lru_cache(maxsize=8)
def _packer_info(exe: str, _mtime: int) -> PackerInfo:
    cmd = [exe, "version", "-machine-readable"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PackerNotFound(f"cannot run {exe}: {exc}; {HOW_TO_INSTALL}", cmd=cmd) from exc
    version = parse_version(done.stdout)
    if done.returncode != 0 or not version:
        raise PackerError(
            f"cannot read the Packer version from `{' '.join(cmd)}`",
            cmd=cmd,
            rc=done.returncode,
            stdout=done.stdout[-2000:],
            stderr=done.stderr[-2000:],
        )
    return PackerInfo(exe, version)


def parse_version(output: str) -> str | None:
    """The version from ``packer version -machine-readable`` (or plain ``Packer v1.6.6``) output."""
    for line in output.splitlines():
        message = parse_line(line)
        if message and message.type == "version" and message.data:
            return message.data[0].lstrip("v")
    match = re.search(r"Packer v?(\d+\.\d+\.\d+)", output)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Message:
    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]


def unescape(text: str) -> str:
    for escaped, plain in _ESCAPES:
        text = text.replace(escaped, plain)
    return text


def parse_line(line: str) -> Message | None:
    """One machine-readable line as a Message; None for anything else (plain output, blank lines)."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit() or not parts[2]:
        return None
    return Message(int(parts[0]), parts[1], parts[2], tuple(unescape(p) for p in parts[3:]))


@dataclass
class Artifact:
    build: str
    index: int
    builder_id: str = ""
    id: str = ""
    string: str = ""
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"builder_id": self.builder_id, "id": self.id, "string": self.string, "files": self.files}


@dataclass
class BuildStream:
    """What a ``packer build -machine-readable`` run said so far, fed one message at a time."""

    ui: list[tuple[str, str]] = field(default_factory=list)  # (say|message|error, text)
    artifacts: dict[str, list[Artifact]] = field(default_factory=dict)  # build name -> artifacts
    errors: list[tuple[str, str]] = field(default_factory=list)  # (build name or "", text)
    error_count: int | None = None
    container_ids: list[str] = field(default_factory=list)  # docker builder containers seen

    def feed(self, message: Message) -> None:
        kind, data = message.type, message.data
        if kind == "ui" and len(data) >= 2:
            text = data[1]
            self.ui.append((data[0], text))
            found = _CONTAINER_ID.search(text)
            if found and found.group(1) not in self.container_ids:
                self.container_ids.append(found.group(1))
        elif kind == "artifact" and len(data) >= 2:
            self._artifact(message.target, int(data[0]), data[1], data[2:])
        elif kind == "error-count" and data:
            self.error_count = int(data[0])
        elif kind == "error" and data:
            self.errors.append((message.target, data[0]))

    def _artifact(self, build: str, index: int, key: str, values: tuple[str, ...]) -> None:
        artifacts = self.artifacts.setdefault(build, [])
        while len(artifacts) <= index:
            artifacts.append(Artifact(build, len(artifacts)))
        artifact = artifacts[index]
        if key == "builder-id":
            artifact.builder_id = ",".join(values)
        elif key == "id":
            artifact.id = ",".join(values)
        elif key == "string":
            artifact.string = ",".join(values)
        elif key == "file" and len(values) >= 2:
            artifact.files.append(",".join(values[1:]))

    def feed_lines(self, lines: Iterable[str]) -> BuildStream:
        for line in lines:
            message = parse_line(line)
            if message:
                self.feed(message)
        return self

    @property
    def failed_builds(self) -> list[str]:
        return [build for build, dummy in self.errors if build]

    def summary(self) -> str:
        """The errors Packer reported, one line each (what a failure message leads with)."""
        seen: list[str] = []
        for build, text in self.errors:
            line = f"{build}: {text}" if build else text
            if line not in seen:
                seen.append(line)
        return "; ".join(seen)


def progress_text(message: Message) -> str | None:
    """The human line for a ui message (what ``invoke build`` shows), None for the rest."""
    if message.type != "ui" or len(message.data) < 2:
        return None
    return message.data[1].strip("\n") or None


# ---------------------------------------------------------------------------------------------- running


@dataclass
class RunResult:
    cmd: list[str]
    rc: int
    stream: BuildStream
    log_path: str
    duration_s: float
    tail: list[str]  # the last lines of readable output
    stderr: str
    stopped: str | None = None  # why kiln stopped Packer: "timeout", "SIGINT", "SIGTERM"


def _display_cmd(cmd: list[str], secrets: Iterable[str]) -> list[str]:
    hidden = [s for s in secrets if s]
    out = []
    for arg in cmd:
        for secret in hidden:
            arg = arg.replace(secret, "********")
        out.append(arg)
    return out


def run_packer(
    args: list[str],
    *,
    info: PackerInfo,
    cwd: str,
    log_path: str,
    timeout_s: float | None = None,
    on_progress: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    secrets: Iterable[str] = (),
    check: bool = True,
    record: BuildRecord | None = None,
) -> RunResult:
    """Run ``packer <args> -machine-readable`` streaming its output; PackerError unless it succeeds.

    Every line goes to ``log_path`` as it arrives (the full log, kept after the run). ``on_progress``
    receives each ui line. SIGINT and SIGTERM received meanwhile are passed on to Packer, which then
    cleans up; after ``timeout_s`` Packer is interrupted the same way. ``secrets`` are masked in the
    command kept in errors and in the log. ``record`` (a leftovers.BuildRecord) notes Packer's process
    and its build containers, and guards Packer against kiln's sudden death.
    """
    cmd = [info.path, *args]
    shown = _display_cmd(cmd, secrets)
    private_dirs(os.path.dirname(log_path) or ".")
    stream = BuildStream()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    stderr_lines: deque[str] = deque(maxlen=200)
    started = time.monotonic()
    stop = _Stopper()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"# kiln: {' '.join(shown)} (cwd {cwd})\n")
        log.flush()
        try:
            # Own session: a terminal's Ctrl-C reaches Packer once, through kiln, not twice.
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                env={**_environment(), **(env or {}), "PACKER_NO_COLOR": "1", "CHECKPOINT_DISABLE": "1"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
        except OSError as exc:
            raise PackerNotFound(f"cannot run {info.path}: {exc}; {HOW_TO_INSTALL}", cmd=shown) from exc
        stop.attach(proc)
        guard = record.started(proc, GRACE_S, log_path) if record is not None else None
        log_lock = threading.Lock()

        def write(line: str) -> None:
            with log_lock:
                log.write(line if line.endswith("\n") else line + "\n")
                log.flush()

        def read_stderr() -> None:
            for line in proc.stderr:
                write("stderr: " + line)
                stderr_lines.append(line.rstrip("\n"))
                tail.append(line.rstrip("\n"))

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        watchdog = threading.Timer(timeout_s, stop.interrupt, args=("timeout",)) if timeout_s else None
        previous = _forward_signals(stop)
        try:
            if watchdog:
                watchdog.daemon = True
                watchdog.start()
            for line in proc.stdout:
                write(line)
                message = parse_line(line)
                if message is None:
                    if line.strip():
                        tail.append(line.rstrip("\n"))
                    continue
                stream.feed(message)
                if record is not None and stream.container_ids:
                    record.container(stream.container_ids[-1])
                text = progress_text(message)
                if text:
                    tail.append(text)
                    if on_progress:
                        on_progress(text)
            rc = proc.wait()
            reader.join(timeout=10)
        finally:
            if watchdog:
                watchdog.cancel()
            _restore_signals(previous)
            if proc.poll() is None:  # an exception in this loop: do not leave Packer running alone
                stop.interrupt("error")
                proc.wait()
            if guard is not None:
                guard.kill()
                guard.wait()
    result = RunResult(
        shown,
        rc,
        stream,
        log_path,
        time.monotonic() - started,
        list(tail),
        "\n".join(stderr_lines),
        stop.reason,
    )
    if check:
        raise_for(result)
    return result


def _environment() -> dict[str, str]:
    """Packer's environment: ours, plus this Python's bin folder when ``ansible-playbook`` is not on PATH.

    Packer's ansible provisioner runs ``ansible-playbook``; from an unactivated virtualenv it is only
    next to the interpreter running kiln.
    """
    env = dict(os.environ)
    if not shutil.which("ansible-playbook", path=env.get("PATH")):
        here = os.path.dirname(sys.executable)
        if os.path.exists(os.path.join(here, "ansible-playbook")):
            env["PATH"] = os.pathsep.join(p for p in (env.get("PATH"), here) if p)
    return env


def raise_for(result: RunResult) -> None:
    """PackerError (or Timeout/Interrupted) naming what went wrong, unless the run succeeded."""
    reason = result.stopped
    if result.rc == 0 and reason is None and not result.stream.errors:
        return
    details = {
        "cmd": result.cmd,
        "rc": result.rc,
        "stdout": "\n".join(result.tail),
        "stderr": result.stderr[-4000:],
        "log_path": result.log_path,
    }
    what = " ".join(result.cmd[1:2])
    if reason == "timeout":
        raise PackerTimeout(
            f"packer {what} timed out after {result.duration_s:.0f}s and was stopped", **details
        )
    if reason:
        how = "Packer cleaned up" if result.rc >= 0 else f"Packer was killed after {GRACE_S:.0f}s to clean up"
        raise PackerInterrupted(f"packer {what} was interrupted ({reason}); {how}", **details)
    cause = result.stream.summary() or _last_error(result) or f"exit code {result.rc}"
    said = _last_error(result)
    if said and said not in cause:
        cause += f" (last error output: {said})"
    raise PackerError(f"packer {what} failed: {cause}", **details)


def _last_error(result: RunResult) -> str:
    """The last error line a step printed, leaving out Packer's own summary lines."""
    for level, text in reversed(result.stream.ui):
        line = text.strip()
        if level == "error" and line and not line.startswith(("Build '", "==> Some builds", "--> ")):
            return line.removeprefix("==> ")
    lines = [line.strip() for line in [*result.stderr.splitlines(), *result.tail] if line.strip()]
    errors = [line for line in lines if line.startswith(("Error", "* ", "error"))]
    return " ".join(dict.fromkeys(errors or lines[:6]))  # Packer repeats itself per block


class _Stopper:
    """Interrupts Packer at most once politely (SIGINT or the signal received), then kills it.

    Signals go to Packer's whole process group: Packer 1.6 runs under a wrapper process that does not
    pass signals on, and its plugins are child processes that hold the output pipe open.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.reason: str | None = None
        self._lock = threading.Lock()

    def attach(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def interrupt(self, reason: str, signum: int = signal.SIGINT) -> None:
        with self._lock:
            if self.reason is not None or self.proc is None or self.proc.poll() is not None:
                return
            self.reason = reason
            proc = self.proc
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            return

        def kill_late() -> None:
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        threading.Thread(target=kill_late, daemon=True).start()


def _forward_signals(stop: _Stopper) -> dict:
    """Pass SIGINT/SIGTERM on to Packer (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        name = signal.Signals(signum).name

        def handler(received, _frame, name=name):
            stop.interrupt(name, received)

        previous[signum] = signal.signal(signum, handler)
    return previous


def _restore_signals(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------------- commands


@contextlib.contextmanager
def var_args(
    variables: dict, var_files: Iterable[str] = (), sensitive: Iterable[str] = ()
) -> Iterator[list[str]]:
    """``-var-file`` and ``-var`` arguments while the block runs; values as Packer reads them.

    Every local user can read a command line (``ps``, ``/proc/*/cmdline``), so the values of the
    ``sensitive`` variables never go there: they go to a var file only this user can read, in a
    private folder outside the state folder, removed when the block ends. It comes after the other
    var files, so it takes precedence over them as ``-var`` would.
    """
    hidden = set(sensitive) & set(variables)
    args = [f"-var-file={path}" for path in var_files]
    args += [f"-var={name}={cli_value(variables[name])}" for name in sorted(set(variables) - hidden)]
    if not hidden:
        yield args
        return
    folder = tempfile.mkdtemp(prefix="kiln-vars-")  # mode 0700
    try:
        path = os.path.join(folder, "sensitive.pkrvars.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({name: variables[name] for name in sorted(hidden)}, handle)
        yield [*args, f"-var-file={path}"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cli_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)  # JSON is valid HCL for lists and maps
    return "" if value is None else str(value)


def filter_args(only: Iterable[str] = (), except_: Iterable[str] = ()) -> list[str]:
    args = []
    if only:
        args.append("-only=" + ",".join(only))
    if except_:
        args.append("-except=" + ",".join(except_))
    return args
