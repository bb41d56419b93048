# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fingerprint of a build: one hash over every input that can change the image.

Inputs are named (``template:web.pkr.hcl``, ``var:base_image``, ``file:cloud-init/user-data``,
``role:kiln.immutable.golden_image/tasks/main.yml``, ``base:docker.web``,
``packer``) and each one is hashed; the fingerprint hashes the sorted name/hash pairs, so it does not
depend on dict order, absolute paths or the machine. The catalog keeps the named hashes, which is what
``image_info`` diffs.

What the build reads is found the way Packer would: every attribute of the sources it runs and of the
provisioners and post-processors that apply, with ``path.root``, ``path.cwd`` (kiln runs Packer from
the template folder), variables and locals put in, that names an existing file or folder is an input
(a folder whole), and so is every argument of ``file()``, ``templatefile()`` and ``fileset()``. A path
that cannot be resolved before Packer runs is named in a warning and the folder it points into is hashed.
Ansible playbooks bring their whole folder, the roles they load and the ansible.cfg in force.

A sensitive value, and a file holding one, is hashed with HMAC-SHA256 under a secret kept per catalog
(:func:`catalog_key`), so a catalog's hashes cannot be matched against likely values.
"""

from __future__ import annotations

import configparser
import glob
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..common.errors import KilnError
from . import template as tm

# Variables kiln sets itself for every build: the version name changes each time by design.
KILN_VARIABLES = ("version",)
_ROLE_KEYS = ("include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role")
_PLAYBOOK_KEYS = ("import_playbook", "ansible.builtin.import_playbook")
_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".molecule", ".cache"}
# Attributes that name things inside the image or the build machine, never a file kiln's host reads.
_REMOTE_KEYS = {
    "destination",
    "inline",
    "inline_shebang",
    "execute_command",
    "remote_folder",
    "remote_file",
    "remote_path",
    "staging_directory",
    "staging_folder",
    "inventory_directory",
    "changes",
    "run_command",
    "extra_arguments",
    "environment_vars",
    "env",
    "tags",
    "labels",
    "only",
    "output",
    "output_directory",
    "except",
}
_ARG = r"(\"(?:[^\"\\]|\\.)*\"|[A-Za-z_][\w.-]*)"  # a quoted string or a bare reference
_FILE_FUNCTIONS = re.compile(
    r"\b(?:file|templatefile|filebase64|filemd5|filesha1|filesha256|filesha512|fileexists)\(\s*" + _ARG
)
_FILESET = re.compile(r"\bfileset\(\s*" + _ARG + r"\s*,\s*" + _ARG)
# A value known only when Packer runs is taken for a path (named in a warning, its folder hashed) when it
# looks like one or its attribute's name says it is one.
_PATH_SHAPED = re.compile(r"/|\.[A-Za-z0-9]{1,5}$")
_PATH_KEY = re.compile(r"(^|_)(file|files|dir|directory|path|paths|script|scripts|source|template)$")
_KEY_FILE = ".fingerprint-key"
# The build machine's own files (an SSH key, a CA bundle, a device): not what a template brings.
_SYSTEM = tuple(f"/{d}/" for d in ("proc", "sys", "dev", "etc", "usr", "bin", "sbin", "lib", "boot", "run"))


class FingerprintError(KilnError):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def keyed_file(key: bytes, path: str) -> str:
    mac = hmac.new(key, b"file\0", hashlib.sha256)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            mac.update(chunk)
    return "hmac:" + mac.hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def value_hash(name: str, value: Any, key: bytes | None = None) -> str:
    """A variable value's hash, salted with its name so equal values of two names differ; keyed
    (HMAC) when ``key`` is given, which every sensitive value is."""
    data = f"{name}\0{canonical(value)}".encode()
    return "hmac:" + hmac.new(key, data, hashlib.sha256).hexdigest() if key else sha256_bytes(data)


def combine(inputs: dict[str, str]) -> str:
    """The fingerprint of named input hashes (order-free)."""
    return sha256_bytes(canonical(sorted(inputs.items())).encode())


def catalog_key(catalog: Any) -> bytes:
    """The secret that keys sensitive hashes for one catalog, made on first use.

    A catalog store may keep it itself (``fingerprint_key()``, a row in a database catalog); a catalog
    file gets it in a 0600 file beside it.
    """
    own = getattr(getattr(catalog, "store", None), "fingerprint_key", None)
    if callable(own):
        return own()
    path = getattr(catalog, "path", None)
    if not path:
        raise FingerprintError("the catalog has no place to keep the key for sensitive values")
    key_path = f"{path}{_KEY_FILE}"
    try:
        with open(key_path, "rb") as handle:
            return bytes.fromhex(handle.read().decode().strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise FingerprintError(f"{key_path} does not hold a key; remove it to make a new one") from exc
    key = secrets.token_bytes(32)
    tmp = f"{key_path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    try:
        os.link(tmp, key_path)  # never replaces a key another process made meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return catalog_key(catalog)


@dataclass
class Fingerprint:
    value: str
    inputs: dict[str, str]
    base: dict = field(default_factory=dict)  # {"ref": ..., "id": ...} of the first docker source
    warnings: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)  # read whole, relative to the template


class _Inputs:
    """The named hashes of one build; paths are gathered first, so a file inside a folder that is
    hashed whole counts once, in its folder."""

    def __init__(self, root: str, key: bytes | None):
        self.root = root
        self.key = key
        self.hashes: dict[str, str] = {}
        self.warnings: list[str] = []
        self.files: set[str] = set()
        self.folders: dict[str, str] = {}  # path -> the prefix its files' input names take
        self.covered: set[str] = set()  # files hashed under a name of their own (template, var files)

    def name(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def own(self, label: str, path: str, secret: bool = False) -> None:
        if secret and self.key is None:
            raise FingerprintError(f"{path} holds a sensitive value: a key is needed to hash it")
        self.hashes[f"{label}:{self.name(path)}"] = (
            keyed_file(self.key, path) if secret else sha256_file(path)
        )
        self.covered.add(os.path.realpath(path))

    def path(self, path: str, prefix: str | None = None) -> bool:
        """Count ``path`` if it names an existing file or folder; whether it did. A folder counts whole:
        each of its files is an input (``file:<path>``, or ``prefix`` and the path inside it).

        A folder near the top of the file system (``/``, ``/tmp``) is a place on the build machine,
        not an input.
        """
        path = os.path.normpath(path)
        if path.startswith(_SYSTEM):
            return False
        if os.path.isfile(path):
            self.files.add(path)
            return True
        if os.path.isdir(path) and (path.count(os.sep) >= 3 or path == self.root):
            self.folders.setdefault(path, prefix or "")
            return True
        return False

    def fileset(self, folder: str, pattern: str) -> None:
        """The files ``fileset(folder, pattern)`` returns: a file added or removed counts too."""
        folder = os.path.normpath(folder)
        found = sorted(
            {hit for one in _braces(pattern) for hit in glob.glob(os.path.join(folder, one), recursive=True)}
        )
        entries = [(os.path.relpath(f, folder), sha256_file(f)) for f in found if os.path.isfile(f)]
        self.hashes[f"fileset:{self.name(folder)}:{pattern}"] = sha256_bytes(canonical(entries).encode())

    def unresolved(self, where: str, value: str, prefix: str) -> None:
        """A path known only when Packer runs: name it, and hash the folder it points into."""
        folder = os.path.normpath(
            os.path.join(self.root, prefix if prefix.endswith("/") else os.path.dirname(prefix))
        )
        while not os.path.isdir(folder) and folder != os.path.dirname(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder) or os.path.dirname(folder) == folder:
            folder = self.root  # nothing better to point at than the template itself
        self.warnings.append(
            f"{where}: {value!r} is not known before Packer runs; the folder it points into "
            f"({self.name(folder)}) is hashed whole"
        )
        self.path(folder)

    def finish(self) -> list[str]:
        """Hash what was gathered; the folders read whole, relative to the template."""
        folders = sorted(self.folders)
        kept = [f for f in folders if not any(f.startswith(o + os.sep) for o in folders if o != f)]
        for folder in kept:
            for full in _folder_files(folder):
                if os.path.realpath(full) in self.covered:
                    continue  # hashed under its own name (template or var file; keyed when it holds a secret)
                prefix = self.folders[folder]
                name = f"{prefix}{os.path.relpath(full, folder)}" if prefix else f"file:{self.name(full)}"
                self.hashes[name] = sha256_file(full)
        for file in sorted(self.files):
            inside = any(file.startswith(f + os.sep) for f in kept)
            if not inside and os.path.realpath(file) not in self.covered:
                self.hashes[f"file:{self.name(file)}"] = sha256_file(file)
        return [self.name(f) for f in kept]


def _braces(pattern: str) -> list[str]:
    """``a/{b,c}.sh`` as ``a/b.sh`` and ``a/c.sh``: fileset() patterns take braces, glob does not."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [out for part in match.group(1).split(",") for out in _braces(head + part + tail)]


