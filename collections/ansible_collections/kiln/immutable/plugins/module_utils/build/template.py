# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The template model: a Packer HCL2 template read with python-hcl2, never evaluated.

A template is a folder of ``*.pkr.hcl`` files, or one such file on its own. As Packer does, a folder
also takes the variable files it finds (``*.auto.pkrvars.hcl``, then ``*.auto.pkrvars.json``) while a
single file takes only the var files a build names. A ``packer {}`` block may stand in any file: kiln
records where, so staging for Packer 1.6 (which rejects the block) can leave it out.
Expressions come back as ``"${...}"`` strings; :func:`interpolate` resolves the few kiln needs
(``var.*``, ``local.*``, ``path.root``, ``path.cwd``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from ..common.errors import KilnError
from ..common.files import private_dirs
from ..common.paths import state_dir

_MISSING = object()
_CACHE_FORMAT = "2"  # bump when the options passed to python-hcl2 or the cached shape change
_EXPR = re.compile(r"\$\{\s*([a-zA-Z_][\w.-]*)\s*\}")
_ABSPATH = re.compile(r"\$\{\s*abspath\(\s*(path\.(?:root|cwd))\s*\)\s*\}")  # kiln's paths are absolute
_HEADER = re.compile(r"\s*([A-Za-z_][\w-]*)((?:\s+(?:\"[^\"\n]*\"|[A-Za-z_][\w-]*))*)\s*")
_LABEL = re.compile(r"\"([^\"\n]*)\"|([A-Za-z_][\w-]*)")
# Labels each block needs, by (parent block type, block type); a block missing them is refused.
_LABELS = {
    (None, "variable"): 1,
    (None, "local"): 1,
    (None, "source"): 2,
    (None, "data"): 2,
    ("build", "source"): 1,
    ("build", "provisioner"): 1,
    ("build", "post-processor"): 1,
    ("build", "error-cleanup-provisioner"): 1,
    ("post-processors", "post-processor"): 1,
    ("build", "dynamic"): 1,
}
UNKNOWN = "not known before Packer runs"


class TemplateError(KilnError):
    """Bad template input: the message names the file and line, or the variable."""


def _options():
    import hcl2

    return hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False, preserve_heredocs=False
    )


@dataclass(frozen=True)
class BlockSpan:
    """Where a block stands in its file: type, labels, 1-based line, nesting, and character offsets."""

    type: str
    labels: tuple[str, ...]
    line: int
    parent: str | None
    start: int
    end: int


@dataclass
class HclFile:
    path: str
    text: str
    doc: dict
    blocks: list[BlockSpan]


