# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS connection settings and clients, read the way amazon.aws modules read them.

Each setting comes from its option first, then from the environment variables amazon.aws and the
AWS SDK use (``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``), then from the SDK's own
configuration files. Keys are never logged or written anywhere: the settings' repr leaves them out.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import KilnError

# option -> environment variables, first found wins (amazon.aws's aliases and the SDK's names)
ENVIRONMENT = {
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION", "EC2_REGION"),
    "profile": ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"),
    "access_key": ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "EC2_ACCESS_KEY"),
    "secret_key": ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY", "EC2_SECRET_KEY"),
    "session_token": ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "EC2_SECURITY_TOKEN"),
    "endpoint_url": ("AWS_ENDPOINT_URL", "AWS_URL", "EC2_URL"),
}
OPTION_NAMES = tuple(ENVIRONMENT)

# Tags kiln puts on what it creates in AWS (AMIs, snapshots, instances)
TAG_IMAGE = "kiln:image"
TAG_VERSION = "kiln:version"
TAG_FINGERPRINT = "kiln:fingerprint"
TAG_REVOKED = "kiln:revoked"
TAG_GROUP = "kiln:group"
TAG_SLOT = "kiln:slot"


class AWSError(KilnError):
    """An AWS call failed or a setting is wrong; the message names the operation and the resource."""


@dataclass(frozen=True)
class AWSSettings:
    region: str | None = None
    profile: str | None = None
    access_key: str | None = field(default=None, repr=False)  # never in a log or an error message
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any] | None = None) -> AWSSettings:
        """Options (module parameters; None or empty means unset), then the environment."""
        options = options or {}
        values = {}
        for name, variables in ENVIRONMENT.items():
            value = options.get(name) or next((os.environ[v] for v in variables if os.environ.get(v)), None)
            values[name] = value or None
        return cls(**values)


_SESSIONS: dict[AWSSettings, Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _session(settings: AWSSettings):
    try:
        import boto3
    except ImportError as exc:
        raise AWSError("the AWS SDK for Python is missing: pip install boto3 botocore") from exc
    with _SESSIONS_LOCK:
        if settings not in _SESSIONS:
            _SESSIONS[settings] = boto3.session.Session(
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key,
                aws_session_token=settings.session_token,
                profile_name=settings.profile,
            )
        return _SESSIONS[settings]


def check_region(settings: AWSSettings, region: str | None = None, param: str = "region") -> str:
    """The region to use, refused when unset or not a region of any AWS partition."""
    region = region or settings.region
    if not region:
        raise AWSError(f"{param} is required: set it, or AWS_REGION in the environment")
    session = _session(settings)
    known = set()
    for partition in session.get_available_partitions():
        known.update(session.get_available_regions("ec2", partition_name=partition))
    if region not in known:
        raise AWSError(f"{param}: {region!r} is not an AWS region")
    return region


def client(settings: AWSSettings, service: str, region: str | None = None):
    """A boto3 client of ``service`` in ``region`` (default: the settings'); clients are thread-safe."""
    from botocore.config import Config

    region = check_region(settings, region)
    config = Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=30)
    return _session(settings).client(
        service, region_name=region, endpoint_url=settings.endpoint_url, config=config
    )


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError (``InvalidGroup.NotFound``), else ''."""
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


def call(operation: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an SDK failure becomes an AWSError naming ``operation``."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if type(exc).__module__.startswith(("botocore", "boto3")):
            raise AWSError(f"{operation} failed: {exc}", aws_error=error_code(exc)) from exc
        raise


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def argument_spec() -> dict[str, dict[str, Any]]:
    """The AWS options of a module (documented by the doc fragment kiln.immutable.aws)."""
    return {
        "region": {"type": "str", "aliases": ["aws_region"]},
        "profile": {"type": "str", "aliases": ["aws_profile"]},
        "access_key": {"type": "str", "aliases": ["aws_access_key_id", "aws_access_key"], "no_log": True},
        "secret_key": {"type": "str", "aliases": ["aws_secret_access_key", "aws_secret_key"], "no_log": True},
        "session_token": {"type": "str", "aliases": ["aws_session_token", "security_token"], "no_log": True},
        "endpoint_url": {"type": "str", "aliases": ["aws_endpoint_url"]},
    }