def _folder_files(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".kiln-"))
        found += [
            os.path.join(dirpath, f)
            for f in sorted(filenames)
            if not f.endswith(".pyc") and os.path.isfile(os.path.join(dirpath, f))
        ]
    return found


def compute(
    template: tm.Template,
    variables: dict[str, Any],
    *,
    packer_version: str,
    key: bytes | None = None,
    image_id: Callable[[str], str | None] | None = None,
    var_files: Iterable[str] = (),
    sources: Iterable[str] | None = None,
    options: dict[str, Any] | None = None,
) -> Fingerprint:
    """Hash every input of a build of ``template`` with these resolved ``variables``.

    ``key`` keys the hashes of sensitive values (:func:`catalog_key`); ``image_id`` maps a docker image
    reference to its id (the base image); ``sources`` are the sources the build runs (after
    only/except); ``options`` are other settings that change the output.
    """
    root = template.path
    collected = _Inputs(root, key)
    inputs = collected.hashes
    sensitive = {n for n, v in template.variables.items() if v.sensitive}
    for file in [*template.files, *template.auto_var_files]:
        collected.own("template", file, secret=file in template.secret_files or _sets_secret(file, sensitive))
    for file in var_files:
        collected.own(
            "var-file", os.path.abspath(file), secret=_sets_secret(os.path.abspath(file), sensitive)
        )
    for name, value in variables.items():
        if name in KILN_VARIABLES:
            continue
        if name in sensitive and key is None:
            raise FingerprintError(f"variable {name} is sensitive: a key is needed to hash its value")
        inputs[f"var:{name}"] = value_hash(name, value, key if name in sensitive else None)
    inputs["packer"] = sha256_bytes(packer_version.encode())
    for option, value in sorted((options or {}).items()):
        if value:
            inputs[f"option:{option}"] = sha256_bytes(canonical(value).encode())
    wanted = set(sources) if sources is not None else set(template.sources)
    where = tm.scope(template, variables)
    base: dict = {}
    for ref in sorted(wanted):
        _referenced(template.source_configs(ref), where, collected, f"source {ref}")
        if ref.startswith("docker.") and ref in template.sources:
            base = (
                _base_image(ref, template.sources[ref], where, image_id, inputs, collected.warnings) or base
            )
    for local_name, value in template.locals.items():
        _referenced(value, where, collected, f"local.{local_name}")
    for plugin in template.plugins():
        if not _applies(plugin.config, wanted, where, collected.warnings, plugin):
            continue
        _referenced(plugin.config, where, collected, f"{plugin.kind} {plugin.type}")
        if plugin.type in ("ansible", "ansible-local"):
            _ansible_inputs(plugin, where, collected)
    folders = collected.finish()
    return Fingerprint(combine(inputs), inputs, base, collected.warnings, folders)


