# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The build stage: decide whether to bake, bake with Packer, record the version.

:func:`plan` loads the template, resolves the variables, computes the fingerprint and looks it up in
the catalog (no Packer run, no change: what check mode reports). :func:`build` then reserves a version
name, runs ``packer build`` with ``version`` set to it, reads the artifacts, captures the image's
Debian packages and registers the version. A failed build leaves no catalog entry, no container of the
build and no image tag of it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..catalog.catalog import Catalog, Version
from ..common import docker_api
from ..common.errors import KilnError
from ..common.paths import state_dir
from . import ami, leftovers, packer
from . import fingerprint as fingerprint_mod
from . import template as template_mod

VERSION_VARIABLE = "version"
ON_ERROR = ("cleanup", "abort")
# Plugin sources for modern Packer when a template declares none (generated into the staged copy).
KNOWN_PLUGINS = {
    "docker": "github.com/hashicorp/docker",
    "amazon": "github.com/hashicorp/amazon",
    "ansible": "github.com/hashicorp/ansible",
}
_PLUGIN_OF_TYPE = {"docker": "docker", "amazon-ebs": "amazon", "ansible": "ansible", "docker-tag": "docker"}


class BuildError(KilnError):
    pass


@dataclass
class BuildRequest:
    template: str
    image: str | None = None  # catalog image name; defaults to the template folder's name
    variables: dict[str, Any] = field(default_factory=dict)
    var_files: list[str] = field(default_factory=list)
    only: list[str] = field(default_factory=list)
    except_: list[str] = field(default_factory=list)
    force: bool = False
    catalog: str | None = None
    packer_path: str | None = None
    timeout_s: float | None = 3600
    on_error: str = "cleanup"
    capture_packages: bool = True


@dataclass
class Plan:
    request: BuildRequest
    image: str
    template: template_mod.Template
    packer: packer.PackerInfo
    variables: dict[str, Any]
    sources: list[str]
    fingerprint: fingerprint_mod.Fingerprint
    existing: Version | None
    decision_s: float

    @property
    def needed(self) -> bool:
        return self.existing is None or self.request.force

    @property
    def reason(self) -> str:
        if self.existing is None:
            return "no version of this image has this fingerprint"
        if self.request.force:
            return f"forced: {self.existing.ref} has the same fingerprint"
        short = self.fingerprint.value[:12]
        return f"version {self.existing.ref} was built from the same inputs (fingerprint {short})"

    @property
    def secrets(self) -> list[str]:
        return [
            str(self.variables[name])
            for name, var in self.template.variables.items()
            if var.sensitive and self.variables.get(name) not in (None, "")
        ]


def module_variables(template: str, variables: dict, sensitive_variables: dict) -> tuple[dict, set[str]]:
    """What a module passes on as ``variables``, and the values its result and log must mask.

    Masked: every value of ``sensitive_variables`` (a ``no_log`` option) and the values given in
    ``variables`` to variables the template declares ``sensitive``.
    """
    both = sorted(set(variables) & set(sensitive_variables))
    if both:
        raise BuildError(
            f"variables and sensitive_variables both set {', '.join(repr(n) for n in both)}: set each once",
            variables=both,
        )
    try:
        declared = template_mod.load(template).variables
    except KilnError:
        declared = {}  # the run reports the template's error; nothing declared sensitive to mask yet
    secret = {n for n in variables if n in declared and declared[n].sensitive}
    values = {packer.cli_value(variables[n]) for n in secret}
    values |= {packer.cli_value(v) for v in sensitive_variables.values()}
    return {**variables, **sensitive_variables}, {v for v in values if v}


