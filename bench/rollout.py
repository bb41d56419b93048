#!/usr/bin/env python3
"""Roll-out benchmark: kiln against the hand-written baseline, under load through the load balancer.

    .venv/bin/python bench/rollout.py [--rate 150] [--instances 6] [--scale 50] [--no-scale] [--published]
    .venv/bin/python bench/rollout.py --provider aws [--scale 50]   (bench/rollout_aws.py)

1. kiln, 6 instances (batches of 2, surge 2): failed requests, p50/p99 latency, and roll-out time
   against the floor = batches x the measured start-to-healthy time of one instance (goal <= 1.15).
2. Baseline in the same run, what users write by hand: community.docker.docker_container with
   ``recreate: true`` under ``serial: 1``, waiting for each container to answer, no drain; the same
   HAProxy image in front with the containers as static servers (docker DNS, health checks).
3. Scale: 50 instances in batches of 10%; time per batch against the 6-instance run.
4. With --published: the 6-instance run again with every instance also published on 127.0.0.1 (a
   docker-proxy and iptables rules per instance, kiln's way before instances were probed on the
   group network), against the run without.

    .venv/bin/python bench/rollout.py --analysis [--instances 6] [--bake 5]

Analysis instead: a bad version (healthy, but a fifth of / answers 500) under load, with analysis,
rolled out with rolling (batches of 1), canary (1 instance at 10% of the traffic, then 50%, 100%) and
blue_green (a preview at 10%): time until the group is back on the old version and failed requests,
as ratios against rolling. Then the rollback of a good roll-out inside the blue/green window (a
switch back) against a rolling rollback of the same group.

Everything runs on this machine: images are baked by kiln into a private catalog (or --catalog with
lb/1, web/1 and web/2 already in it), load goes to 127.0.0.1 only, and every container, volume and
network the benchmark made is removed at the end.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "collections"), str(ROOT / "tests")]

from ansible_collections.kiln.immutable.plugins.module_utils.catalog.catalog import Catalog
from ansible_collections.kiln.immutable.plugins.module_utils.common import docker_api
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import docker_environment
from ansible_collections.kiln.immutable.plugins.module_utils.loadbalancers.haproxy.loadbalancer import (
    CONFIG_NAME,
    CONTAINER_PORT,
    SOCKET_DIR,
)
from ansible_collections.kiln.immutable.plugins.module_utils.providers.docker import provider
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.engine import (
    Rollout,
    RolloutOptions,
)
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.health import HealthCheck, Prober
from rollout_support import VENV_BIN, LoadGenerator, build_version, run_env, unique

HEALTH = {"interval": 0.2, "timeout": 2, "healthy_threshold": 2, "unhealthy_threshold": 3, "deadline": 60}


def say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
        self.env = run_env(self.state)
        os.environ.update(KILN_STATE_DIR=self.env["KILN_STATE_DIR"], KILN_CATALOG=self.env["KILN_CATALOG"])
        self.prefix = unique("kb")
        self.groups: list[str] = []
        self.baseline_names: list[str] = []
        self.built: list[str] = []
        self.versions: dict = {}

    # ------------------------------------------------------------------ set-up

    def images(self) -> None:
        if self.args.catalog:
            import shutil

            shutil.copy(self.args.catalog, self.env["KILN_CATALOG"])
            with Catalog(self.env["KILN_CATALOG"]) as catalog:
                self.versions = {
                    "lb": catalog.get("lb/1"),
                    "old": catalog.get("web/1"),
                    "new": catalog.get("web/2"),
                }
                if self.args.analysis:
                    self.versions["errors"] = catalog.get(self.args.errors_ref)
            return
        started = time.monotonic()
        web = {"repository": f"{self.prefix}/web"}
        self.versions["lb"] = build_version(self.env, "lb", {"repository": f"{self.prefix}/lb"})
        self.versions["old"] = build_version(self.env, "web", web)
        self.versions["new"] = build_version(self.env, "web", web, force=True)
        if self.args.analysis:
            self.versions["errors"] = build_version(self.env, "web", {**web, "fault": "errors"})
        self.built = [v.artifacts["docker"]["image_id"] for v in self.versions.values()]
        say(f"baked lb, web old and new with kiln in {time.monotonic() - started:.0f}s")

    def resolve(self, ref: str):
        with Catalog(self.env["KILN_CATALOG"]) as catalog:
            return catalog.get(ref)

    def group(self, name: str) -> str:
        group = f"{self.prefix}-{name}"
        self.groups.append(group)
        return group

    def rollout(self, group: str, key: str, provider_options: dict | None = None, **options):
        return Rollout(
            group,
            self.versions[key],
            docker_environment.provider(provider_options),
            docker_environment.load_balancer(group),
            Prober(HealthCheck.from_options(HEALTH)),
            RolloutOptions(**options),
            resolve_version=self.resolve,
        ).run()

    # ------------------------------------------------------------------ measurements

    def start_to_healthy(self, samples: int = 5, provider_options: dict | None = None) -> float:
        """Median seconds from launch to healthy of one instance, with the roll-out's own probe."""
        group = self.group(f"floor{len(self.groups)}")
        provider = docker_environment.provider(provider_options)
        prober = Prober(HealthCheck.from_options(HEALTH))
        times = []
        for slot in range(samples):
            started = time.monotonic()
            instance = provider.launch(group, slot, self.versions["new"])
            outcome = prober.wait_healthy(instance)
            times.append(time.monotonic() - started)
            assert outcome.healthy, outcome.detail
            provider.terminate(instance)
        docker_environment.down(group)
        return statistics.median(times)

    def kiln(
        self, size: int, batch: int | str, surge: int | str, provider_options: dict | None = None
    ) -> dict:
        group = self.group(f"kiln{size}-{len(self.groups)}")
        fill = self.rollout(group, "old", provider_options, size=size, batch_size=10)
        assert fill["status"] == "succeeded", fill["status"]
        address = docker_environment.load_balancer(group).address()
        with LoadGenerator(address, rate=self.args.rate, workers=16) as load:
            floor_one = self.start_to_healthy(provider_options=provider_options)  # under the same load
            started = time.monotonic()
            result = self.rollout(group, "new", provider_options, batch_size=batch, max_surge=surge)
            elapsed = time.monotonic() - started
            time.sleep(1)
        report = load.report
        assert result["status"] == "succeeded", result["status"]
        docker_environment.down(group)
        batches = len(result["batches"])
        return {
            "instances": size,
            "batches": batches,
            "seconds": round(elapsed, 2),
            "start_to_healthy_s": round(floor_one, 3),
            "floor_s": round(batches * floor_one, 2),
            "vs_floor": round(elapsed / (batches * floor_one), 2),
            "requests": report.total,
            "rate": round(report.rate, 1),
            "failed": len(report.failed),
            "p50_ms": round(report.percentile(50) * 1000, 1),
            "p99_ms": round(report.percentile(99) * 1000, 1),
            "load": report.summary(),
        }

    def bad_version(self, strategy: str, size: int) -> dict:
        """Roll the errors version out with analysis under load; seconds until the group is back."""
        group = self.group(f"bad-{strategy.replace('_', '')}")
        self.rollout(group, "old", size=size, batch_size=size)
        analysis = {"max_error_rate": "1%", "min_requests": 20, "bake_time": self.args.bake}
        shapes = {
            "rolling": {"batch_size": 1, "max_surge": 1},
            "canary": {"steps": [{"instances": 1, "weight": 10}, {"percent": 50}, {"percent": 100}]},
            "blue_green": {"preview_percent": 10},
        }
        address = docker_environment.load_balancer(group).address()
        with LoadGenerator(address, rate=self.args.rate, path="/", workers=16) as load:
            started = time.monotonic()
            result = self.rollout(group, "errors", strategy=strategy, **shapes[strategy], **analysis)
            seconds = time.monotonic() - started
        assert result["status"] == "rolled_back", result["status"]
        self.drop(group)
        return {"seconds": round(seconds, 2), "failed": len(load.report.failed), "total": load.report.total}

    def rollback_times(self, size: int) -> dict:
        """Seconds to put the old version back after a good roll-out: rolling, and inside the window."""
        out = {}
        for strategy, options in (
            ("rolling", {"batch_size": 2, "max_surge": 2}),
            ("blue_green", {"rollback_window": 600}),
        ):
            group = self.group(f"back-{strategy.replace('_', '')}")
            self.rollout(group, "old", size=size, batch_size=size)
            self.rollout(group, "new", strategy=strategy, **options)
            address = docker_environment.load_balancer(group).address()
            with LoadGenerator(address, rate=self.args.rate, workers=16) as load:
                started = time.monotonic()
                result = self.rollout(group, "old", strategy=strategy, **options)
                seconds = time.monotonic() - started
            switch = [e for e in result["events"] if e["event"] == "switch"]
            out[strategy] = {
                "seconds": round(seconds, 2),
                "to_switch_s": round(switch[0]["t"] - result["started_at"], 3) if switch else None,
                "launched": sum(1 for e in result["events"] if e["event"] == "launch"),
                "failed": len(load.report.failed),
            }
            self.drop(group)
        return out

    def drop(self, group: str) -> None:
        docker_environment.down(group)
        self.groups.remove(group)

    def baseline(self, size: int) -> dict:
        """docker_container recreate: true under serial: 1, behind HAProxy with static servers."""
        network = f"{self.prefix}-base"
        docker_api.ensure_network(network, {"kiln.bench": self.prefix})
        names = [f"{self.prefix}-base-{i}" for i in range(size)]
        self.baseline_names = list(names)
        folder = self.state / "baseline-lb"
        folder.mkdir()
        servers = "".join(f"    server {n} {n}:{CONTAINER_PORT} {BASELINE_SERVER}\n" for n in names)
        (folder / CONFIG_NAME).write_text(BASELINE_HAPROXY + servers)
        lb_name = f"{self.prefix}-base-lb"
        self.baseline_names.append(lb_name)
        lb = docker_api.client().containers.run(
            self.versions["lb"].artifacts["docker"]["image_id"],
            name=lb_name,
            detach=True,
            user=f"{os.getuid()}:{os.getgid()}",
            read_only=True,
            volumes={str(folder): {"bind": SOCKET_DIR, "mode": "rw"}},
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", None)},
            network=network,
        )
        lb.reload()
        address = f"127.0.0.1:{lb.attrs['NetworkSettings']['Ports'][f'{CONTAINER_PORT}/tcp'][0]['HostPort']}"
        inventory = self.state / "baseline.json"
        inventory.write_text(
            json.dumps(
                {
                    "bench": {
                        "hosts": dict.fromkeys(names, {}),
                        "vars": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": str(VENV_BIN / "python"),
                            "bench_network": network,
                        },
                    }
                }
            )
        )
        play = self.state / "baseline.yml"
        play.write_text(BASELINE_PLAYBOOK)

        def run(key: str) -> float:
            image = self.versions[key].artifacts["docker"]["image_id"]
            started = time.monotonic()
            proc = subprocess.run(
                [
                    str(VENV_BIN / "ansible-playbook"),
                    "-i",
                    str(inventory),
                    str(play),
                    "-e",
                    f"bench_image={image}",
                ],
                env={**self.env, "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"},
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if proc.returncode:
                raise RuntimeError(f"baseline playbook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
            return time.monotonic() - started

        run("old")
        deadline = time.monotonic() + 30
        while LoadGenerator(address).once().ok is False and time.monotonic() < deadline:
            time.sleep(0.2)  # until HAProxy has resolved and checked the servers
        time.sleep(2)
        with LoadGenerator(address, rate=self.args.rate, workers=16) as load:
            time.sleep(1)
            elapsed = run("new")
            time.sleep(1)
        report = load.report
        return {
            "instances": size,
            "batches": size,
            "seconds": round(elapsed, 2),
            "requests": report.total,
            "rate": round(report.rate, 1),
            "failed": len(report.failed),
            "p50_ms": round(report.percentile(50) * 1000, 1),
            "p99_ms": round(report.percentile(99) * 1000, 1),
            "load": report.summary(),
        }

    # ------------------------------------------------------------------ clean-up

    def cleanup(self) -> None:
        for group in self.groups:
            try:
                docker_environment.down(group)
            except Exception as exc:  # keep cleaning
                say(f"cleanup of {group}: {exc}")
        for name in self.baseline_names:
            docker_api.remove_container(name, stop_timeout=1)
        for network in docker_api.client().networks.list(names=[f"{self.prefix}-base"]):
            network.remove()
        provider.settle()
        for image in self.built:
            try:
                docker_api.client().images.remove(image, force=True)
            except Exception as exc:
                say(f"cleanup of image {image}: {exc}")
        import shutil

        shutil.rmtree(self.state, ignore_errors=True)


# What a hand-written set-up looks like: Debian's stock timeouts, the containers as servers found by
# docker DNS, health checks; no retries, no redispatch, no drain.
BASELINE_HAPROXY = f"""global
    stats socket {SOCKET_DIR}/admin.sock mode 600 level admin

defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s

resolvers docker
    nameserver dns 127.0.0.11:53
    hold valid 1s

frontend web
    bind :{CONTAINER_PORT}
    default_backend app

backend app
    balance roundrobin
    option httpchk GET /healthz
"""
BASELINE_SERVER = "check inter 1s fall 2 rise 1 resolvers docker init-addr none"

BASELINE_PLAYBOOK = """---
- name: Replace the web containers one at a time, the hand-written way
  hosts: bench
  serial: 1
  gather_facts: false
  tasks:
    - name: Recreate the container on the new image
      community.docker.docker_container:
        name: "{{ inventory_hostname }}"
        image: "{{ bench_image }}"
        recreate: true
        state: started
        read_only: true
        tmpfs: ["/tmp"]
        networks:
          - name: "{{ bench_network }}"
        network_mode: "{{ bench_network }}"
      register: _container

    - name: Wait until it answers
      ansible.builtin.uri:
        url: "http://{{ _ip }}:8080/healthz"
      vars:
        _ip: "{{ _container.container.NetworkSettings.Networks[bench_network].IPAddress }}"
      register: _health
      until: _health.status == 200
      retries: 100
      delay: 0.2
"""


def report(figures: dict) -> None:
    head = ("run", "inst", "batches", "time s", "floor s", "x floor", "req/s", "failed", "p50 ms", "p99 ms")
    print("\n" + "".join(f"{h:>9}" if i else f"{h:<22}" for i, h in enumerate(head)))
    rows = [("kiln", figures["kiln"]), ("baseline (serial: 1)", figures["baseline"])]
    if "scale" in figures:
        rows.append(
            (
                f"kiln, batches of {figures['scale_ref']['instances'] // figures['scale_ref']['batches']}",
                figures["scale_ref"],
            )
        )
        rows.append(("kiln scale (10%)", figures["scale"]))
    if "published" in figures:
        rows.append(("kiln, published ports", figures["published"]))
    for label, f in rows:
        cells = [f["instances"], f["batches"], f["seconds"], f.get("floor_s", "-"), f.get("vs_floor", "-")]
        cells += [round(f["rate"]), f["failed"], f["p50_ms"], f["p99_ms"]]
        print(f"{label:<22}" + "".join(f"{c:>9}" for c in cells))
    kiln, base = figures["kiln"], figures["baseline"]
    print(
        f"\nkiln: {kiln['vs_floor']:.2f}x the floor (goal <= 1.15), {kiln['failed']} failed requests (goal 0)"
    )
    print(
        f"baseline: {base['seconds'] / kiln['seconds']:.2f}x kiln's time, "
        f"{base['failed']} failed requests against kiln's {kiln['failed']}"
    )
    if "published" in figures:
        p = figures["published"]
        print(
            f"published ports: {p['seconds'] / kiln['seconds']:.2f}x the time of kiln without them, "
            f"start-to-healthy {p['start_to_healthy_s']:.2f}s against {kiln['start_to_healthy_s']:.2f}s"
        )
    if "scale" in figures:
        s = figures["scale"]
        print(
            f"scale: {s['instances']} instances in {s['batches']} batches, {s['seconds']:.1f}s; per batch "
            f"{s['per_batch_vs_small']:.2f}x that of {figures['scale_ref']['instances']} instances in "
            "batches of the same size (~1: time grows with the number of batches only)"
        )


def report_analysis(figures: dict) -> None:
    bad, back = figures["bad_version"], figures["rollback"]
    print(f"\n{'bad version, analysis':<24}{'time s':>9}{'x rolling':>11}{'failed':>8}{'of':>8}")
    for strategy, f in bad.items():
        ratio = f["seconds"] / bad["rolling"]["seconds"]
        print(f"{strategy:<24}{f['seconds']:>9}{ratio:>11.2f}{f['failed']:>8}{f['total']:>8}")
    rolling, green = back["rolling"], back["blue_green"]
    print(
        f"\nrollback: rolling {rolling['seconds']:.2f}s ({rolling['launched']} launches); inside the "
        f"blue/green window {green['seconds']:.2f}s, switched after {green['to_switch_s']}s "
        f"({green['launched']} launches): "
        f"{rolling['seconds'] / green['seconds']:.1f}x faster, "
        f"{rolling['seconds'] / max(green['to_switch_s'] or 0.001, 0.001):.0f}x to the switch; "
        f"failed requests {rolling['failed']} / {green['failed']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second through the balancer")
    parser.add_argument("--instances", type=int, default=6, help="group size of the kiln/baseline comparison")
    parser.add_argument("--scale", type=int, default=50, help="group size of the scale run (batches of 10%%)")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale run")
    parser.add_argument(
        "--catalog",
        help="a catalog with lb/1, web/1, web/2 (and, for --analysis, --errors-ref) already built",
    )
    parser.add_argument(
        "--errors-ref", default="web/4", help="with --catalog: the version built with fault=errors"
    )
    parser.add_argument("--output", help="also write the figures as JSON here")
    parser.add_argument("--published", action="store_true", help="also run with published ports, to compare")
    parser.add_argument("--analysis", action="store_true", help="benchmark analysis and strategies instead")
    parser.add_argument("--bake", type=float, default=5.0, help="with --analysis: seconds of each bake")
    parser.add_argument(
        "--provider", choices=["docker", "aws"], default="docker", help="aws: against the local AWS API"
    )
    args = parser.parse_args()
    if args.provider == "aws":
        from rollout_aws import run

        return run(args)

    bench = Bench(args)
    figures: dict = {}
    try:
        bench.images()
        if args.analysis:
            figures["bad_version"] = {
                s: bench.bad_version(s, args.instances) for s in ("rolling", "canary", "blue_green")
            }
            figures["rollback"] = bench.rollback_times(args.instances)
        else:
            figures = rolling_figures(bench, args)
    finally:
        bench.cleanup()

    (report_analysis if args.analysis else report)(figures)
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2))
    return 0