def _sets_secret(path: str, sensitive: set[str]) -> bool:
    if not sensitive or not path.endswith((".pkrvars.hcl", ".pkrvars.json")):
        return False
    return bool(sensitive & set(tm.read_var_file(path)))


def _base_image(ref, config, where, image_id, inputs, warnings) -> dict:
    image = tm.interpolate(config.get("image", ""), where)
    if not isinstance(image, str) or not image or tm.unresolved(image):
        warnings.append(f"source {ref}: cannot resolve its base image {image!r}; hashed as written")
        inputs[f"base:{ref}"] = sha256_bytes(str(image).encode())
        return {}
    found = image_id(image) if image_id else None
    if found is None:
        if not config.get("pull", True):
            raise FingerprintError(
                f"source {ref}: base image {image} is not in the local Docker engine and pull is "
                f"false; make it first (scripts/setup builds kiln/base:bookworm)",
                source=ref,
                image=image,
            )
        warnings.append(f"source {ref}: base image {image} is pulled at build time; hashed by name")
    inputs[f"base:{ref}"] = sha256_bytes((found or image).encode())
    return {"ref": image, "id": found}


def _referenced(
    value: Any, where: tm.Scope, collected: _Inputs, label: str, key: str = "", is_map: bool = False
) -> None:
    """Count every file or folder ``value`` names, once ``where`` is put in.

    python-hcl2 gives a map attribute as a dict and a nested block as a list of dicts: a map's keys
    may be host paths (docker ``volumes``), a block's keys are attribute names.
    """
    if isinstance(value, dict):
        for sub_key, sub in value.items():
            if is_map:
                _referenced(str(sub_key), where, collected, label, key)
            _referenced(sub, where, collected, label, str(sub_key), is_map=isinstance(sub, dict))
        return
    if isinstance(value, list):
        for sub in value:
            _referenced(sub, where, collected, label, key)
        return
    if not isinstance(value, str):
        return
    resolved = tm.interpolate(value, where)
    if not isinstance(resolved, str):  # a variable or local holding a list or a map
        _referenced(resolved, where, collected, label, key)
        return

    def argument(arg: str) -> Any:
        return tm.interpolate(json.loads(arg) if arg.startswith('"') else "${" + arg + "}", where)

    candidates = [argument(match.group(1)) for match in _FILE_FUNCTIONS.finditer(resolved)]
    for match in _FILESET.finditer(resolved):
        folder, pattern = argument(match.group(1)), argument(match.group(2))
        if isinstance(folder, str) and isinstance(pattern, str) and not tm.unresolved(folder + pattern):
            collected.fileset(os.path.join(where.cwd, folder), pattern)
        else:
            candidates.append(f"{folder}/{pattern}")
    if key not in _REMOTE_KEYS and not _FILE_FUNCTIONS.search(resolved) and not _FILESET.search(resolved):
        candidates.append(resolved)  # a file function's value is the file's content, not a path
    for candidate in candidates:
        if not isinstance(candidate, str) or not candidate:
            continue
        if tm.unresolved(candidate):
            if _PATH_SHAPED.search(candidate) or _PATH_KEY.search(key):
                collected.unresolved(
                    f"{label}: {key}" if key else label, value, candidate[: candidate.index("${")]
                )
            continue
        collected.path(os.path.join(where.cwd, candidate))


