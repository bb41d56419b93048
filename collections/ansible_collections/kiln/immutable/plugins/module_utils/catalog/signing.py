# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SSH signatures over catalog events, as git signs commits: ``ssh-keygen -Y sign`` / ``-Y verify``.

An event's payload is its content plus the previous event's hash, in one canonical JSON form
(:func:`payload`). A :class:`Signer` signs it in the ``kiln`` namespace with a key found, in order, in
the ``key`` option, ``$KILN_SIGNING_KEY``, the key the set-up made (``~/.config/kiln/signing_key``) or
ssh-agent (its first key). :class:`AllowedSigners` (the ``allowed_signers`` file kept beside the policy)
names who signed and checks the signature at the time the event says it was made, so a key retired with
``valid-before`` still vouches for what it signed while it was valid and for nothing signed later::

    ci@example.com namespaces="kiln" ssh-ed25519 AAAA...
    alice@example.com namespaces="kiln",valid-before="20270101" ssh-ed25519 AAAA...   # retired
    alice@example.com namespaces="kiln",valid-after="20261201" ssh-ed25519 AAAA...    # her new key

Nothing here trusts the environment for who is acting: an identity is whatever allowed_signers says
the key that made the signature belongs to.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..common.errors import KilnError

NAMESPACE = "kiln"
KEY_ENV = "KILN_SIGNING_KEY"
TIMEOUT_S = 30


class SigningError(KilnError):
    """No key to sign with, or ssh-keygen could not sign; names the key and ssh-keygen's words."""


class BadSignature(KilnError):
    """A signature that does not hold: ``details['reason']`` says why."""


def default_key_path() -> str:
    """Where the set-up makes a local signing key when none is configured."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "kiln", "signing_key")


def payload(content: Mapping[str, Any], previous: str | None) -> bytes:
    """The bytes an event's signature covers: its content and the previous event's hash, canonical JSON."""
    doc = {"content": content, "previous": previous}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Signature:
    """Who signed (their identity in allowed_signers) and the armored SSH signature."""

    signer: str
    armored: str

    def to_dict(self) -> dict:
        return {"signer": self.signer, "signature": self.armored}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Signature | None:
        if not doc or not doc.get("signature"):
            return None
        return cls(str(doc.get("signer") or ""), str(doc["signature"]))


def _ssh_keygen(args: list[str], data: bytes, what: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ssh-keygen")
    if not exe:
        raise SigningError(
            f"{what}: ssh-keygen not found; install OpenSSH (Debian: apt-get install openssh-client)"
        )
    try:
        return subprocess.run(
            [exe, *args], input=data, capture_output=True, timeout=TIMEOUT_S, check=False, env=os.environ
        )
    except subprocess.TimeoutExpired as exc:  # an agent asking for confirmation nobody gives
        raise SigningError(f"{what}: ssh-keygen gave no answer in {TIMEOUT_S}s", cmd=[exe, *args]) from exc


def _said(done: subprocess.CompletedProcess) -> str:
    return (done.stderr or b"").decode(errors="replace").strip() or (done.stdout or b"").decode(
        errors="replace"
    )


def _ssh_time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y%m%d%H%M%SZ")


class Signer:
    """A signing key: a private key file, or a public key file whose private half ssh-agent holds."""

    def __init__(self, key: str | None = None):
        self.key = key or os.environ.get(KEY_ENV) or None
        if not self.key and os.path.isfile(default_key_path()):
            self.key = default_key_path()

    def describe(self) -> str:
        return self.key or "the first key of ssh-agent"

    def sign(self, data: bytes) -> str:
        """The armored signature of ``data`` in kiln's namespace; SigningError naming the key otherwise."""
        with tempfile.TemporaryDirectory(prefix="kiln-sign-") as folder:
            key = self.key or self._agent_key(folder)
            key = os.path.abspath(os.path.expanduser(key))
            if not os.path.isfile(key):
                raise SigningError(
                    f"signing key {key} does not exist (set {KEY_ENV} or the signing_key option)"
                )
            done = _ssh_keygen(["-Y", "sign", "-q", "-f", key, "-n", NAMESPACE], data, f"signing with {key}")
        text = done.stdout.decode(errors="replace")
        if done.returncode != 0 or "BEGIN SSH SIGNATURE" not in text:
            raise SigningError(f"cannot sign with {key}: {_said(done)}", path=key, rc=done.returncode)
        return text

    @staticmethod
    def _agent_key(folder: str) -> str:
        if not os.environ.get("SSH_AUTH_SOCK"):
            raise SigningError(
                f"no signing key: set {KEY_ENV} to a key file (or to the public key of a key ssh-agent "
                f"holds), run scripts/setup to make {default_key_path()}, or start ssh-agent with a key"
            )
        exe = shutil.which("ssh-add") or "ssh-add"
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        keys = [line for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
        if not keys:
            raise SigningError(
                f"no signing key: ssh-agent holds none ({done.stderr.strip() or done.stdout.strip()})"
            )
        path = os.path.join(folder, "agent.pub")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(keys[0] + "\n")
        return path


class AllowedSigners:
    """The ``allowed_signers`` file: which key is whose, in which namespaces, from when until when."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        if not os.path.isfile(self.path):
            raise SigningError(
                f"allowed_signers file {self.path} does not exist: list the signers' public keys there "
                "(scripts/setup lists a local key for inventories/local; see the README's Access control)",
                path=self.path,
            )

    def identities(self, armored: str, at: dt.datetime) -> list[str]:
        """Every identity whose key, valid at ``at``, made this signature (data not checked)."""
        with self._signature_file(armored) as sig:
            done = _ssh_keygen(
                ["-Y", "find-principals", "-f", self.path, "-s", sig, "-O", f"verify-time={_ssh_time(at)}"],
                b"",
                f"reading {self.path}",
            )
        if done.returncode != 0:
            return []
        return [line.strip() for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]

    def sign(self, signer: Signer, data: bytes, at: dt.datetime) -> Signature:
        """Sign ``data`` and name who signed; SigningError when allowed_signers does not know the key."""
        armored = signer.sign(data)
        names = self.identities(armored, at)
        if not names:
            raise SigningError(
                f"the signing key ({signer.describe()}) is not in {self.path}, or not valid now: "
                "add its public key there (see the README's Access control)",
                path=self.path,
            )
        return Signature(names[0], armored)

    def verify(self, data: bytes, signature: Signature, at: dt.datetime) -> None:
        """BadSignature unless ``signature.signer``'s key, valid at ``at``, signed exactly ``data``."""
        with self._signature_file(signature.armored) as sig:
            done = _ssh_keygen(
                ["-Y", "verify", "-f", self.path, "-I", signature.signer, "-n", NAMESPACE, "-s", sig]
                + ["-O", f"verify-time={_ssh_time(at)}"],
                data,
                f"verifying against {self.path}",
            )
        if done.returncode != 0:
            said = _said(done).replace("\n", "; ")
            raise BadSignature(
                f"signature by {signature.signer!r} does not verify against {self.path} at "
                f"{at.astimezone(dt.UTC).isoformat()}: {said}",
                reason=said,
                signer=signature.signer,
            )

    @staticmethod
    @contextlib.contextmanager
    def _signature_file(armored: str) -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="kiln-verify-") as folder:
            path = os.path.join(folder, "event.sig")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(armored)
            yield path