def rolling_figures(bench: Bench, args: argparse.Namespace) -> dict:
    kiln = bench.kiln(args.instances, batch=2, surge=2)
    say(f"kiln {args.instances}: start-to-healthy {kiln['start_to_healthy_s']:.2f}s; {kiln['load']}")
    base = bench.baseline(args.instances)
    say(f"baseline {args.instances}: {base['load']}")
    figures = {"kiln": kiln, "baseline": base}
    if args.published:
        figures["published"] = bench.kiln(
            args.instances, batch=2, surge=2, provider_options={"publish": True}
        )
        say(f"kiln {args.instances}, published ports: {figures['published']['load']}")
    if not args.no_scale:
        # Same batch size (10% of the scale group) on a group 2.5 times smaller: if time grows with
        # the number of batches only, a batch takes as long in both.
        batch = max(1, args.scale // 10)
        ref = bench.kiln(args.scale * 2 // 5, batch=batch, surge=batch)
        say(f"kiln {ref['instances']} (batches of {batch}): {ref['load']}")
        scale = bench.kiln(args.scale, batch="10%", surge="10%")
        scale["per_batch_vs_small"] = round(
            (scale["seconds"] / scale["batches"]) / (ref["seconds"] / ref["batches"]), 2
        )
        say(f"kiln {args.scale}: {scale['load']}")
        figures["scale_ref"], figures["scale"] = ref, scale
    return figures


if __name__ == "__main__":
    sys.exit(main())
