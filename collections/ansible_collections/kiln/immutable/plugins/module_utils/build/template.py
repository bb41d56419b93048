# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The template model: a Packer HCL2 folder read with python-hcl2, never evaluated.

A folder holds ``*.pkr.hcl`` files (variables, sources, builds, and perhaps a ``packer {}`` block with
``required_plugins``, which Packer 1.6 rejects and so must sit in a file of its own), variable files
Packer loads by itself (``*.auto.pkrvars.hcl``) and other ``*.pkrvars.hcl`` files a build may name.
Expressions come back as ``"${...}"`` strings; :func:`interpolate` resolves the few kiln needs
(``var.*``, ``path.root``, ``path.cwd``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from ..common.errors import KilnError
from ..common.files import private_dirs
from ..common.paths import state_dir

_MISSING = object()
_CACHE_FORMAT = "1"  # bump when the options passed to python-hcl2 change
_EXPR = re.compile(r"\$\{\s*([a-zA-Z_][\w.-]*)\s*\}")


class TemplateError(KilnError):
    """Bad template input: the message names the file and line, or the variable."""


def _options():
    import hcl2

    return hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False, preserve_heredocs=False
    )


def read_hcl(path: str) -> dict:
    """One HCL file as python-hcl2's dict; TemplateError with the file and line when it is malformed.

    Parsed files are cached by content in the state folder: loading python-hcl2's parser alone takes
    a good part of a no-op build's decision time.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise TemplateError(f"cannot read {path}: {exc.strerror}", path=path) from exc
    cache = _cache_path(text)
    try:
        with open(cache, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        pass
    parsed = parse_hcl(path, text)
    try:
        private_dirs(os.path.dirname(cache))
        tmp = f"{cache}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(parsed, handle)
        os.replace(tmp, cache)
    except (OSError, TypeError, ValueError):
        pass  # no cache, only slower
    return parsed


def _cache_path(text: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        hcl2_version = version("python-hcl2")
    except PackageNotFoundError:
        hcl2_version = "unknown"
    key = hashlib.sha256(f"{hcl2_version}\0{_CACHE_FORMAT}\0{text}".encode()).hexdigest()
    return os.path.join(state_dir(), "cache", "hcl", f"{key}.json")


def parse_hcl(path: str, text: str) -> dict:
    """python-hcl2 on ``text`` (read from ``path``), never cached; errors name the file and line."""
    try:
        import hcl2
    except ImportError as exc:
        raise TemplateError(f"python-hcl2 is missing ({exc}); pip install 'python-hcl2>=8.1.4,<9'") from exc
    from lark.exceptions import UnexpectedInput

    try:
        return hcl2.loads(text, serialization_options=_options())
    except UnexpectedInput as exc:
        line, column = getattr(exc, "line", None), getattr(exc, "column", None)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = re.sub(r" at line \d+, column \d+\.?$", "", first)
        source = text.splitlines()[line - 1].strip() if line and 0 < line <= len(text.splitlines()) else ""
        raise TemplateError(
            f"malformed HCL in {path} at line {line}, column {column}: {first}"
            + (f" (near: {source[:80]})" if source else ""),
            path=path,
            line=line,
            column=column,
        ) from exc
    except Exception as exc:  # the transformer raises plain errors for some invalid constructs
        raise TemplateError(f"malformed HCL in {path}: {exc}", path=path) from exc


def _blocks(items: Any) -> list[tuple[str, Any]]:
    """python-hcl2 gives labelled blocks as lists of one-key dicts; yield (label, body) pairs."""
    out: list[tuple[str, Any]] = []
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, dict):
            out.extend(item.items())
    return out


@dataclass
class Variable:
    name: str
    file: str
    type: str | None = None
    default: Any = _MISSING
    sensitive: bool = False
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def to_dict(self) -> dict:
        out = {
            "type": self.type,
            "required": self.required,
            "sensitive": self.sensitive,
            "description": self.description,
            "file": self.file,
        }
        if not self.required:
            out["default"] = "********" if self.sensitive else self.default
        return out


@dataclass
class Plugin:
    kind: str  # provisioner | post-processor
    type: str
    config: dict

    def to_dict(self) -> dict:
        return {"type": self.type, "config": self.config}


@dataclass
class Build:
    name: str
    sources: list[str]
    provisioners: list[Plugin]
    post_processors: list[list[Plugin]]  # each inner list is one chain

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "sources": self.sources,
            "provisioners": [p.to_dict() for p in self.provisioners],
            "post_processors": [[p.to_dict() for p in chain] for chain in self.post_processors],
        }


@dataclass
class Template:
    path: str
    files: list[str]  # *.pkr.hcl, sorted
    auto_var_files: list[str]  # *.auto.pkrvars.hcl Packer loads by itself
    var_files: list[str]  # other *.pkrvars.hcl in the folder, used only when named
    plugins_files: list[str]  # files holding the packer { required_plugins } block
    variables: dict[str, Variable] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)  # "docker.web" -> config
    builds: list[Build] = field(default_factory=list)
    required_plugins: dict[str, dict] = field(default_factory=dict)
    raw: dict[str, dict] = field(default_factory=dict)  # file -> python-hcl2 dict

    @property
    def name(self) -> str:
        return os.path.basename(self.path.rstrip(os.sep))

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "files": [os.path.basename(f) for f in self.files],
            "auto_var_files": [os.path.basename(f) for f in self.auto_var_files],
            "var_files": [os.path.basename(f) for f in self.var_files],
            "plugins_files": [os.path.basename(f) for f in self.plugins_files],
            "variables": {name: var.to_dict() for name, var in sorted(self.variables.items())},
            "required_variables": sorted(n for n, v in self.variables.items() if v.required),
            "sources": self.sources,
            "builds": [b.to_dict() for b in self.builds],
            "required_plugins": self.required_plugins,
        }

    def provisioners(self, type_: str | None = None) -> list[Plugin]:
        return [p for b in self.builds for p in b.provisioners if type_ is None or p.type == type_]


def load(path: str) -> Template:
    """Read a template folder (or one ``.pkr.hcl`` file); TemplateError naming the file at fault."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path):
        folder, files = os.path.dirname(path), [path]
    elif os.path.isdir(path):
        folder, files = path, sorted(glob.glob(os.path.join(path, "*.pkr.hcl")))
    else:
        raise TemplateError(f"template {path} does not exist", path=path)
    if not files:
        raise TemplateError(
            f"template folder {path} has no *.pkr.hcl file (kiln reads HCL2 templates only)", path=path
        )
    var_files = sorted(glob.glob(os.path.join(folder, "*.pkrvars.hcl")))
    template = Template(
        path=folder,
        files=files,
        auto_var_files=[f for f in var_files if f.endswith(".auto.pkrvars.hcl")],
        var_files=[f for f in var_files if not f.endswith(".auto.pkrvars.hcl")],
        plugins_files=[],
    )
    for file in files:
        doc = read_hcl(file)
        template.raw[file] = doc
        _add_file(template, file, doc)
    if not template.builds:
        raise TemplateError(f"template {path} has no build block", path=path)
    return template


