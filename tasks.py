"""kiln's stages for a laptop or a CI job: build, test, promote, roll out.

Each task is thin: it runs one of the collection's playbooks, Molecule, or the catalog.
Defaults live in ``ns.configure`` below (or an ``invoke.yaml``); command-line flags override them.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent
VENV_BIN = ROOT / ".venv" / "bin"


def _env(c) -> dict:
    """The environment every stage runs in: the venv first on PATH, the repo's ansible.cfg, the state."""
    state = Path(c.kiln.state_dir).resolve()
    return {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "KILN_STATE_DIR": str(state),
        "KILN_CATALOG": str(Path(c.kiln.catalog).resolve() if c.kiln.catalog else state / "catalog.db"),
        "KILN_ROOT": str(ROOT),
    }


def _playbook(c, name: str, extra_vars: dict | None = None, check: bool = False, warn: bool = False):
    """Run ``kiln.immutable.<name>`` with ``extra_vars`` passed as one JSON document."""
    import json

    cmd = ["ansible-playbook", f"kiln.immutable.{name}", "-i", str(ROOT / c.kiln.inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    with c.cd(str(ROOT)):
        return c.run(shlex.join(cmd), env=_env(c), pty=False, warn=warn)


def _parse_vars(pairs) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Exit(f"--var expects key=value, got {pair!r}")
        out[key] = value
    return out


@task(
    iterable=["var"],
    help={
        "image": "image to bake: a folder under packer/ (default: web)",
        "force": "build even when an identical version is in the catalog",
        "var": "a Packer variable as key=value; repeat for several",
    },
)
def build(c, image=None, force=False, var=None):
    """Bake a golden image with Packer and record it in the catalog (skipped when nothing changed)."""
    extra = {"kiln_image": image or c.kiln.image, "kiln_force": force}
    if var:
        extra["kiln_variables"] = _parse_vars(var)
    _playbook(c, "build", extra)


ns = Collection(build)
ns.configure(
    {
        "kiln": {
            "image": "web",
            "inventory": "inventories/local",
            "state_dir": str(ROOT / ".kiln"),
            "catalog": None,
        },
        "run": {"echo": True},
    }
)
