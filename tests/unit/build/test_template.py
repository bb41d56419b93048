"""The template model against fixture templates and the sample packer/web."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import template as tm

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "templates"


def test_python_hcl2_output_shape_is_pinned():
    # An upgrade of python-hcl2 that changes this shape must fail here, not somewhere downstream.
    path = FIXTURES / "tiny" / "tiny.pkr.hcl"
    assert tm.parse_hcl(str(path), path.read_text()) == {
        "variable": [
            {"version": {"type": "string", "description": "Version name reserved by the kiln catalog."}},
            {"repository": {"type": "string", "default": "kiln-test/tiny"}},
            {"base_image": {"type": "string", "default": "kiln/base:bookworm"}},
            {"message": {"type": "string", "default": "hello, world"}},
            {"fail": {"type": "bool", "default": False}},
            {
                "sleep": {
                    "type": "number",
                    "default": 0,
                    "description": "Seconds the provisioner waits, for interruption and timeout tests.",
                }
            },
            {"token": {"type": "string", "default": "s3cret", "sensitive": True}},
        ],
        "source": [
            {
                "docker": {
                    "tiny": {
                        "image": "${var.base_image}",
                        "pull": False,
                        "commit": True,
                        "changes": ["LABEL kiln.test=tiny"],
                    }
                }
            }
        ],
        "build": [
            {
                "sources": ["source.docker.tiny"],
                "provisioner": [
                    {
                        "shell": {
                            "inline": [
                                "echo '${var.message}' > /etc/kiln-message",
                                "cat /etc/kiln-message",
                                "sleep ${var.sleep}",
                                "if [ '${var.fail}' = 'true' ]; then "
                                "echo 'failing on purpose, as asked' >&2; exit 3; fi",
                            ]
                        }
                    }
                ],
                "post-processor": [
                    {"docker-tag": {"repository": "${var.repository}", "tags": ["${var.version}"]}}
                ],
            }
        ],
    }


def test_sample_web_template():
    web = tm.load(str(ROOT / "packer" / "web"))
    assert set(web.sources) == {"docker.web", "amazon-ebs.web"}
    assert [b.sources for b in web.builds] == [["docker.web", "amazon-ebs.web"]]
    assert [p.type for p in web.provisioners()] == ["ansible", "ansible"]
    assert web.builds[0].post_processors[0][0].type == "docker-tag"
    assert web.variables["version"].required
    assert web.variables["base_image"].default == "kiln/base:bookworm"
    assert [Path(f).name for f in web.plugins_files] == ["plugins.pkr.hcl"]
    assert set(web.required_plugins) >= {"docker", "ansible"}


def test_variables_report_type_default_sensitive_required():
    described = tm.load(str(FIXTURES / "tiny")).to_dict()
    assert described["required_variables"] == ["version"]
    assert described["variables"]["fail"] == {
        "type": "bool",
        "required": False,
        "sensitive": False,
        "description": "",
        "file": "tiny.pkr.hcl",
        "default": False,
    }
    assert described["variables"]["token"]["default"] == "********"  # sensitive: never in clear
    assert "default" not in described["variables"]["version"]


def test_values_are_layered_defaults_then_files_then_variables(tmp_path):
    folder = tmp_path / "tiny"
    shutil.copytree(FIXTURES / "tiny", folder)
    (folder / "site.auto.pkrvars.hcl").write_text('message = "from auto"\nrepository = "auto/repo"\n')
    extra = tmp_path / "extra.pkrvars.hcl"
    extra.write_text('message = "from file"\n')
    template = tm.load(str(folder))
    values = tm.resolve_variables(template, {"sleep": 2}, [str(extra)], provided_by_kiln=("version",))
    assert values["message"] == "from file"
    assert values["repository"] == "auto/repo"
    assert values["sleep"] == 2
    assert values["base_image"] == "kiln/base:bookworm"
    assert "version" not in values


def test_missing_required_variable_is_named():
    template = tm.load(str(FIXTURES / "needs-region"))
    with pytest.raises(tm.TemplateError) as caught:
        tm.resolve_variables(template, {}, provided_by_kiln=("version",))
    assert "required variable 'region'" in caught.value.msg
    assert "needs-region.pkr.hcl" in caught.value.msg
    assert caught.value.details["variables"] == ["region"]


@pytest.mark.parametrize("where", ["variables", "var_file"])
def test_unknown_variable_is_refused_with_its_origin(tmp_path, where):
    template = tm.load(str(FIXTURES / "tiny"))
    var_file = tmp_path / "typo.pkrvars.hcl"
    var_file.write_text('mesage = "typo"\n')
    kwargs = {"variables": {"mesage": "typo"}} if where == "variables" else {"var_files": [str(var_file)]}
    with pytest.raises(tm.TemplateError) as caught:
        tm.resolve_variables(template, provided_by_kiln=("version",), **kwargs)
    assert "unknown variable 'mesage'" in caught.value.msg
    assert ("typo.pkrvars.hcl" if where == "var_file" else "the variables option") in caught.value.msg


def test_malformed_hcl_names_file_and_line():
    with pytest.raises(tm.TemplateError) as caught:
        tm.load(str(FIXTURES / "broken"))
    assert caught.value.msg.startswith("malformed HCL in ")
    assert "broken.pkr.hcl at line 11, column 1" in caught.value.msg
    assert caught.value.details["line"] == 11


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('variable "x" {\n  type = string\n  default = \n}\n', 3),
        ('source "docker" "x" {\n  image = "a"\n  commit = true\n', None),
        ('build {\n  sources = ["a"]\n}\n}\n', 4),
    ],
)
def test_malformed_hcl_variants(tmp_path, text, line):
    path = tmp_path / "bad.pkr.hcl"
    path.write_text(text)
    with pytest.raises(tm.TemplateError) as caught:
        tm.read_file(str(path))
    assert str(path) in caught.value.msg
    if line is not None:
        assert f"line {line}" in caught.value.msg


def test_a_packer_block_beside_sources_and_builds_is_read(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    text = (FIXTURES / "tiny" / "plugins.pkr.hcl").read_text() + (
        FIXTURES / "tiny" / "tiny.pkr.hcl"
    ).read_text()
    (folder / "all.pkr.hcl").write_text(text)
    template = tm.load(str(folder))
    assert set(template.required_plugins) == {"docker"}
    assert [Path(f).name for f in template.plugins_files] == ["all.pkr.hcl"]
    assert set(template.sources) == {"docker.tiny"}


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(tm.TemplateError, match="does not exist"):
        tm.load(str(tmp_path / "nope"))
    with pytest.raises(tm.TemplateError, match=r"no \*\.pkr\.hcl"):
        tm.load(str(tmp_path))


def test_the_parse_cache_returns_the_same_dict(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    path = str(FIXTURES / "pair" / "pair.pkr.hcl")
    first = tm.read_file(path).doc
    assert list((tmp_path / "state" / "cache").glob("hcl*/*.json"))
    assert first == tm.parse_hcl(path, Path(path).read_text())

    def no_parse(*args):
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setattr(tm, "parse_hcl", no_parse)
    assert tm.read_file(path).doc == first  # answered from the cache: the parser was not called


def test_interpolation_of_what_kiln_needs():
    where = tm.Scope({"base_image": "kiln/base:bookworm", "n": [1, 2]}, "/t", "/c", {"dir": "/t/x"})
    assert tm.interpolate("${path.root}/playbook.yml", where) == "/t/playbook.yml"
    assert tm.interpolate("${path.cwd}/a", where) == "/c/a"
    assert tm.interpolate("${var.base_image}", where) == "kiln/base:bookworm"
    assert tm.interpolate("${local.dir}/y", where) == "/t/x/y"
    assert tm.interpolate("${var.n}", where) == [1, 2]  # a whole reference keeps its type
    assert tm.interpolate("${build.ID}", where) == "${build.ID}"  # left for Packer
