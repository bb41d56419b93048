"""Templates read as Packer reads them: each test names a way a published template was misread."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import flow as bm
from ansible_collections.kiln.immutable.plugins.module_utils.build import template as tm
from ansible_collections.kiln.immutable.plugins.module_utils.build.packer import PackerInfo

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "fixtures" / "templates" / "corpus"
SOURCE = 'source "docker" "web" {\n  image  = "debian"\n  commit = true\n}\n'


def folder_with(tmp_path, **files) -> Path:
    folder = tmp_path / "t"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text) if isinstance(text, str) else (
            folder / name.replace("__", ".")
        ).write_bytes(text)
    return folder


def plan_for(template: tm.Template, packer_version: str = "1.6.6") -> bm.Plan:
    return bm.Plan(
        bm.BuildRequest(template.target), template.name, template, PackerInfo("packer", packer_version),
        {}, [], None, None, 0,
    )  # fmt: skip


def test_a_packer_block_in_the_main_file_is_left_out_for_packer_1_6(tmp_path):
    text = (CORPUS / "tutorial-singles" / "docker-ubuntu.pkr.hcl").read_text()
    folder = folder_with(tmp_path, main__pkr__hcl=text)
    template = tm.load(str(folder))
    assert set(template.required_plugins) == {"docker"}
    with bm.staged(plan_for(template)) as staged:
        copy = Path(staged, "main.pkr.hcl").read_text()
        assert "packer" not in tm.read_file(os.path.join(staged, "main.pkr.hcl")).doc
        assert set(tm.read_file(os.path.join(staged, "main.pkr.hcl")).doc) == {"variable", "source", "build"}
        # line for line: Packer's error messages name the lines the user wrote
        assert copy.count("\n") == text.count("\n")
        assert copy.splitlines()[14] == text.splitlines()[14]


def test_a_file_holding_only_the_packer_block_is_left_out(tmp_path):
    folder = folder_with(
        tmp_path,
        plugins__pkr__hcl='packer {\n  required_version = ">= 1.6"\n}\n',
        main__pkr__hcl=SOURCE + 'build {\n  sources = ["source.docker.web"]\n}\n',
    )
    with bm.staged(plan_for(tm.load(str(folder)))) as staged:
        assert sorted(os.listdir(staged)) == ["main.pkr.hcl"]


def test_modern_packer_keeps_the_block_and_is_initialised():
    template = tm.load(str(CORPUS / "tutorial-singles" / "docker-ubuntu.pkr.hcl"))
    with bm.staged(plan_for(template, "1.11.2")) as staged:
        assert staged == template.target  # the file as written: its own required_plugins


def test_a_variables_block_declares_variables(tmp_path):
    template = tm.load(str(CORPUS / "vagrant-boxes"))
    assert template.variables["memory"].default == 2048
    values = tm.resolve_variables(template, {"memory": 4096})  # not refused as unknown
    assert values["memory"] == 4096 and values["ssh_username"] == "vagrant"


def test_auto_json_var_files_apply_and_named_json_var_files_load():
    template = tm.load(str(CORPUS / "json-varfiles"))
    assert [Path(f).name for f in template.auto_var_files] == ["defaults.auto.pkrvars.json"]
    assert [Path(f).name for f in template.var_files] == ["prod.pkrvars.json"]
    values = tm.resolve_variables(template, {}, [str(CORPUS / "json-varfiles" / "prod.pkrvars.json")])
    assert values["region"] == "eu-west-1"  # required, set by the auto file
    assert values["environment"] == "prod"


def test_dynamic_blocks_are_reported_and_planned():
    template = tm.load(str(CORPUS / "dynamic-blocks"))
    assert template.builds[0].sources == ["docker.base"]
    assert bm.selected_sources(template, [], []) == ["docker.base"]  # not "only/except leave no source"
    described = template.to_dict(tm.scope(template, {"flavours": ["a", "b", "c"], "extra_files": ["x"]}))
    build = described["builds"][0]
    assert build["dynamic_sources"] == [{"source": "docker.base", "for_each": "${var.flavours}", "count": 3}]
    assert [p["type"] for p in build["provisioners"]] == ["file", "shell"]  # in file order
    assert build["provisioners"][0]["dynamic"] == {"for_each": "${var.extra_files}", "count": 1}
    assert template.to_dict()["builds"][0]["dynamic_sources"][0]["count"] == tm.UNKNOWN


def test_sources_given_as_an_expression_are_not_split_into_characters(tmp_path):
    folder = folder_with(tmp_path, main__pkr__hcl=SOURCE + "build {\n  sources = var.sources\n}\n")
    template = tm.load(str(folder))
    build = template.to_dict()["builds"][0]
    assert build["sources"] == tm.UNKNOWN == "not known before Packer runs"
    assert build["sources_expression"] == "${var.sources}"
    assert bm.selected_sources(template, ["docker.*"], []) == ["docker.web"]


def test_the_sources_prefix_is_understood_by_only(tmp_path):
    folder = folder_with(tmp_path, main__pkr__hcl=SOURCE + 'build {\n  sources = ["sources.docker.web"]\n}\n')
    assert bm.selected_sources(tm.load(str(folder)), ["docker.web"], []) == ["docker.web"]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("variable {\n  type = string\n}\n", 1, "variable block has no name"),
        ('\n\nsource "docker" {\n  image = "x"\n}\n', 3, "source block has no name"),
        ('build {\n  provisioner {\n    inline = ["x"]\n  }\n}\n', 2, "provisioner block has no name"),
    ],
)
def test_a_block_without_its_name_is_refused_with_file_and_line(tmp_path, text, line, what):
    folder = folder_with(tmp_path, main__pkr__hcl=text)
    with pytest.raises(tm.TemplateError) as caught:
        tm.load(str(folder))
    assert f"main.pkr.hcl line {line}: this {what}" in caught.value.msg
    assert caught.value.details["line"] == line


def test_a_byte_order_mark_is_accepted():
    template = tm.load(str(CORPUS / "bom-sensitive"))
    assert set(template.variables) == {"api_token", "visible"}
    values = tm.resolve_variables(template, {}, [str(CORPUS / "bom-sensitive" / "secrets.pkrvars.hcl")])
    assert values["api_token"] == "tok-from-file"


def test_sensitive_is_taken_as_packer_takes_it(tmp_path):
    described = tm.load(str(CORPUS / "bom-sensitive")).to_dict()
    assert described["variables"]["visible"]["sensitive"] is False
    assert described["variables"]["visible"]["default"] == "shown-in-clear"
    assert described["variables"]["api_token"]["sensitive"] is True
    folder = folder_with(tmp_path, main__pkr__hcl='variable "x" {\n  sensitive = "maybe"\n}\n' + SOURCE)
    with pytest.raises(tm.TemplateError, match="main.pkr.hcl line 1: sensitive must be true or false"):
        tm.load(str(folder))


def test_a_single_file_is_a_template_of_its_own():
    alpine = CORPUS / "tutorial-singles" / "docker-alpine.pkr.hcl"
    template = tm.load(str(alpine))
    assert template.single_file and template.name == "docker-alpine"
    assert [Path(f).name for f in template.files] == ["docker-alpine.pkr.hcl"]
    assert template.auto_var_files == []  # Packer applies auto var files to a folder only
    with pytest.raises(tm.TemplateError, match="required variable 'greeting'"):
        tm.resolve_variables(template, {})
    with bm.staged(plan_for(template)) as staged:
        assert Path(staged).name == "docker-alpine.pkr.hcl"  # Packer is pointed at the file alone
        assert "docker" not in Path(staged).read_text().split("variable")[0]


def test_the_parse_cache_never_keeps_a_sensitive_default(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path / "state"))
    legacy = tmp_path / "state" / "cache" / "hcl"  # where an older kiln cached every file, secrets and all
    legacy.mkdir(parents=True)
    (legacy / "0.json").write_text('{"variable": [{"api_token": {"default": "tok-default-value"}}]}')
    template = tm.load(str(CORPUS / "bom-sensitive"))
    tm.resolve_variables(template, {}, [str(CORPUS / "bom-sensitive" / "secrets.pkrvars.hcl")])
    tm.load(str(CORPUS / "windows-server"))
    cached = " ".join(p.read_text() for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert "tok-default-value" not in cached
    assert "tok-from-file" not in cached
    assert "P@ssw0rd-for-the-build" not in cached


def test_template_info_reports_the_corpus_without_secrets():
    info = bm.template_info(str(CORPUS / "windows-server"))
    assert "P@ssw0rd-for-the-build" not in json.dumps(info)
    assert info["resolved_variables"]["winrm_password"] == "********"