def _applies(config: dict, sources: set[str], where: tm.Scope, warnings: list, plugin: tm.Plugin) -> bool:
    """Whether a provisioner runs for these sources; an ``only``/``except`` known only when Packer runs
    counts it in (and says so): an input too many costs a build, one too few a stale image."""
    lists = {}
    for option in ("only", "except"):
        value = tm.interpolate(config.get(option) or [], where)
        if not isinstance(value, list) or any(tm.unresolved(str(v)) for v in value):
            warnings.append(
                f"{plugin.kind} {plugin.type}: {option} = {config.get(option)!r} is not known before "
                f"Packer runs; its inputs are counted for every source"
            )
            return True
        lists[option] = {tm.source_ref(v) for v in value}
    only, excepted = lists["only"], lists["except"]
    return (not only or bool(only & sources)) and not (sources and sources <= excepted)


def _ansible_inputs(plugin: tm.Plugin, where: tm.Scope, collected: _Inputs) -> None:
    """A playbook's whole folder, the roles it loads, and the ansible.cfg in force."""
    config = plugin.config
    playbooks = [config.get("playbook_file")] + list(_as_list(config.get("playbook_files")))
    env = _env_vars(config.get("ansible_env_vars") or [], where)
    cfg_file = env.get("ANSIBLE_CONFIG") or _cfg_in_force(where.cwd)
    if cfg_file and os.path.isfile(cfg_file):
        collected.path(cfg_file)
    resolver = _RoleResolver(env, cfg_file, collected)
    for role_path in _as_list(tm.interpolate(config.get("role_paths"), where)):
        if isinstance(role_path, str) and not tm.unresolved(role_path):
            resolver.role_paths.append(os.path.join(where.cwd, role_path))
    playbook_dir = tm.interpolate(config.get("playbook_dir"), where)
    if isinstance(playbook_dir, str) and not tm.unresolved(playbook_dir):
        resolver.role_paths.insert(0, os.path.join(where.cwd, playbook_dir, "roles"))
    for playbook in playbooks:
        playbook = tm.interpolate(playbook, where)
        if not isinstance(playbook, str) or not playbook or tm.unresolved(playbook):
            continue  # no playbook, or named in a warning by _referenced already
        playbook = os.path.normpath(os.path.join(where.cwd, playbook))
        collected.path(os.path.dirname(playbook))
        resolver.add_playbook(playbook)
    collected.warnings.extend(resolver.warnings)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _cfg_in_force(cwd: str) -> str | None:
    """The ansible.cfg Ansible would read: $ANSIBLE_CONFIG, else the one in the folder it runs from."""
    if os.environ.get("ANSIBLE_CONFIG"):
        return os.environ["ANSIBLE_CONFIG"]
    beside = os.path.join(cwd, "ansible.cfg")
    return beside if os.path.isfile(beside) else None


