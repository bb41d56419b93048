# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion policy: who may move which channel, and what a version needs before it may.

The policy is a YAML file kept in the repository (``inventories/local/policy.yml``)::

    channels:
      dev: {}                               # anyone, any version
      staging:
        requires_passing_test: true         # the newest recorded test of the version passed
        requires_channel: dev               # the version was on dev before
      prod:
        principals: [root, "ci-*"]          # OS users or $KILN_PRINCIPAL, shell-style patterns
        requires_passing_test: true
        requires_channel: staging
    images:                                 # optional: per-image channel rules replace the defaults
      lb:
        channels: {prod: {principals: ["*"]}}

With ``signing`` on, every catalog event is signed and the rules speak of signers, the identities of
``allowed_signers`` (see :mod:`.signing`); the environment then grants nothing::

    signing:
      allowed_signers: allowed_signers      # beside this file unless absolute
    channels:
      prod:
        signers: ["release-*@example.com"]  # whose signed move counts
        approvals: 2                        # distinct signers before the move takes effect
        requires_passing_test:
          signers: [ci@example.com]         # the passing test result was signed by CI

Channels missing from the policy are refused, so a typo ("prdo") never creates a channel.
Every check returns the list of rules that failed; an empty list means the move is allowed.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import CatalogError

_RULE_KEYS = {
    "principals",
    "signers",
    "approvals",
    "requires_passing_test",
    "requires_channel",
    "description",
}
_SIGNING_KEYS = {"allowed_signers"}


class PolicyError(CatalogError):
    """The policy file itself is wrong: names the file and the key or line."""


class PolicyRefused(CatalogError):
    """A policy rule refused a move; ``details['rules']`` lists every failed rule."""


@dataclass
class ChannelRule:
    principals: list[str] = field(default_factory=lambda: ["*"])
    requires_passing_test: bool = False
    requires_channel: str | None = None
    signers: list[str] = field(default_factory=lambda: ["*"])
    approvals: int = 1
    test_signers: list[str] | None = None  # requires_passing_test: {signers: [...]}


@dataclass
class Policy:
    channels: dict[str, ChannelRule]
    images: dict[str, dict[str, ChannelRule]] = field(default_factory=dict)
    source: str = "<policy>"
    allowed_signers: str | None = None  # the allowed_signers file when signing is on

    @property
    def signed(self) -> bool:
        return self.allowed_signers is not None

    @classmethod
    def load(cls, path: str) -> Policy:
        import yaml

        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except FileNotFoundError as exc:
            raise PolicyError(f"promotion policy {path} does not exist") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise PolicyError(f"promotion policy {path}{where}: not valid YAML: {exc}") from exc
        return cls.from_dict(data, source=path)

    @classmethod
    def locate(cls, path: str | None) -> Policy | None:
        """The policy at ``path``, else at ``$KILN_POLICY``; None when neither is set (no rules)."""
        import os

        path = path or os.environ.get("KILN_POLICY")
        return cls.load(path) if path else None

    @classmethod
    def from_dict(cls, data: Any, source: str = "<policy>") -> Policy:
        if not isinstance(data, dict) or not isinstance(data.get("channels"), dict):
            raise PolicyError(f"promotion policy {source}: needs a 'channels' mapping at the top")
        unknown = set(data) - {"channels", "images", "signing"}
        if unknown:
            raise PolicyError(
                f"promotion policy {source}: unknown top-level key(s) {', '.join(sorted(unknown))}"
            )
        channels = _channel_rules(data["channels"], source, "channels")
        images = {}
        for image, spec in (data.get("images") or {}).items():
            if not isinstance(spec, dict) or not isinstance(spec.get("channels"), dict):
                raise PolicyError(f"promotion policy {source}: images.{image} needs a 'channels' mapping")
            images[image] = _channel_rules(spec["channels"], source, f"images.{image}.channels")
        return cls(channels=channels, images=images, source=source, allowed_signers=_signing(data, source))

    def rules_for(self, image: str) -> dict[str, ChannelRule]:
        return self.images.get(image, self.channels)

    def rule(self, image: str, channel: str) -> ChannelRule:
        rules = self.rules_for(image)
        if channel not in rules:
            msg = (
                f"channel {channel!r} of image {image!r} is not in the promotion policy {self.source} "
                f"(known channels: {', '.join(rules) or 'none'})"
            )
            raise PolicyRefused(msg, rules=[msg])
        return rules[channel]

    def check_principal(self, image: str, channel: str, principal: str) -> list[str]:
        rule = self.rule(image, channel)
        if any(fnmatch.fnmatchcase(principal, pattern) for pattern in rule.principals):
            return []
        return [
            f"rule 'principals': {principal!r} may not move channel {channel!r} "
            f"(allowed: {', '.join(rule.principals) or 'nobody'})"
        ]

    def check_promote(self, version: Any, channel: str, principal: str, channels_seen: set[str]) -> list[str]:
        """Every rule the move of ``version`` (a catalog Version) onto ``channel`` fails."""
        rule = self.rule(version.image, channel)
        failures = self.check_principal(version.image, channel, principal)
        if rule.requires_passing_test:
            last = version.tests[-1] if version.tests else None
            if last is None:
                failures.append(f"rule 'requires_passing_test': {version.ref} has no recorded test result")
            elif not last.get("passed"):
                failures.append(
                    f"rule 'requires_passing_test': the newest test of {version.ref} failed "
                    f"(at {last.get('at')})"
                )
        if rule.requires_channel and rule.requires_channel not in channels_seen:
            failures.append(
                f"rule 'requires_channel': {version.ref} was never on channel {rule.requires_channel!r}"
            )
        return failures

    def check_signers(
        self, image: str, channel: str, signers: list[str], needed: int | None = None
    ) -> list[str]:
        """The rules ``signers`` and ``approvals``: enough distinct allowed signers signed the move.

        ``needed`` is the rule's ``approvals`` unless given (a rollback needs one signer).
        """
        rule = self.rule(image, channel)
        needed = rule.approvals if needed is None else needed
        allowed = sorted({s for s in signers if any(fnmatch.fnmatchcase(s, p) for p in rule.signers)})
        failures = [
            f"rule 'signers': {s!r} may not move channel {channel!r} (allowed: {', '.join(rule.signers)})"
            for s in sorted(set(signers) - set(allowed))
        ]
        if len(allowed) < needed:
            failures.append(
                f"rule 'approvals': channel {channel!r} needs {needed} distinct signers, has "
                f"{len(allowed)} ({', '.join(allowed) or 'none'})"
            )
        return failures

    def to_dict(self) -> dict:
        def dump(rules: dict[str, ChannelRule]) -> dict:
            return {name: vars(rule).copy() for name, rule in rules.items()}

        return {
            "channels": dump(self.channels),
            "images": {k: {"channels": dump(v)} for k, v in self.images.items()},
            "allowed_signers": self.allowed_signers,
        }


