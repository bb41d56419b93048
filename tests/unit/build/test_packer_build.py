"""The build flow's pieces that need no Docker: source selection, the staged folder, the info module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.build import flow as bm
from ansible_collections.kiln.immutable.plugins.module_utils.build import template as tm
from ansible_collections.kiln.immutable.plugins.module_utils.build.packer import PackerInfo

ROOT = Path(__file__).resolve().parents[3]
WEB = ROOT / "packer" / "web"


@pytest.mark.parametrize(
    ("only", "except_", "expected"),
    [
        ([], [], ["amazon-ebs.web", "docker.web"]),
        (["docker.*"], [], ["docker.web"]),
        (["docker.web"], [], ["docker.web"]),
        ([], ["amazon-ebs.*"], ["docker.web"]),
    ],
)
def test_source_selection(only, except_, expected):
    assert bm.selected_sources(tm.load(str(WEB)), only, except_) == expected


def test_a_pattern_matching_nothing_is_refused_with_the_sources():
    with pytest.raises(bm.BuildError) as caught:
        bm.selected_sources(tm.load(str(WEB)), ["qemu.*"], [])
    assert "no source matches 'qemu.*'" in caught.value.msg
    assert "amazon-ebs.web, docker.web" in caught.value.msg


def _plan(version: str) -> bm.Plan:
    template = tm.load(str(WEB))
    return bm.Plan(
        bm.BuildRequest(str(WEB)), "web", template, PackerInfo("packer", version), {}, [], None, None, 0
    )


def test_old_packer_builds_from_a_sibling_copy_without_required_plugins():
    with bm.staged(_plan("1.6.6")) as folder:
        assert Path(folder).parent == WEB.parent  # ${path.root}/.. still points at the same place
        assert sorted(os.listdir(folder)) == ["playbook.yml", "web.pkr.hcl"]
        assert os.path.realpath(Path(folder) / "web.pkr.hcl") == str(WEB / "web.pkr.hcl")
    assert not Path(folder).exists()


def test_modern_packer_uses_the_template_as_it_is():
    with bm.staged(_plan("1.11.2")) as folder:
        assert folder == str(WEB)


def test_modern_packer_gets_a_generated_plugins_block_when_there_is_none(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "web.pkr.hcl").write_text((WEB / "web.pkr.hcl").read_text())
    template = tm.load(str(tmp_path / "t"))
    plan = bm.Plan(
        bm.BuildRequest(template.path), "t", template, PackerInfo("p", "1.10.0"), {}, [], None, None, 0
    )
    with bm.staged(plan) as folder:
        generated = tm.read_file(os.path.join(folder, "kiln-plugins.pkr.hcl")).doc
    plugins = generated["packer"][0]["required_plugins"][0]
    assert sorted(plugins) == ["amazon", "ansible", "docker"]
    assert plugins["docker"]["source"] == "github.com/hashicorp/docker"


def test_template_info_reports_without_refusing_missing_values():
    info = bm.template_info(str(ROOT / "tests" / "fixtures" / "templates" / "needs-region"))
    assert info["missing_variables"] == ["region"]  # version is kiln's to set
    assert info["kiln_ready"] is True
    assert info["resolved_variables"] == {}


def test_packer_template_info_module(monkeypatch, capsys):
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.kiln.immutable.plugins.modules import packer_template_info

    with patch_module_args({"template": str(WEB), "variables": {"fault": "unhealthy"}}):
        with pytest.raises(SystemExit) as exited:
            packer_template_info.main()
    result = json.loads(capsys.readouterr().out)
    assert exited.value.code == 0
    assert result["changed"] is False
    assert result["required_variables"] == ["version"]
    assert result["resolved_variables"]["fault"] == "unhealthy"
    assert set(result["sources"]) == {"docker.web", "amazon-ebs.web"}


def test_packer_template_info_module_fails_naming_the_file(capsys):
    from ansible.module_utils.testing import patch_module_args
    from ansible_collections.kiln.immutable.plugins.modules import packer_template_info

    broken = ROOT / "tests" / "fixtures" / "templates" / "broken"
    with patch_module_args({"template": str(broken)}):
        with pytest.raises(SystemExit) as exited:
            packer_template_info.main()
    result = json.loads(capsys.readouterr().out)
    assert exited.value.code == 1
    assert "broken.pkr.hcl at line 11" in result["msg"]
    assert result["line"] == 11
