# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fingerprint of a build: one hash over every input that can change the image.

Inputs are named (``template:web.pkr.hcl``, ``var:base_image``, ``playbook:playbook.yml``,
``role:kiln.immutable.golden_image/tasks/main.yml``, ``base:docker.web``, ``packer``) and each one is
hashed; the fingerprint hashes the sorted name/hash pairs, so it does not depend on dict order, absolute
paths or the machine. The catalog keeps the named hashes, which is what ``image_info`` diffs.
Variable values are hashed with their name; a sensitive value never appears in clear anywhere.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..common.errors import KilnError
from .template import Template, interpolate, unresolved

# Variables kiln sets itself for every build: the version name changes each time by design.
KILN_VARIABLES = ("version",)
_ROLE_KEYS = ("include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role")
_PLAYBOOK_KEYS = ("import_playbook", "ansible.builtin.import_playbook")
_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".molecule", ".cache"}


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


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def value_hash(name: str, value: Any) -> str:
    """A variable value's hash, salted with its name so equal secrets of two names differ."""
    return sha256_bytes(f"{name}\0{canonical(value)}".encode())


def combine(inputs: dict[str, str]) -> str:
    """The fingerprint of named input hashes (order-free)."""
    return sha256_bytes(canonical(sorted(inputs.items())).encode())


@dataclass
class Fingerprint:
    value: str
    inputs: dict[str, str]
    base: dict = field(default_factory=dict)  # {"ref": ..., "id": ...} of the first docker source
    warnings: list[str] = field(default_factory=list)


def compute(
    template: Template,
    variables: dict[str, Any],
    *,
    packer_version: str,
    image_id: Callable[[str], str | None] | None = None,
    var_files: Iterable[str] = (),
    sources: Iterable[str] | None = None,
    options: dict[str, Any] | None = None,
) -> Fingerprint:
    """Hash every input of a build of ``template`` with these resolved ``variables``.

    ``image_id`` maps a docker image reference to its id (the base image); ``sources`` are the
    sources the build runs (after only/except); ``options`` are other settings that change the output.
    """
    inputs: dict[str, str] = {}
    warnings: list[str] = []
    root = template.path
    for file in [*template.files, *template.auto_var_files]:
        inputs[f"template:{os.path.relpath(file, root)}"] = sha256_file(file)
    for file in var_files:
        inputs[f"var-file:{os.path.basename(file)}"] = sha256_file(file)
    for name, value in variables.items():
        if name not in KILN_VARIABLES:
            inputs[f"var:{name}"] = value_hash(name, value)
    inputs["packer"] = sha256_bytes(packer_version.encode())
    for key, value in sorted((options or {}).items()):
        if value:
            inputs[f"option:{key}"] = sha256_bytes(canonical(value).encode())
    wanted = set(sources) if sources is not None else set(template.sources)
    base: dict = {}
    for ref in sorted(wanted):
        config = template.sources.get(ref)
        if config is None or not ref.startswith("docker."):
            continue
        image = interpolate(config.get("image", ""), variables, root)
        if not image or unresolved(image):
            warnings.append(f"source {ref}: cannot resolve its base image {image!r}; hashed as written")
            inputs[f"base:{ref}"] = sha256_bytes(str(image).encode())
            continue
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
        base = base or {"ref": image, "id": found}
    for provisioner in template.provisioners("ansible") + template.provisioners("ansible-local"):
        if not _applies(provisioner.config, wanted):
            continue
        _ansible_inputs(provisioner.config, variables, root, inputs, warnings)
    return Fingerprint(combine(inputs), inputs, base, warnings)


def _applies(config: dict, sources: set[str]) -> bool:
    only = set(config.get("only") or [])
    excepted = set(config.get("except") or [])
    return (not only or bool(only & sources)) and not (sources and sources <= excepted)


def _ansible_inputs(config: dict, variables: dict, root: str, inputs: dict, warnings: list) -> None:
    playbook = interpolate(config.get("playbook_file", ""), variables, root)
    if not playbook or unresolved(playbook):
        warnings.append(f"ansible provisioner: cannot resolve playbook_file {playbook!r}; hashed as written")
        inputs[f"playbook:{playbook}"] = sha256_bytes(str(playbook).encode())
        return
    playbook = os.path.normpath(os.path.join(root, playbook))
    env = _env_vars(config.get("ansible_env_vars") or [], variables, root)
    resolver = _RoleResolver(os.path.dirname(playbook), env, root)
    for extra in ("galaxy_file", "inventory_file", "ansible_cfg"):
        value = config.get(extra)
        if value:
            path = os.path.normpath(os.path.join(root, interpolate(value, variables, root)))
            if os.path.isfile(path):
                inputs[f"{extra}:{os.path.relpath(path, root)}"] = sha256_file(path)
    config_file = env.get("ANSIBLE_CONFIG")
    if config_file and os.path.isfile(config_file):
        inputs[f"ansible_cfg:{_short(config_file, root)}"] = sha256_file(config_file)
    resolver.add_playbook(playbook, inputs)
    warnings.extend(resolver.warnings)