def plan(request: BuildRequest, catalog: Catalog) -> Plan:
    """Everything short of building: template, variables, fingerprint, catalog lookup."""
    started = time.monotonic()
    if request.on_error not in ON_ERROR:
        raise BuildError(f"on_error must be one of {', '.join(ON_ERROR)}, got {request.on_error!r}")
    template = template_mod.load(request.template)
    if VERSION_VARIABLE not in template.variables:
        raise BuildError(
            f"template {template.path} declares no variable '{VERSION_VARIABLE}': kiln passes the version "
            f'name it reserves through it (add: variable "{VERSION_VARIABLE}" {{ type = string }})',
            path=template.path,
        )
    if VERSION_VARIABLE in request.variables:
        raise BuildError(
            f"variables: '{VERSION_VARIABLE}' is set by kiln (the version name it reserves); remove it",
            variables=[VERSION_VARIABLE],
        )
    variables = template_mod.resolve_variables(
        template, request.variables, request.var_files, provided_by_kiln=(VERSION_VARIABLE,)
    )
    sources = selected_sources(template, request.only, request.except_)
    info = packer.packer_info(request.packer_path)
    fp = fingerprint_mod.compute(
        template,
        variables,
        packer_version=info.version,
        key=fingerprint_mod.catalog_key(catalog) if template.has_secrets else None,
        image_id=docker_api.image_id,
        var_files=request.var_files,
        sources=sources,
        options={"sources": sources},
    )
    image = request.image or template.name
    existing = catalog.find_by_fingerprint(image, fp.value)
    return Plan(request, image, template, info, variables, sources, fp, existing, time.monotonic() - started)


def selected_sources(template: template_mod.Template, only: list[str], except_: list[str]) -> list[str]:
    """The sources a build runs after ``only``/``except`` (names or globs such as ``docker.*``).

    A pattern that matches no source is refused, naming the sources the template has.
    """
    declared = buildable_sources(template)

    def matching(option: str, patterns: list[str]) -> set[str]:
        found: set[str] = set()
        for pattern in patterns:
            hits = fnmatch.filter(declared, pattern)
            if not hits:
                raise BuildError(
                    f"{option}: no source matches {pattern!r}; template {template.path} builds "
                    f"{', '.join(declared)}",
                    parameter=option,
                )
            found.update(hits)
        return found

    wanted, dropped = matching("only", only), matching("except", except_)
    chosen = [s for s in declared if (not only or s in wanted) and s not in dropped]
    if not chosen:
        raise BuildError("only/except leave no source to build", parameter="only")
    return chosen


def buildable_sources(template: template_mod.Template) -> list[str]:
    """The sources the template's builds name; a build whose list is an expression may run any source."""
    named = {s for b in template.builds for s in b.sources}
    if any(b.sources_expression is not None for b in template.builds):
        named |= set(template.sources)
    return sorted(named)


# ------------------------------------------------------------------------------------------------ build


@dataclass
class Outcome:
    changed: bool
    up_to_date: bool
    reason: str
    version: Version | None
    fingerprint: str
    inputs: dict[str, str]
    artifacts: dict
    duration_s: float
    decision_s: float
    log_path: str | None
    packer_version: str
    warnings: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        version = self.version
        return {
            "changed": self.changed,
            "up_to_date": self.up_to_date,
            "reason": self.reason,
            "version": version.ref if version else None,
            "version_name": version.name if version else None,
            "image": version.image if version else None,
            "fingerprint": self.fingerprint,
            "inputs": self.inputs,
            "artifacts": self.artifacts,
            "duration_s": round(self.duration_s, 3),
            "decision_s": round(self.decision_s, 3),
            "log_path": self.log_path,
            "packer_version": self.packer_version,
            "warnings": self.warnings,
            "cmd": self.cmd,
        }


def up_to_date(p: Plan) -> Outcome:
    existing = p.existing
    return Outcome(
        changed=False,
        up_to_date=True,
        reason=p.reason,
        version=existing,
        fingerprint=p.fingerprint.value,
        inputs=p.fingerprint.inputs,
        artifacts=existing.artifacts if existing else {},
        duration_s=0.0,
        decision_s=p.decision_s,
        log_path=existing.log_path if existing else None,
        packer_version=p.packer.version,
        warnings=p.fingerprint.warnings,
    )


def validate(p: Plan, name: str) -> None:
    """``packer validate`` with the version name the build would get (check mode)."""
    with staged(p) as target, _packer_args(p, name) as args:
        log = os.path.join(state_dir(), "logs", f"{p.image}-validate.log")
        packer.run_packer(
            ["validate", *args, target],
            info=p.packer,
            cwd=p.template.path,
            log_path=log,
            timeout_s=300,
            secrets=p.secrets,
        )