def _add_file(template: Template, file: str, doc: dict) -> None:
    name = os.path.basename(file)
    if "packer" in doc:
        others = sorted(set(doc) - {"packer"})
        block = doc["packer"][0] if isinstance(doc["packer"], list) else doc["packer"]
        plugins = block.get("required_plugins") if isinstance(block, dict) else None
        if plugins:
            if others:
                raise TemplateError(
                    f"{file}: move the packer {{ required_plugins }} block into a file of its own (for "
                    f"example plugins.pkr.hcl); Packer before 1.7 rejects it, so kiln leaves that file "
                    f"out for old Packer, and this file also holds {', '.join(others)}",
                    path=file,
                )
            for entry in plugins if isinstance(plugins, list) else [plugins]:
                template.required_plugins.update(entry)
            template.plugins_files.append(file)
    for var_name, body in _blocks(doc.get("variable", [])):
        if var_name in template.variables:
            raise TemplateError(
                f"{file}: variable '{var_name}' is declared twice (also in "
                f"{os.path.basename(template.variables[var_name].file)})",
                path=file,
            )
        body = body or {}
        template.variables[var_name] = Variable(
            name=var_name,
            file=name,
            type=_type_name(body.get("type")),
            default=body.get("default", _MISSING),
            sensitive=bool(body.get("sensitive", False)),
            description=str(body.get("description", "")),
        )
    for src_type, named in _blocks(doc.get("source", [])):
        for src_name, config in _blocks(named):
            template.sources[f"{src_type}.{src_name}"] = config or {}
    for body in doc.get("build", []):
        template.builds.append(_build(body or {}, len(template.builds)))