def _signing(data: dict, source: str) -> str | None:
    spec = data.get("signing")
    if spec is None or spec is False:
        return None
    if spec is True:
        spec = {}
    if not isinstance(spec, dict) or set(spec) - _SIGNING_KEYS:
        raise PolicyError(
            f"promotion policy {source}: signing must be a mapping with {', '.join(sorted(_SIGNING_KEYS))}"
        )
    path = os.path.expanduser(str(spec.get("allowed_signers") or "allowed_signers"))
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(os.path.abspath(source)), path)


def _patterns(value: Any, source: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise PolicyError(f"promotion policy {source}: {where} must be a list of names or patterns")
    return value


def _channel_rules(spec: dict, source: str, where: str) -> dict[str, ChannelRule]:
    rules: dict[str, ChannelRule] = {}
    for name, body in spec.items():
        body = body or {}
        if not isinstance(body, dict):
            raise PolicyError(f"promotion policy {source}: {where}.{name} must be a mapping")
        unknown = set(body) - _RULE_KEYS
        if unknown:
            raise PolicyError(
                f"promotion policy {source}: {where}.{name} has unknown rule(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_RULE_KEYS))})"
            )
        approvals = body.get("approvals", 1)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or approvals < 1:
            raise PolicyError(
                f"promotion policy {source}: {where}.{name}.approvals must be a number, 1 or more"
            )
        tested = body.get("requires_passing_test", False)
        if isinstance(tested, dict):
            if set(tested) - {"signers"}:
                raise PolicyError(
                    f"promotion policy {source}: {where}.{name}.requires_passing_test takes signers"
                )
            test_signers = _patterns(
                tested.get("signers", ["*"]), source, f"{where}.{name}.requires_passing_test"
            )
        else:
            test_signers = None
        rules[str(name)] = ChannelRule(
            principals=_patterns(body.get("principals", ["*"]), source, f"{where}.{name}.principals"),
            requires_passing_test=bool(tested),
            requires_channel=body.get("requires_channel"),
            signers=_patterns(body.get("signers", ["*"]), source, f"{where}.{name}.signers"),
            approvals=approvals,
            test_signers=test_signers,
        )
    for name, rule in rules.items():
        if rule.requires_channel is not None and rule.requires_channel not in rules:
            raise PolicyError(
                f"promotion policy {source}: {where}.{name}.requires_channel names unknown channel "
                f"{rule.requires_channel!r}"
            )
    return rules