def build(
    p: Plan,
    catalog: Catalog,
    on_progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Bake the image and register its version; BuildError (nothing recorded, nothing left) on failure."""
    started = time.monotonic()
    cleaned = leftovers.clean()  # what an earlier build killed with kiln left behind
    for sentence in cleaned:
        if on_progress:
            on_progress(sentence)
    name = catalog.reserve_version(p.image)
    log_path = os.path.join(state_dir(), "logs", f"{p.image}-{name}-{time.strftime('%Y%m%dT%H%M%S')}.log")
    result: packer.RunResult | None = None
    try:
        with staged(p) as target, _packer_args(p, name) as var_args:
            if p.packer.modern and p.template.required_plugins:
                packer.run_packer(
                    ["init", target], info=p.packer, cwd=p.template.path, log_path=log_path, timeout_s=600
                )
            args = ["build", "-machine-readable", f"-on-error={p.request.on_error}", *var_args]
            try:
                with leftovers.BuildRecord(p.image, name, log_path) as record:
                    result = packer.run_packer(
                        [*args, target],
                        info=p.packer,
                        cwd=p.template.path,
                        log_path=log_path,
                        timeout_s=p.request.timeout_s,
                        on_progress=on_progress,
                        secrets=p.secrets,
                        check=False,
                        record=record,
                    )
            finally:
                _remove_leftovers(result, p.request.on_error)
        packer.raise_for(result)
        artifacts = ami.record_amis(
            read_artifacts(result.stream), p.image, f"{p.image}/{name}", p.fingerprint.value
        )
        docker = artifacts.get("docker", {})
        if "docker" in [s.split(".")[0] for s in p.sources] and not docker.get("image_id"):
            raise BuildError(
                f"packer build of {p.template.path} reported no docker image artifact", log_path=log_path
            )
        packages = (
            capture_packages(docker["image_id"])
            if docker.get("image_id") and p.request.capture_packages
            else {}
        )
        version = catalog.register(
            Version(
                image=p.image,
                name=name,
                fingerprint=p.fingerprint.value,
                artifacts=artifacts,
                base=p.fingerprint.base,
                parent=None,
                inputs=p.fingerprint.inputs,
                packer_version=p.packer.version,
                ansible_version=_ansible_version(),
                duration_s=round(time.monotonic() - started, 3),
                log_path=log_path,
                packages=packages,
                **_git(p.template.path),
            )
        )
    except KilnError as exc:
        if result is not None:
            _remove_tags(read_artifacts(result.stream))  # what this failed build tagged is no version
        exc.details.setdefault("log_path", log_path)
        exc.msg = f"build of image '{p.image}' from {p.template.path} failed: {exc.msg}"
        exc.args = (exc.msg,)
        raise
    return Outcome(
        changed=True,
        up_to_date=False,
        reason=p.reason,
        version=version,
        fingerprint=p.fingerprint.value,
        inputs=p.fingerprint.inputs,
        artifacts=version.artifacts,
        duration_s=time.monotonic() - started,
        decision_s=p.decision_s,
        log_path=log_path,
        packer_version=p.packer.version,
        warnings=[*p.fingerprint.warnings, *cleaned],
        cmd=result.cmd,
    )


@contextlib.contextmanager
def _packer_args(p: Plan, name: str) -> Iterator[list[str]]:
    explicit = dict(p.request.variables)
    if VERSION_VARIABLE in p.template.variables:
        explicit[VERSION_VARIABLE] = name
    var_files = [os.path.abspath(f) for f in p.request.var_files]
    every = buildable_sources(p.template)
    only = p.sources if p.sources and p.sources != every else []
    sensitive = [n for n, var in p.template.variables.items() if var.sensitive]
    with packer.var_args(explicit, var_files, sensitive) as args:
        yield [*args, *packer.filter_args(only)]


# ------------------------------------------------------------------------------------------------ staging


class staged:
    """What Packer is pointed at: the template itself, or a sibling copy adapted to the Packer version.

    Packer 1.6 rejects a ``packer {}`` block: its copy leaves the block out wherever it stands (a file
    holding nothing else is left out; in another file the block's lines are blanked, so Packer's line
    numbers still match). Modern Packer without ``required_plugins`` gets a generated block. The copy
    is a sibling folder of symlinks, so ``${path.root}/..`` still points where the template expects.
    A single-file template stays a single file: Packer is pointed at that file alone.
    """

    def __init__(self, p: Plan):
        self.plan = p
        self.folder: str | None = None

    def __enter__(self) -> str:
        t = self.plan.template
        rewritten: dict[str, str | None] = {}  # file name -> its staged text (None: left out)
        if not self.plan.packer.modern:
            for file, spans in t.packer_blocks.items():
                rewritten[os.path.basename(file)] = _without_blocks(file, spans)
        elif not t.required_plugins:
            if t.single_file:
                first = t.files[0]
                rewritten[os.path.basename(first)] = template_mod.read_text(first) + "\n" + plugins_block(t)
            else:
                rewritten["kiln-plugins.pkr.hcl"] = plugins_block(t)
        if not rewritten:
            return t.target
        prefix = f".kiln-{t.name}-"
        try:
            self.folder = tempfile.mkdtemp(prefix=prefix, dir=os.path.dirname(t.path))
        except OSError:  # a read-only checkout: ${path.root}/.. then differs, which most templates allow
            self.folder = tempfile.mkdtemp(prefix=prefix)
        for entry in sorted(os.listdir(t.path)):
            if entry not in rewritten:
                os.symlink(os.path.join(t.path, entry), os.path.join(self.folder, entry))
        for entry, text in rewritten.items():
            if text is not None:
                with open(os.path.join(self.folder, entry), "w", encoding="utf-8") as handle:
                    handle.write(text)
        return os.path.join(self.folder, os.path.basename(t.files[0])) if t.single_file else self.folder

    def __exit__(self, *exc) -> None:
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _without_blocks(file: str, spans: list[template_mod.BlockSpan]) -> str | None:
    """``file``'s text with the blocks of ``spans`` blanked line for line; None when nothing else is left."""
    parsed = template_mod.read_file(file)
    if set(parsed.doc) <= {"packer"}:
        return None
    text = parsed.text
    for span in sorted(spans, key=lambda s: s.start, reverse=True):
        text = text[: span.start] + "\n" * text.count("\n", span.start, span.end) + text[span.end :]
    return text


def plugins_block(t: template_mod.Template) -> str:
    """A ``packer { required_plugins }`` block for the plugins the template's blocks use."""
    types = {ref.split(".")[0] for ref in t.sources}
    types |= {p.type for b in t.builds for p in b.provisioners}
    types |= {p.type for b in t.builds for chain in b.post_processors for p in chain}
    names = sorted({_PLUGIN_OF_TYPE[x] for x in types if x in _PLUGIN_OF_TYPE})
    body = "".join(
        f'    {n} = {{\n      source  = "{KNOWN_PLUGINS[n]}"\n      version = ">= 1.0.0"\n    }}\n'
        for n in names
    )
    return f"packer {{\n  required_plugins {{\n{body}  }}\n}}\n"


# ------------------------------------------------------------------------------------------------ results


def read_artifacts(stream: packer.BuildStream) -> dict:
    """Packer's artifacts as the catalog keeps them: docker image id and tags, AMI ids per region."""
    out: dict[str, Any] = {}
    docker_builds: dict[str, dict] = {}
    for build_name, artifacts in sorted(stream.artifacts.items()):
        entry: dict[str, Any] = {}
        for artifact in artifacts:
            if artifact.builder_id in ("packer.post-processor.docker-import", "transcend.docker") or (
                artifact.builder_id.endswith("docker") and artifact.id.startswith("sha256:")
            ):
                entry["image_id"] = artifact.id
            elif artifact.builder_id == "packer.post-processor.docker-tag":
                entry.setdefault("tags", []).append(artifact.id)
            elif artifact.builder_id in ami.AMAZON_BUILDERS:
                out.setdefault("ami", {}).update(ami.parse_ami_id(artifact.id))
        if entry:
            if entry.get("tags"):
                entry["tag"] = entry["tags"][0]
            docker_builds[build_name] = entry
    if docker_builds:
        out["docker"] = docker_builds[sorted(docker_builds)[0]]
        if len(docker_builds) > 1:
            out["docker_builds"] = docker_builds
    out["packer"] = {b: [a.to_dict() for a in arts] for b, arts in sorted(stream.artifacts.items())}
    return out


def capture_packages(image_id: str) -> dict[str, str]:
    """The image's Debian packages ({name: version}), read in a throwaway container of the image."""
    engine = docker_api.client()
    name = f"kiln-packages-{uuid.uuid4().hex[:12]}"
    try:
        output = engine.containers.run(
            image_id,
            entrypoint=["dpkg-query"],
            command=["-W", "-f=${Package}\t${Version}\n"],
            user="root",
            name=name,
            network_disabled=True,
            remove=True,
            stdout=True,
            stderr=False,
        )
    except Exception as exc:  # no dpkg in the image, or the engine refused: the version is still good
        docker_api.remove_container(name)
        raise BuildError(f"cannot list the Debian packages of image {image_id}: {exc}") from exc
    packages = {}
    for line in output.decode("utf-8", "replace").splitlines():
        pkg, dummy, version = line.partition("\t")
        if pkg:
            packages[pkg] = version
    return packages


def _remove_leftovers(result: packer.RunResult | None, on_error: str) -> list[str]:
    """Remove the containers of this build that Packer left (it removes them itself when it can)."""
    if result is None or (result.rc != 0 and on_error == "abort"):
        return []  # abort keeps the container on purpose, for debugging
    removed = []
    for container_id in result.stream.container_ids:
        if docker_api.remove_container(container_id, stop_timeout=2):
            removed.append(container_id)
    return removed


def _remove_tags(artifacts: dict) -> None:
    for entry in [artifacts.get("docker", {}), *artifacts.get("docker_builds", {}).values()]:
        for tag in entry.get("tags", []):
            try:
                docker_api.client().images.remove(tag, noprune=False)
            except Exception:  # best effort: the build already failed for a better reason
                pass


def _ansible_version() -> str | None:
    try:
        from ansible.module_utils.ansible_release import __version__
    except ImportError:
        return None
    return __version__


def _git(path: str) -> dict:
    """The commit a template is built from and whether the work tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        if commit.returncode != 0:
            return {"git_commit": None, "git_dirty": False}
        status = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": None, "git_dirty": False}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


def run(request: BuildRequest, *, check_mode: bool = False, on_progress=None) -> dict:
    """The module's whole job: plan, then skip, validate (check mode) or build. Returns the result dict."""
    with Catalog(request.catalog) as catalog:
        p = plan(request, catalog)
        if not p.needed:
            return up_to_date(p).to_dict()
        if check_mode:
            name = catalog.next_version_name(p.image)
            validate(p, name)
            out = up_to_date(p).to_dict()
            out.update(
                changed=True, up_to_date=False, version=f"{p.image}/{name}", version_name=name, image=p.image
            )
            out["reason"] = f"would build {p.image}/{name}: {p.reason}"
            return out
        return build(p, catalog, on_progress).to_dict()


def template_info(
    path: str,
    variables: dict | None = None,
    var_files: list[str] | None = None,
    *,
    validate_with_packer: bool = False,
    packer_path: str | None = None,
) -> dict:
    """What ``packer_template_info`` returns: the template model, resolved values, optional validation."""
    template = template_mod.load(path)
    declared = template.variables
    resolved = template_mod.resolve_variables(
        template,
        variables,
        var_files,
        provided_by_kiln=tuple(declared),  # report missing, do not refuse
    )
    out = template.to_dict(template_mod.scope(template, resolved))
    missing = sorted(n for n, v in declared.items() if v.required and n not in resolved)
    out["resolved_variables"] = {
        n: ("********" if declared[n].sensitive else v) for n, v in sorted(resolved.items())
    }
    out["missing_variables"] = [m for m in missing if m != VERSION_VARIABLE]  # kiln sets the version
    out["kiln_ready"] = VERSION_VARIABLE in declared
    if validate_with_packer:
        if out["missing_variables"]:
            raise template_mod.TemplateError(
                f"cannot validate {template.path}: required variables without a value: "
                + ", ".join(out["missing_variables"]),
                variables=out["missing_variables"],
            )
        info = packer.packer_info(packer_path)
        request = BuildRequest(
            template=path, variables=dict(variables or {}), var_files=list(var_files or [])
        )
        request.variables.pop(VERSION_VARIABLE, None)
        p = Plan(
            request, template.name, template, info, resolved, [], fingerprint_mod.Fingerprint("", {}), None, 0
        )
        validate(p, str((variables or {}).get(VERSION_VARIABLE, "0")))
        out["valid"] = True
        out["packer_version"] = info.version
    return out
