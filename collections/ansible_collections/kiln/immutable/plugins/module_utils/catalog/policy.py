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

Channels missing from the policy are refused, so a typo ("prdo") never creates a channel.
Every check returns the list of rules that failed; an empty list means the move is allowed.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from .errors import CatalogError

_RULE_KEYS = {"principals", "requires_passing_test", "requires_channel", "description"}


class PolicyError(CatalogError):
    """The policy file itself is wrong: names the file and the key or line."""


class PolicyRefused(CatalogError):
    """A policy rule refused a move; ``details['rules']`` lists every failed rule."""


@dataclass
class ChannelRule:
    principals: list[str] = field(default_factory=lambda: ["*"])
    requires_passing_test: bool = False
    requires_channel: str | None = None


@dataclass
class Policy:
    channels: dict[str, ChannelRule]
    images: dict[str, dict[str, ChannelRule]] = field(default_factory=dict)
    source: str = "<policy>"

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
        unknown = set(data) - {"channels", "images"}
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
        return cls(channels=channels, images=images, source=source)

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

    def to_dict(self) -> dict:
        def dump(rules: dict[str, ChannelRule]) -> dict:
            return {name: vars(rule).copy() for name, rule in rules.items()}

        return {
            "channels": dump(self.channels),
            "images": {k: {"channels": dump(v)} for k, v in self.images.items()},
        }


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
        principals = body.get("principals", ["*"])
        if isinstance(principals, str):
            principals = [principals]
        if not isinstance(principals, list) or not all(isinstance(p, str) for p in principals):
            raise PolicyError(f"promotion policy {source}: {where}.{name}.principals must be a list of names")
        rules[str(name)] = ChannelRule(
            principals=principals,
            requires_passing_test=bool(body.get("requires_passing_test", False)),
            requires_channel=body.get("requires_channel"),
        )
    for name, rule in rules.items():
        if rule.requires_channel is not None and rule.requires_channel not in rules:
            raise PolicyError(
                f"promotion policy {source}: {where}.{name}.requires_channel names unknown channel "
                f"{rule.requires_channel!r}"
            )
    return rules