def _type_name(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    match = re.fullmatch(r"\$\{(.*)\}", text, re.S)
    return match.group(1) if match else text


def _build(body: dict, index: int) -> Build:
    sources = []
    for ref in body.get("sources", []) or []:
        sources.append(str(ref).removeprefix("source."))
    for nested in body.get("source", []) or []:  # source "docker.web" { ... } inside a build
        sources.extend(str(label).removeprefix("source.") for label, dummy in _blocks(nested))
    provisioners = [Plugin("provisioner", t, c or {}) for t, c in _blocks(body.get("provisioner", []))]
    chains = [[Plugin("post-processor", t, c or {})] for t, c in _blocks(body.get("post-processor", []))]
    for group in body.get("post-processors", []) or []:
        chains.append(
            [Plugin("post-processor", t, c or {}) for t, c in _blocks(group.get("post-processor", []))]
        )
    return Build(str(body.get("name", f"build{index}")), sources, provisioners, chains)


# ---------------------------------------------------------------------------------------------- variables


def read_var_file(path: str) -> dict[str, Any]:
    """A ``*.pkrvars.hcl`` file as {name: value}."""
    if not os.path.isfile(path):
        raise TemplateError(f"variable file {path} does not exist", path=path)
    return dict(read_hcl(path))


def resolve_variables(
    template: Template,
    variables: dict[str, Any] | None = None,
    var_files: list[str] | None = None,
    provided_by_kiln: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Every variable's value as Packer will see it: defaults, auto var files, var files, then ``variables``.

    Refuses an unknown variable (naming where it came from) and a required variable left without a
    value, before Packer runs. Names in ``provided_by_kiln`` are set later by kiln (the version name).
    """
    declared = template.variables
    values: dict[str, Any] = {name: var.default for name, var in declared.items() if not var.required}
    layers = [(f, read_var_file(f)) for f in template.auto_var_files]
    layers += [(os.path.abspath(f), read_var_file(os.path.abspath(f))) for f in var_files or []]
    layers.append(("the variables option", dict(variables or {})))
    for origin, layer in layers:
        unknown = sorted(set(layer) - set(declared))
        if unknown:
            raise TemplateError(
                f"unknown variable{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} "
                f"in {origin}: template {template.path} declares "
                f"{', '.join(sorted(declared)) or 'no variables'}",
                path=origin,
                variables=unknown,
            )
        values.update(layer)
    missing = sorted(
        n for n, v in declared.items() if v.required and n not in values and n not in provided_by_kiln
    )
    if missing:
        raise TemplateError(
            f"template {template.path} needs a value for required variable"
            f"{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
            f"(declared in {', '.join(sorted({declared[m].file for m in missing}))}); "
            f"set {'them' if len(missing) > 1 else 'it'} in variables or a var file",
            variables=missing,
        )
    return values


def interpolate(value: Any, variables: dict[str, Any], path_root: str, path_cwd: str | None = None) -> Any:
    """Resolve ``${var.x}``, ``${path.root}`` and ``${path.cwd}`` in a string; other expressions stay."""
    if not isinstance(value, str):
        return value
    cwd = path_cwd or os.getcwd()

    def one(match: re.Match) -> str:
        ref = match.group(1)
        if ref == "path.root":
            return path_root
        if ref == "path.cwd":
            return cwd
        if ref.startswith("var.") and ref[4:] in variables:
            return str(variables[ref[4:]])
        return match.group(0)

    return _EXPR.sub(one, value)


def unresolved(value: str) -> bool:
    return "${" in value
