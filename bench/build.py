"""Benchmark the build stage against raw Packer on the same template, in the same run.

    .venv/bin/python bench/flow.py [--image web] [--rounds 1]

Prints, for each round and as medians:
  - cold kiln build (ansible-playbook kiln.immutable.build, empty catalog) / raw `packer build`  (goal <= 1.1)
  - no-op `invoke build` (nothing changed) / raw `packer build`                                 (goal <= 0.1)
  - the module's own decision: template load, variables, fingerprint, catalog lookup         (goal <= 0.5 s)
  - template load + fingerprint of the largest corpus template, warm / sha256 of its files   (goal <= 0.5 s)
    (``--template-only`` measures just this one, without Docker)
Images are tagged into a throwaway repository (kilnbench<id>/...) and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.kiln.immutable.plugins.module_utils.build import fingerprint as fpm
from ansible_collections.kiln.immutable.plugins.module_utils.build import flow as bm
from ansible_collections.kiln.immutable.plugins.module_utils.build import template as tm
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api

DECISION = """
import json, sys, time
started = time.monotonic()
from ansible_collections.kiln.immutable.plugins.module_utils.build import flow
from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
request = flow.BuildRequest(**json.loads(sys.argv[1]))
with Catalog(None) as catalog:
    plan = flow.plan(request, catalog)
print(json.dumps({"total_s": time.monotonic() - started, "plan_s": plan.decision_s, "needed": plan.needed}))
"""


def timed(cmd: list[str], env: dict, cwd: Path = ROOT) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return elapsed, done


def raw_packer(image: str, repository: str, env: dict) -> float:
    """`packer build` of the docker sources, as a user would type it (on the same staged folder kiln uses)."""
    with Catalog(env["KILN_CATALOG"]) as catalog:
        plan = bm.plan(bm.BuildRequest(str(ROOT / "packer" / image), only=["docker.*"]), catalog)
    with bm.staged(plan) as folder:
        cmd = [plan.packer.path, "build", "-only=" + ",".join(plan.sources)]
        cmd += ["-var", "version=raw", "-var", f"repository={repository}", folder]
        elapsed, _ = timed(cmd, env)
    return elapsed


def round_(image: str, tag: str, base_env: dict) -> dict:
    state = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    repository = f"{tag}/{image}"
    env = {
        **base_env,
        "KILN_STATE_DIR": str(state),
        "INVOKE_KILN_STATE_DIR": str(state),
        "KILN_CATALOG": str(state / "catalog.db"),
    }
    raw_s = raw_packer(image, repository, env)
    extra = {"kiln_image": image, "kiln_variables": {"repository": repository}}
    kiln_s, _ = timed([str(BIN / "ansible-playbook"), "kiln.immutable.build", "-e", json.dumps(extra)], env)
    noop_s, done = timed(
        [str(BIN / "invoke"), "build", "--image", image, "--var", f"repository={repository}"], env
    )
    assert "changed=0" in done.stdout, done.stdout[-2000:]
    request = {
        "template": str(ROOT / "packer" / image),
        "only": ["docker.*"],
        "variables": extra["kiln_variables"],
    }
    decision = json.loads(
        subprocess.run(
            [sys.executable, "-c", DECISION, json.dumps(request)],
            env={**env, "PYTHONPATH": str(ROOT / "collections")},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert decision["needed"] is False
    return {
        "raw_packer_s": raw_s,
        "kiln_cold_s": kiln_s,
        "noop_invoke_s": noop_s,
        "decision_plan_s": decision["plan_s"],
        "decision_with_imports_s": decision["total_s"],
    }


LARGEST = ROOT / "tests" / "fixtures" / "templates" / "corpus" / "large-multi-build"


def template_figures(repeat: int = 7) -> dict:
    """Warm template load + fingerprint of the largest corpus template, and the baseline: reading and
    hashing each of its files with sha256, the least any fingerprint of them costs."""
    os.environ.setdefault("KILN_STATE_DIR", tempfile.mkdtemp(prefix="kiln-bench-"))
    files = sorted(p for p in LARGEST.rglob("*") if p.is_file())

    def baseline() -> None:
        for path in files:
            fpm.sha256_file(str(path))

    def kiln() -> None:
        template = tm.load(str(LARGEST))
        values = tm.resolve_variables(template, {}, provided_by_kiln=("version",))
        fpm.compute(template, values, packer_version="1.6.6", image_id=lambda ref: "sha256:" + "0" * 64)

    def median(work) -> float:
        work()  # warm: imports done, parse cache filled
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def cold() -> None:
        os.environ["KILN_STATE_DIR"] = tempfile.mkdtemp(prefix="kiln-bench-cold-")  # an empty parse cache
        kiln()

    warm_state = os.environ["KILN_STATE_DIR"]
    cold_s = median(cold)
    os.environ["KILN_STATE_DIR"] = warm_state
    template = tm.load(str(LARGEST))
    return {
        "template_s": median(kiln),
        "cold_s": cold_s,
        "baseline_s": median(baseline),
        "variables": len(template.variables),
        "builds": len(template.builds),
    }


def print_template_figures(figures: dict) -> None:
    warm, base, cold = figures["template_s"], figures["baseline_s"], figures["cold_s"]
    print(
        f"  template load + fingerprint {warm:7.3f} s   (goal <= 0.5 s; largest corpus template:"
        f" {figures['variables']} variables, {figures['builds']} builds)"
    )
    print(f"    ratio to sha256 of its files ({base * 1000:.2f} ms)  {warm / base:.1f}")
    print(f"    ratio to a cold load, parse cache empty ({cold:.3f} s)  {warm / cold:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="web", help="a folder under packer/")
    parser.add_argument("--rounds", type=int, default=1, help="rounds to take the median of")
    parser.add_argument("--template-only", action="store_true", help="only the template figure, no Docker")
    args = parser.parse_args()
    templates = template_figures()
    if args.template_only:
        print(f"build benchmark, template figure only; load {os.getloadavg()[0]:.1f}")
        print_template_figures(templates)
        return
    tag = f"kilnbench{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
    }
    rounds = []
    try:
        for n in range(args.rounds):
            figures = round_(args.image, tag, env)
            rounds.append(figures)
            print(f"round {n + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)
    finally:
        engine = docker_api.client()
        for image in engine.images.list():
            for name in image.tags:
                if name.startswith(f"{tag}/"):
                    engine.images.remove(name)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    cold = med["kiln_cold_s"] / med["raw_packer_s"]
    noop = med["noop_invoke_s"] / med["raw_packer_s"]
    print(
        f"\nbuild benchmark, image {args.image}, {len(rounds)} round(s), medians;"
        f" load {os.getloadavg()[0]:.1f}"
    )
    print(f"  raw packer build           {med['raw_packer_s']:7.2f} s")
    print(f"  kiln cold build            {med['kiln_cold_s']:7.2f} s   ratio {cold:.3f}  (goal <= 1.10)")
    print(f"  no-op invoke build         {med['noop_invoke_s']:7.2f} s   ratio {noop:.3f}  (goal <= 0.10)")
    print(f"  module decision            {med['decision_plan_s']:7.3f} s   (goal <= 0.5)")
    print(f"  decision incl. imports     {med['decision_with_imports_s']:7.3f} s")
    print_template_figures(templates)


if __name__ == "__main__":
    main()
