"""Signing and verifying catalog events with the real ssh-keygen and ssh-agent (OpenSSH 9.2)."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from ansible_collections.kiln.immutable.plugins.module_utils.catalog import signing

NOW = dt.datetime.now(dt.UTC)


def make_key(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def allowed_line(identity: str, key: Path, options: str = 'namespaces="kiln"') -> str:
    return f"{identity} {options} {key.with_suffix('.pub').read_text().strip()}\n"


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch, tmp_path):
    monkeypatch.delenv(signing.KEY_ENV, raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def keys(tmp_path):
    ci, alice = make_key(tmp_path, "ci"), make_key(tmp_path, "alice")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(allowed_line("ci@example.com", ci) + allowed_line("alice@example.com", alice))
    return ci, alice, signing.AllowedSigners(str(allowed))


def test_payload_is_canonical_and_covers_the_previous_hash():
    assert signing.payload({"b": 1, "a": "é"}, "h1") == signing.payload({"a": "é", "b": 1}, "h1")
    assert signing.payload({"a": 1}, "h1") != signing.payload({"a": 1}, "h2")
    assert signing.payload({"a": 1}, None) == b'{"content":{"a":1},"previous":null}'


def test_a_signature_names_its_signer_and_verifies(keys):
    ci, _, allowed = keys
    data = signing.payload({"action": "promote", "channel": "prod"}, "abc")
    sig = allowed.sign(signing.Signer(str(ci)), data, NOW)
    assert sig.signer == "ci@example.com"
    assert sig.armored.startswith("-----BEGIN SSH SIGNATURE-----")
    allowed.verify(data, sig, NOW)
    assert signing.Signature.from_dict(sig.to_dict()) == sig


def test_changed_data_or_claimed_signer_fails(keys):
    ci, _, allowed = keys
    data = signing.payload({"version": "api/3"}, None)
    sig = allowed.sign(signing.Signer(str(ci)), data, NOW)
    with pytest.raises(signing.BadSignature, match="does not verify"):
        allowed.verify(signing.payload({"version": "api/4"}, None), sig, NOW)
    with pytest.raises(signing.BadSignature):  # alice's name on ci's signature
        allowed.verify(data, signing.Signature("alice@example.com", sig.armored), NOW)


def test_an_unlisted_key_cannot_sign(keys, tmp_path):
    *_, allowed = keys
    stranger = make_key(tmp_path, "stranger")
    with pytest.raises(signing.SigningError, match="is not in .*allowed_signers"):
        allowed.sign(signing.Signer(str(stranger)), b"x", NOW)


def test_another_namespace_is_refused(keys, tmp_path):
    ci, _, allowed = keys
    data = b"promote"
    done = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-q", "-f", str(ci), "-n", "git"], input=data, capture_output=True
    )
    with pytest.raises(signing.BadSignature):
        allowed.verify(data, signing.Signature("ci@example.com", done.stdout.decode()), NOW)


def test_a_retired_key_vouches_for_its_past_only(tmp_path):
    old, new = make_key(tmp_path, "old"), make_key(tmp_path, "new")
    retired = NOW - dt.timedelta(days=1)
    stamp = retired.strftime("%Y%m%d%H%M%SZ")
    path = tmp_path / "allowed_signers"
    path.write_text(
        allowed_line("alice@example.com", old, f'namespaces="kiln",valid-before="{stamp}"')
        + allowed_line("alice@example.com", new, f'namespaces="kiln",valid-after="{stamp}"')
    )
    allowed = signing.AllowedSigners(str(path))
    data = signing.payload({"action": "promote"}, None)
    then = NOW - dt.timedelta(days=2)
    old_sig = signing.Signature("alice@example.com", signing.Signer(str(old)).sign(data))
    allowed.verify(data, old_sig, then)  # signed while the key was valid: still good
    with pytest.raises(signing.BadSignature, match="expired"):
        allowed.verify(data, old_sig, NOW)  # a move made now with the retired key
    with pytest.raises(signing.SigningError, match="not valid now"):
        allowed.sign(signing.Signer(str(old)), data, NOW)
    assert allowed.sign(signing.Signer(str(new)), data, NOW).signer == "alice@example.com"


def test_the_key_comes_from_the_environment_then_the_default_file(keys, monkeypatch, tmp_path):
    ci, alice, allowed = keys
    with pytest.raises(signing.SigningError, match="no signing key"):
        signing.Signer().sign(b"x")
    default = Path(signing.default_key_path())
    default.parent.mkdir(parents=True)
    for suffix in ("", ".pub"):
        default.with_name(default.name + suffix).write_bytes(
            alice.with_name(alice.name + suffix).read_bytes()
        )
    default.chmod(0o600)
    assert allowed.sign(signing.Signer(), b"x", NOW).signer == "alice@example.com"
    monkeypatch.setenv(signing.KEY_ENV, str(ci))
    assert allowed.sign(signing.Signer(), b"x", NOW).signer == "ci@example.com"


def test_a_key_held_by_ssh_agent_signs(keys, monkeypatch):
    ci, _, allowed = keys
    started = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    sock = re.search(r"SSH_AUTH_SOCK=([^;]+);", started).group(1)
    pid = int(re.search(r"SSH_AGENT_PID=(\d+);", started).group(1))
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        subprocess.run(["ssh-add", "-q", str(ci)], check=True, capture_output=True)
        ci.unlink()  # only the agent holds the private key now
        assert allowed.sign(signing.Signer(), b"x", NOW).signer == "ci@example.com"
        assert allowed.sign(signing.Signer(str(ci.with_suffix(".pub"))), b"x", NOW).signer == "ci@example.com"
    finally:
        os.kill(pid, signal.SIGTERM)


def test_a_missing_allowed_signers_file_is_named(tmp_path):
    with pytest.raises(signing.SigningError, match="allowed_signers file .*nowhere does not exist"):
        signing.AllowedSigners(str(tmp_path / "nowhere"))
