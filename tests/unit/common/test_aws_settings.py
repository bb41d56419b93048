"""AWS settings read as amazon.aws reads them: option first, then the environment; keys never shown."""

from __future__ import annotations

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.common import aws


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for names in aws.ENVIRONMENT.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)


def test_options_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    settings = aws.AWSSettings.from_options({"region": "eu-west-1", "access_key": None})
    assert settings.region == "eu-west-1" and settings.access_key == "AKIAENV"


@pytest.mark.parametrize(
    "variable, option",
    [
        ("AWS_DEFAULT_REGION", "region"),
        ("EC2_REGION", "region"),
        ("AWS_PROFILE", "profile"),
        ("AWS_SECRET_ACCESS_KEY", "secret_key"),
        ("AWS_SECURITY_TOKEN", "session_token"),
        ("AWS_ENDPOINT_URL", "endpoint_url"),
    ],
)
def test_each_setting_falls_back_to_its_environment_variables(monkeypatch, variable, option):
    monkeypatch.setenv(variable, "value")
    assert getattr(aws.AWSSettings.from_options(), option) == "value"


def test_the_settings_never_show_a_key():
    settings = aws.AWSSettings(
        region="eu-west-1", access_key="AKIASECRET", secret_key="s3cr3t", session_token="t"
    )
    shown = repr(settings)
    assert "AKIASECRET" not in shown and "s3cr3t" not in shown and "eu-west-1" in shown


def test_an_unknown_or_missing_region_is_refused_naming_the_parameter():
    with pytest.raises(aws.AWSError, match="'xx-nowhere-1' is not an AWS region"):
        aws.check_region(aws.AWSSettings(region="xx-nowhere-1"))
    with pytest.raises(aws.AWSError, match="region is required"):
        aws.check_region(aws.AWSSettings())
    assert aws.check_region(aws.AWSSettings(region="eu-west-1")) == "eu-west-1"


def test_argument_spec_hides_the_secrets():
    spec = aws.argument_spec()
    assert set(spec) == set(aws.OPTION_NAMES)
    assert {name for name, opt in spec.items() if opt.get("no_log")} == {
        "access_key",
        "secret_key",
        "session_token",
    }