def read_text(path: str) -> str:
    """A template or var file's text; a UTF-8 byte order mark is dropped, as Packer does."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return handle.read()
    except OSError as exc:
        raise TemplateError(f"cannot read {path}: {exc.strerror}", path=path) from exc
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}", path=path) from exc


def read_file(path: str) -> HclFile:
    """One HCL file parsed, with its blocks' places.

    Parsed files are cached by content in the state folder (loading python-hcl2's parser alone takes a
    good part of a no-op build's decision time), except a file holding a sensitive value: no copy of
    a secret is left behind.
    """
    text = read_text(path)
    cache = _cache_path(text)
    legacy = os.path.join(state_dir(), "cache", "hcl")
    if os.path.isdir(legacy):  # an older kiln cached every file there, sensitive defaults and all
        shutil.rmtree(legacy, ignore_errors=True)
    try:
        with open(cache, encoding="utf-8") as handle:
            entry = json.load(handle)
        return HclFile(
            path, text, entry["doc"], [BlockSpan(b[0], tuple(b[1]), *b[2:]) for b in entry["blocks"]]
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    parsed = HclFile(path, text, parse_hcl(path, text), block_spans(path, text))
    if holds_secret(parsed.doc):
        return parsed
    try:
        private_dirs(os.path.dirname(cache))
        tmp = f"{cache}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(
                {"doc": parsed.doc, "blocks": [list(b.__dict__.values()) for b in parsed.blocks]}, handle
            )
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
    return os.path.join(state_dir(), "cache", f"hcl{_CACHE_FORMAT}", f"{key}.json")


def holds_secret(doc: dict) -> bool:
    """Whether a parsed file declares a sensitive variable with a default, or a sensitive local."""
    for kind in ("variable", "local"):
        for body in (b for _label, b in _blocks(doc.get(kind, []))):
            if isinstance(body, dict) and str(body.get("sensitive", False)).lower() != "false":
                if kind == "local" or "default" in body:
                    return True
    return False


def parse_hcl(path: str, text: str) -> dict:
    """python-hcl2 on ``text`` (read from ``path``), never cached; errors name the file and line."""
    try:
        import hcl2
    except ImportError as exc:
        raise TemplateError(f"python-hcl2 is missing ({exc}); pip install 'python-hcl2>=8.1.4,<9'") from exc
    from lark.exceptions import UnexpectedInput

    text = text.removeprefix("\ufeff")
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


def block_spans(path: str, text: str) -> list[BlockSpan]:
    """Every block of a (well-formed) HCL file with its line and offsets; a block without the labels
    Packer needs is refused with the file and line (python-hcl2 would take its first attribute for one).

    A small scanner: strings (with their ``${...}`` templates), heredocs and comments are skipped, and a
    ``{`` opens a block when the text before it on its line is a bare block header.
    """
    newlines = [m.start() for m in re.finditer("\n", text)]
    spans: list[BlockSpan] = []
    stack: list[tuple[str, tuple[str, ...], int, str | None]] = []  # kind "" for a brace of a value
    i, size, line_start = 0, len(text), 0
    while i < size:
        char = text[i]
        if char == "\n":
            line_start = i + 1
        elif char == '"':
            i = _skip_string(text, i)
            continue
        elif char == "#" or text.startswith("//", i):
            i = text.find("\n", i)
            i = size if i < 0 else i
            continue
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = size if close < 0 else close + 2
            continue
        elif text.startswith("<<", i):
            i = _skip_heredoc(text, i)
            continue
        elif char == "{":
            header = _HEADER.fullmatch(text, line_start, i)
            if header:
                labels = tuple(a if a is not None else b for a, b in _LABEL.findall(header.group(2)))
                parent = next((entry[0] for entry in reversed(stack) if entry[0]), None)
                stack.append((header.group(1), labels, line_start, parent))
            else:
                stack.append(("", (), 0, None))
            line_start = i + 1
        elif char == "}":
            kind, labels, start, parent = stack.pop() if stack else ("", (), 0, None)
            if kind:
                spans.append(
                    BlockSpan(kind, labels, bisect_right(newlines, start - 1) + 1, parent, start, i + 1)
                )
            line_start = i + 1
        i += 1
    for span in spans:
        needed = _LABELS.get((span.parent, span.type))
        if needed and len(span.labels) < needed:
            what = "name" if needed == 1 or span.labels else "type and name"
            quoted = '"..."'
            raise TemplateError(
                f"{path} line {span.line}: this {span.type} block has no {what} "
                f"(write {span.type} {' '.join([quoted] * needed)} {{ ... }})",
                path=path,
                line=span.line,
            )
    return sorted(spans, key=lambda s: s.start)


def _skip_string(text: str, i: int) -> int:
    """The offset after the string opening at ``i``; ``${...}`` and ``%{...}`` may hold strings too."""
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == '"' or char == "\n":
            return i + 1
        if char in "$%" and text.startswith("{", i + 1):
            i = _skip_template(text, i + 2)
            continue
        i += 1
    return i


def _skip_template(text: str, i: int) -> int:
    depth = 1
    while i < len(text) and depth:
        char = text[i]
        if char == '"':
            i = _skip_string(text, i)
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        i += 1
    return i


def _skip_heredoc(text: str, i: int) -> int:
    match = re.compile(r"<<-?([A-Za-z_]\w*)[ \t]*\n").match(text, i)
    if not match:
        return i + 2
    end = re.compile(rf"^[ \t]*{re.escape(match.group(1))}[ \t]*$", re.M).search(text, match.end())
    return end.end() if end else len(text)


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
    for_each: str | None = None  # set for a dynamic block: one plugin per element, known when Packer runs

    def to_dict(self, where: Scope | None = None) -> dict:
        out = {"type": self.type, "config": self.config}
        if self.for_each is not None:
            out["dynamic"] = {"for_each": self.for_each, "count": count(self.for_each, where)}
        return out


@dataclass
class Build:
    name: str
    sources: list[str]
    provisioners: list[Plugin]
    post_processors: list[list[Plugin]]  # each inner list is one chain
    sources_expression: str | None = None  # `sources = var.x`: the sources are known when Packer runs
    dynamic_sources: list[dict] = field(default_factory=list)  # {"source": "docker.web", "for_each": ...}
    source_settings: dict[str, list[dict]] = field(default_factory=dict)  # set in the build's source blocks
    error_cleanup: list[Plugin] = field(default_factory=list)  # error-cleanup-provisioner blocks

    def to_dict(self, where: Scope | None = None) -> dict:
        out = {
            "name": self.name,
            "sources": self.sources if self.sources_expression is None else UNKNOWN,
            "provisioners": [p.to_dict(where) for p in self.provisioners],
            "post_processors": [[p.to_dict(where) for p in chain] for chain in self.post_processors],
        }
        if self.sources_expression is not None:
            out["sources_expression"] = self.sources_expression
        if self.dynamic_sources:
            out["dynamic_sources"] = [
                {**d, "count": count(d["for_each"], where)} for d in self.dynamic_sources
            ]
        return out


@dataclass
class Template:
    path: str  # the folder Packer runs in (a single-file template's folder)
    files: list[str]  # *.pkr.hcl, sorted, or the one file of a single-file template
    auto_var_files: list[str]  # var files Packer loads by itself (folders only)
    var_files: list[str]  # other *.pkrvars.hcl / *.pkrvars.json beside it, used only when named
    plugins_files: list[str]  # files holding a packer {} block
    single_file: bool = False
    variables: dict[str, Variable] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)  # name -> expression as written
    sensitive_locals: set[str] = field(default_factory=set)
    sources: dict[str, dict] = field(default_factory=dict)  # "docker.web" -> config
    builds: list[Build] = field(default_factory=list)
    required_plugins: dict[str, dict] = field(default_factory=dict)
    packer_blocks: dict[str, list[BlockSpan]] = field(default_factory=dict)  # file -> its packer {} blocks
    secret_files: set[str] = field(default_factory=set)  # files whose text holds a sensitive value

    @property
    def name(self) -> str:
        base = os.path.basename(self.files[0]) if self.single_file else self.path.rstrip(os.sep)
        return os.path.basename(base).removesuffix(".pkr.hcl")

    @property
    def has_secrets(self) -> bool:
        """Whether a build of it hashes a sensitive value (and so needs the catalog's key)."""
        return bool(self.secret_files or any(v.sensitive for v in self.variables.values()))

    @property
    def target(self) -> str:
        """What Packer is pointed at: the folder, or the single file."""
        return self.files[0] if self.single_file else self.path

    def to_dict(self, where: Scope | None = None) -> dict:
        """The model as ``packer_template_info`` reports it; with ``where``, how many blocks a
        ``dynamic`` block makes when its ``for_each`` is known before Packer runs."""
        return {
            "path": self.target,
            "single_file": self.single_file,
            "files": [os.path.basename(f) for f in self.files],
            "auto_var_files": [os.path.basename(f) for f in self.auto_var_files],
            "var_files": [os.path.basename(f) for f in self.var_files],
            "plugins_files": [os.path.basename(f) for f in self.plugins_files],
            "variables": {name: var.to_dict() for name, var in sorted(self.variables.items())},
            "required_variables": sorted(n for n, v in self.variables.items() if v.required),
            "locals": sorted(self.locals),
            "sources": self.sources,
            "builds": [b.to_dict(where) for b in self.builds],
            "required_plugins": self.required_plugins,
        }

    def provisioners(self, type_: str | None = None) -> list[Plugin]:
        return [p for b in self.builds for p in b.provisioners if type_ is None or p.type == type_]

    def plugins(self) -> list[Plugin]:
        """Every provisioner and post-processor of every build."""
        return [
            *self.provisioners(),
            *(p for b in self.builds for p in b.error_cleanup),
            *(p for b in self.builds for chain in b.post_processors for p in chain),
        ]

    def source_configs(self, ref: str) -> list[dict]:
        """A source's settings: its own block's, and those a build's ``source`` blocks add."""
        own = [self.sources[ref]] if ref in self.sources else []
        return own + [c for b in self.builds for c in b.source_settings.get(ref, [])]


def load(path: str) -> Template:
    """Read a template folder or one ``.pkr.hcl`` file; TemplateError naming the file at fault."""
    path = os.path.abspath(os.path.expanduser(path))
    single = os.path.isfile(path)
    if single:
        folder, files = os.path.dirname(path), [path]
    elif os.path.isdir(path):
        folder, files = path, sorted(glob.glob(os.path.join(path, "*.pkr.hcl")))
    else:
        raise TemplateError(f"template {path} does not exist", path=path)
    if not files:
        raise TemplateError(
            f"template folder {path} has no *.pkr.hcl file (kiln reads HCL2 templates only)", path=path
        )
    var_files = [
        *sorted(glob.glob(os.path.join(folder, "*.pkrvars.hcl"))),
        *sorted(glob.glob(os.path.join(folder, "*.pkrvars.json"))),
    ]
    auto = [f for f in var_files if re.search(r"\.auto\.pkrvars\.(hcl|json)$", f)]
    template = Template(
        path=folder,
        files=files,
        auto_var_files=[] if single else auto,  # Packer loads them for a folder only
        var_files=[f for f in var_files if f not in auto],
        plugins_files=[],
        single_file=single,
    )
    for file in files:
        _add_file(template, read_file(file))
    if not template.builds:
        raise TemplateError(f"template {path} has no build block", path=path)
    return template


def _add_file(template: Template, parsed: HclFile) -> None:
    file, doc = parsed.path, parsed.doc
    name = os.path.basename(file)
    lines = {(s.type, s.labels[:1]): s.line for s in parsed.blocks if s.parent is None}
    packer_spans = [s for s in parsed.blocks if s.type == "packer" and s.parent is None]
    if packer_spans:
        template.plugins_files.append(file)
        template.packer_blocks[file] = packer_spans
    for block in doc.get("packer", []) if isinstance(doc.get("packer"), list) else [doc.get("packer")]:
        plugins = block.get("required_plugins") if isinstance(block, dict) else None
        for entry in plugins if isinstance(plugins, list) else [plugins] if plugins else []:
            template.required_plugins.update(entry)
    if holds_secret(doc):
        template.secret_files.add(file)
    declared: list[tuple[str, dict]] = [
        (var_name, body or {}) for var_name, body in _blocks(doc.get("variable", []))
    ]
    for group in doc.get("variables", []) or []:  # variables { name = default ... }
        declared.extend((var_name, {"default": value}) for var_name, value in (group or {}).items())
    for var_name, body in declared:
        if var_name in template.variables:
            raise TemplateError(
                f"{file}: variable '{var_name}' is declared twice (also in "
                f"{os.path.basename(template.variables[var_name].file)})",
                path=file,
                line=lines.get(("variable", (var_name,))),
            )
        template.variables[var_name] = Variable(
            name=var_name,
            file=name,
            type=_type_name(body.get("type")),
            default=body.get("default", _MISSING),
            sensitive=_sensitive(body.get("sensitive", False), file, lines.get(("variable", (var_name,)))),
            description=str(body.get("description", "")),
        )
    for group in doc.get("locals", []) or []:
        template.locals.update(group or {})
    for local_name, body in _blocks(doc.get("local", [])):
        body = body or {}
        template.locals[local_name] = body.get("expression")
        if _sensitive(body.get("sensitive", False), file, lines.get(("local", (local_name,)))):
            template.sensitive_locals.add(local_name)
    for src_type, named in _blocks(doc.get("source", [])):
        for src_name, config in _blocks(named):
            template.sources[f"{src_type}.{src_name}"] = config or {}
    build_spans = [s for s in parsed.blocks if s.type == "build" and s.parent is None]
    for index, body in enumerate(doc.get("build", [])):
        span = build_spans[index] if index < len(build_spans) else None
        order = [
            s.type if s.type != "dynamic" else f"dynamic {s.labels[0]}"
            for s in parsed.blocks
            if span and s.parent == "build" and span.start < s.start < span.end
        ]
        template.builds.append(_build(body or {}, len(template.builds), order))


def _sensitive(value: Any, file: str, line: int | None) -> bool:
    """``sensitive`` as Packer converts it to a bool: true/false, or the strings "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TemplateError(
        f"{file}{f' line {line}' if line else ''}: sensitive must be true or false, not {value!r}",
        path=file,
        line=line,
    )


def _type_name(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    match = re.fullmatch(r"\$\{(.*)\}", text, re.S)
    return match.group(1) if match else text


def source_ref(label: str) -> str:
    """A build's reference to a source without Packer's ``source.`` / ``sources.`` prefix."""
    return re.sub(r"^sources?\.", "", str(label))


def _build(body: dict, index: int, order: list[str]) -> Build:
    """One build block; ``order`` lists its nested blocks as they stand (python-hcl2 groups
    ``provisioner`` and ``dynamic "provisioner"`` apart, Packer runs them in file order)."""
    build = Build(str(body.get("name", f"build{index}")), [], [], [])
    refs = body.get("sources", []) or []
    if isinstance(refs, str):  # sources = var.x: an expression, never a list of characters
        build.sources_expression = refs
        refs = []
    for ref in refs:
        if unresolved(str(ref)):
            build.sources_expression = str(ref)
        else:
            build.sources.append(source_ref(ref))
    for nested in body.get("source", []) or []:  # source "docker.web" { ... } inside a build
        for label, settings in _blocks(nested):
            build.sources.append(source_ref(label))
            build.source_settings.setdefault(source_ref(label), []).append(settings or {})
    build.provisioners = [Plugin("provisioner", t, c or {}) for t, c in _blocks(body.get("provisioner", []))]
    build.error_cleanup = [
        Plugin("error-cleanup-provisioner", t, c or {})
        for t, c in _blocks(body.get("error-cleanup-provisioner", []))
    ]
    build.post_processors = [
        [Plugin("post-processor", t, c or {})] for t, c in _blocks(body.get("post-processor", []))
    ]
    for group in body.get("post-processors", []) or []:
        build.post_processors.append(
            [Plugin("post-processor", t, c or {}) for t, c in _blocks(group.get("post-processor", []))]
        )
    dynamic_provisioners = []
    for kind, spec in _blocks(body.get("dynamic", [])):
        spec = spec or {}
        labels = spec.get("labels") or []
        label = str(labels[0]) if isinstance(labels, list) and labels else UNKNOWN
        content = spec.get("content") or [{}]
        content = content[0] if isinstance(content, list) else content
        for_each = str(spec.get("for_each", ""))
        if kind == "source":
            build.dynamic_sources.append({"source": source_ref(label), "for_each": for_each})
            build.sources.append(source_ref(label))
            build.source_settings.setdefault(source_ref(label), []).append(content or {})
        elif kind in ("provisioner", "post-processor"):
            plugin = Plugin(kind, label, content or {}, for_each=for_each)
            if kind == "provisioner":
                dynamic_provisioners.append(plugin)
            else:
                build.post_processors.append([plugin])
    plain = build.provisioners
    kinds = [k for k in order if k in ("provisioner", "dynamic provisioner")]
    if len(kinds) == len(plain) + len(dynamic_provisioners):
        build.provisioners = [
            (dynamic_provisioners if k.startswith("dynamic") else plain).pop(0) for k in kinds
        ]
    else:
        build.provisioners = plain + dynamic_provisioners
    return build


def count(for_each: str, where: Scope | None) -> int | str:
    """How many blocks a ``dynamic`` block's ``for_each`` makes, when that is known before Packer runs."""
    value = interpolate(for_each, where) if where else for_each
    return len(value) if isinstance(value, (list, dict)) else UNKNOWN


# ---------------------------------------------------------------------------------------------- variables


def read_var_file(path: str) -> dict[str, Any]:
    """A ``*.pkrvars.hcl`` or ``*.pkrvars.json`` file as {name: value}."""
    if not os.path.isfile(path):
        raise TemplateError(f"variable file {path} does not exist", path=path)
    if not path.endswith(".json"):
        return dict(parse_hcl(path, read_text(path)))  # never cached: a var file is where secrets are set
    try:
        values = json.loads(read_text(path))
    except ValueError as exc:
        raise TemplateError(f"malformed JSON in variable file {path}: {exc}", path=path) from exc
    if not isinstance(values, dict):
        raise TemplateError(f"variable file {path} must hold a JSON object of name: value", path=path)
    return values


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
                f"in {origin}: template {template.target} declares "
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
            f"template {template.target} needs a value for required variable"
            f"{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
            f"(declared in {', '.join(sorted({declared[m].file for m in missing}))}); "
            f"set {'them' if len(missing) > 1 else 'it'} in variables or a var file",
            variables=missing,
        )
    return values


@dataclass(frozen=True)
class Scope:
    """What :func:`interpolate` can put in: variable and local values, ``path.root`` and ``path.cwd``."""

    variables: dict[str, Any]
    root: str
    cwd: str
    locals: dict[str, Any] = field(default_factory=dict)


def scope(template: Template, variables: dict[str, Any]) -> Scope:
    """The scope of a build as kiln runs Packer: from the template folder, locals put in where they can be."""
    resolved: dict[str, Any] = {}
    for _round in range(len(template.locals) + 1):  # locals may use locals: settle them in rounds
        known = Scope(variables, template.path, template.path, dict(resolved))
        resolved = {name: interpolate(value, known) for name, value in template.locals.items()}
        if resolved == known.locals:
            break
    return Scope(variables, template.path, template.path, resolved)


def interpolate(value: Any, where: Scope) -> Any:
    """Resolve ``${var.x}``, ``${local.x}``, ``${path.root}`` and ``${path.cwd}``; other expressions stay.

    Lists and maps are resolved element by element; a reference that is the whole string keeps the
    value's own type (``${var.list}`` gives the list).
    """
    if isinstance(value, list):
        return [interpolate(v, where) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, where) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def lookup(ref: str) -> Any:
        if ref == "path.root":
            return where.root
        if ref == "path.cwd":
            return where.cwd
        for prefix, table in (("var.", where.variables), ("local.", where.locals)):
            if ref.startswith(prefix) and ref[len(prefix) :] in table:
                return table[ref[len(prefix) :]]
        return _MISSING

    value = _ABSPATH.sub(r"${\1}", value)
    whole = _EXPR.fullmatch(value)
    if whole:
        found = lookup(whole.group(1))
        return value if found is _MISSING else found

    def one(match: re.Match) -> str:
        found = lookup(match.group(1))
        if found is _MISSING:
            return match.group(0)
        return found if isinstance(found, str) else json.dumps(found)

    return _EXPR.sub(one, value)


def unresolved(value: str) -> bool:
    return "${" in value