def _short(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return rel if not rel.startswith("..") else os.path.basename(path)


def _env_vars(pairs: list[str], variables: dict, root: str) -> dict[str, str]:
    """The provisioner's ``ansible_env_vars`` as a dict; paths normalised so lookups are stable."""
    env = {}
    for pair in pairs:
        key, dummy, value = str(pair).partition("=")
        value = interpolate(value, variables, root)
        env[key] = os.path.normpath(value) if key == "ANSIBLE_CONFIG" else value
    return env


class _RoleResolver:
    """Finds the files of a playbook and of every role it runs, as Ansible would look them up."""

    def __init__(self, playbook_dir: str, env: dict[str, str], root: str):
        self.root = root
        self.warnings: list[str] = []
        self.seen: set[str] = set()
        self.role_paths = [os.path.join(playbook_dir, "roles")]
        self.collection_paths: list[str] = []
        cfg = _read_cfg(env.get("ANSIBLE_CONFIG") or os.environ.get("ANSIBLE_CONFIG"))
        for key, dest in (("roles_path", self.role_paths), ("collections_path", self.collection_paths)):
            value = env.get(f"ANSIBLE_{key.upper()}") or cfg.get(key) or cfg.get(key + "s")
            base = os.path.dirname(env.get("ANSIBLE_CONFIG") or "") or playbook_dir
            for part in (value or "").split(os.pathsep):
                if part:
                    dest.append(os.path.normpath(os.path.join(base, os.path.expanduser(part))))
        # Ansible also finds collections next to the playbook and in the usual places.
        self.collection_paths += [
            os.path.join(playbook_dir, "collections"),
            os.path.expanduser("~/.ansible/collections"),
            "/usr/share/ansible/collections",
        ]
        self.role_paths += [os.path.expanduser("~/.ansible/roles"), "/etc/ansible/roles"]

    def add_playbook(self, path: str, inputs: dict) -> None:
        if path in self.seen:
            return
        self.seen.add(path)
        if not os.path.isfile(path):
            raise FingerprintError(
                f"the playbook {path} an ansible provisioner runs does not exist", path=path
            )
        inputs[f"playbook:{_short(path, self.root)}"] = sha256_file(path)
        for play in _yaml(path) or []:
            if not isinstance(play, dict):
                continue
            for key in _PLAYBOOK_KEYS:
                if key in play:
                    self.add_playbook(os.path.join(os.path.dirname(path), str(play[key])), inputs)
            for role in play.get("roles") or []:
                self.add_role(
                    role.get("role") or role.get("name") if isinstance(role, dict) else role, inputs
                )
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                self._tasks(play.get(section) or [], os.path.dirname(path), inputs)

    def _tasks(self, tasks: list, base: str, inputs: dict) -> None:
        for task in tasks:
            if not isinstance(task, dict):
                continue
            for key in ("block", "rescue", "always"):
                self._tasks(task.get(key) or [], base, inputs)
            for key in _ROLE_KEYS:
                if isinstance(task.get(key), dict):
                    self.add_role(task[key].get("name"), inputs)

    def add_role(self, name: Any, inputs: dict) -> None:
        if not name or not isinstance(name, str) or name in self.seen:
            return
        self.seen.add(name)
        folder = self.find_role(name)
        if folder is None:
            self.warnings.append(f"role {name} not found; its files are not in the fingerprint")
            inputs[f"role:{name}"] = sha256_bytes(b"missing")
            return
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for filename in sorted(filenames):
                if filename.endswith(".pyc"):
                    continue
                full = os.path.join(dirpath, filename)
                inputs[f"role:{name}/{os.path.relpath(full, folder)}"] = sha256_file(full)
        meta = _yaml(os.path.join(folder, "meta", "main.yml")) or {}
        namespace = name.rsplit(".", 1)[0] if name.count(".") >= 2 else None
        for dep in meta.get("dependencies") or [] if isinstance(meta, dict) else []:
            dep_name = dep.get("role") or dep.get("name") if isinstance(dep, dict) else dep
            if namespace and isinstance(dep_name, str) and "." not in dep_name:
                dep_name = f"{namespace}.{dep_name}"  # a role of the same collection
            self.add_role(dep_name, inputs)
        for tasks_file in ("tasks/main.yml", "tasks/main.yaml"):
            self._tasks(_yaml(os.path.join(folder, tasks_file)) or [], folder, inputs)

    def find_role(self, name: str) -> str | None:
        parts = name.split(".")
        if len(parts) >= 3:
            namespace, collection, role = parts[0], parts[1], ".".join(parts[2:])
            for base in self.collection_paths:
                for root in (os.path.join(base, "ansible_collections"), base):
                    folder = os.path.join(root, namespace, collection, "roles", role)
                    if os.path.isdir(folder):
                        return folder
            return None
        for base in self.role_paths:
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