def _env_vars(pairs: list[str], where: tm.Scope) -> dict[str, str]:
    """The provisioner's ``ansible_env_vars`` as a dict; paths normalised so lookups are stable."""
    env = {}
    for pair in pairs:
        name, dummy, value = str(pair).partition("=")
        value = str(tm.interpolate(value, where))
        env[name] = os.path.normpath(os.path.join(where.cwd, value)) if name == "ANSIBLE_CONFIG" else value
    return env


class _RoleResolver:
    """Finds the playbooks and roles a playbook runs, as Ansible would look them up."""

    def __init__(self, env: dict[str, str], cfg_file: str | None, collected: _Inputs):
        self.collected = collected
        self.warnings: list[str] = []
        self.seen: set[str] = set()
        self.role_paths: list[str] = []
        self.collection_paths: list[str] = []
        cfg = _read_cfg(cfg_file)
        base = os.path.dirname(cfg_file or "") or collected.root
        for name, dest in (("roles_path", self.role_paths), ("collections_path", self.collection_paths)):
            value = env.get(f"ANSIBLE_{name.upper()}") or cfg.get(name) or cfg.get(name + "s")
            for part in (value or "").split(os.pathsep):
                if part:
                    dest.append(os.path.normpath(os.path.join(base, os.path.expanduser(part))))
        self.defaults = [os.path.expanduser("~/.ansible/roles"), "/etc/ansible/roles"]
        self.collection_paths += [
            os.path.expanduser("~/.ansible/collections"),
            "/usr/share/ansible/collections",
        ]

    def add_playbook(self, path: str) -> None:
        if path in self.seen:
            return
        self.seen.add(path)
        if not os.path.isfile(path):
            raise FingerprintError(
                f"the playbook {path} an ansible provisioner runs does not exist", path=path
            )
        self.collected.path(path)
        here = os.path.dirname(path)
        for play in _yaml(path) or []:
            if not isinstance(play, dict):
                continue
            for name in _PLAYBOOK_KEYS:
                if name in play:
                    self.add_playbook(os.path.join(here, str(play[name])))
            for role in play.get("roles") or []:
                self.add_role(role.get("role") or role.get("name") if isinstance(role, dict) else role, here)
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                self._tasks(play.get(section) or [], here)

    def _tasks(self, tasks: list, here: str) -> None:
        for task in tasks if isinstance(tasks, list) else []:
            if not isinstance(task, dict):
                continue
            for name in ("block", "rescue", "always"):
                self._tasks(task.get(name) or [], here)
            for name in _ROLE_KEYS:
                if isinstance(task.get(name), dict):
                    self.add_role(task[name].get("name"), here)

    def add_role(self, name: Any, here: str) -> None:
        if not name or not isinstance(name, str) or name in self.seen:
            return
        self.seen.add(name)
        folder = self.find_role(name, here)
        if folder is None:
            self.warnings.append(f"role {name} not found; its files are not in the fingerprint")
            self.collected.hashes[f"role:{name}"] = sha256_bytes(b"missing")
            return
        self.collected.path(folder, f"role:{name}/")
        meta = _yaml(os.path.join(folder, "meta", "main.yml")) or {}
        namespace = name.rsplit(".", 1)[0] if name.count(".") >= 2 else None
        for dep in meta.get("dependencies") or [] if isinstance(meta, dict) else []:
            dep_name = dep.get("role") or dep.get("name") if isinstance(dep, dict) else dep
            if namespace and isinstance(dep_name, str) and "." not in dep_name:
                dep_name = f"{namespace}.{dep_name}"  # a role of the same collection
            self.add_role(dep_name, here)
        for tasks_file in ("tasks/main.yml", "tasks/main.yaml"):
            self._tasks(_yaml(os.path.join(folder, tasks_file)) or [], here)

    def find_role(self, name: str, here: str) -> str | None:
        parts = name.split(".")
        if len(parts) >= 3:
            namespace, collection, role = parts[0], parts[1], ".".join(parts[2:])
            for base in [*self.collection_paths, os.path.join(here, "collections")]:
                for root in (os.path.join(base, "ansible_collections"), base):
                    folder = os.path.join(root, namespace, collection, "roles", role)
                    if os.path.isdir(folder):
                        return folder
            return None
        for base in [os.path.join(here, "roles"), *self.role_paths, *self.defaults]:
            folder = os.path.join(base, name)
            if os.path.isdir(folder):
                return folder
        return None


def _read_cfg(path: str | None) -> dict[str, str]:
    if not path or not os.path.isfile(path):
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path)
    except configparser.Error:
        return {}
    return dict(parser["defaults"]) if parser.has_section("defaults") else {}


def _yaml(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise FingerprintError(f"cannot read {path} to find the roles it runs: {exc}", path=path) from exc
