"""The module base: the shared catalog option, KilnError to fail_json, warnings, diff, and option
specs derived from the dataclasses that hold the defaults."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.kiln.immutable.plugins.module_utils.common.errors import KilnError
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule, dataclass_spec
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.health import HealthCheck
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.options import RolloutOptions


def run(args: dict, action, capsys, **module_kwargs) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        module = KilnModule(argument_spec={"name": {"type": "str"}}, **module_kwargs)
        module.run(lambda: action(module))
    return json.loads(capsys.readouterr().out)


def test_every_module_gets_the_catalog_option(capsys, tmp_path):
    out = run({"catalog": str(tmp_path / "c.db")}, lambda m: {"changed": False, "got": m.params}, capsys)
    assert out["got"]["catalog"] == str(tmp_path / "c.db")


def test_a_module_without_the_catalog_refuses_it(capsys, tmp_path):
    out = run({"catalog": "x"}, lambda m: {}, capsys, catalog=False)
    assert out["failed"] and "catalog" in out["msg"]


def test_a_kiln_error_fails_with_its_message_and_details_but_no_file_info(capsys, tmp_path):
    target = tmp_path / "template.pkr.hcl"
    target.write_text("")

    def fail(module):
        raise KilnError(f"malformed HCL in {target}: line 3", path=str(target), rc=2)

    out = run({}, fail, capsys)
    assert out["failed"] is True and out["msg"] == f"malformed HCL in {target}: line 3"
    assert out["rc"] == 2
    # with a path key Ansible would add the file's owner, mode and gid to the error
    assert not {"path", "owner", "mode", "gid"} & set(out)


def test_warnings_reach_the_user_as_warnings(capsys):
    out = run({}, lambda m: {"changed": True, "warnings": ["image not removed"]}, capsys)
    # ansible-core's own warning records (structured since 2.19), not a list the module passed
    assert len(out["warnings"]) == 1 and "image not removed" in json.dumps(out["warnings"])


def test_the_diff_is_returned_in_diff_mode_only(capsys):
    result = {"changed": True, "diff": {"before": {"a": 1}, "after": {"a": 2}}}
    assert "diff" not in run({}, lambda m: result, capsys)
    assert run({"_ansible_diff": True}, lambda m: result, capsys)["diff"] == result["diff"]
    # an info module's own "diff" key is data, not diff mode
    assert run({}, lambda m: result, capsys, diff_mode=False)["diff"] == result["diff"]


def test_check_mode_is_supported_and_passed_on(capsys):
    out = run({"_ansible_check_mode": True}, lambda m: {"changed": True, "check": m.check_mode}, capsys)
    assert out["check"] is True


def test_rollout_option_defaults_come_from_the_dataclass():
    spec = dataclass_spec(RolloutOptions)
    assert spec["drain_timeout"] == {"type": "float", "default": RolloutOptions.drain_timeout}
    assert spec["batch_size"] == {"type": "raw", "default": 1}
    assert spec["max_surge"] == {"type": "raw"}  # None: no default
    assert spec["checkpoints"] == {"type": "list", "elements": "int", "default": []}
    assert spec["parallel"] == {"type": "int"}
    assert set(spec) == set(RolloutOptions.__dataclass_fields__)


def test_health_option_defaults_come_from_the_dataclass():
    spec = dataclass_spec(HealthCheck, type={"choices": ["http", "tcp", "command"]})
    assert spec["type"] == {"type": "str", "default": "http", "choices": ["http", "tcp", "command"]}
    assert spec["status"] == {"type": "list", "elements": "int", "default": [200]}
    assert spec["deadline"] == {"type": "float", "default": HealthCheck.deadline}
