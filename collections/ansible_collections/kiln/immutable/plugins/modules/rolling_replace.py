#!/usr/bin/python
# Copyright: kiln developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rolling_replace
short_description: Replace a group's instances with an image version in rolling batches
version_added: 0.1.0
description:
  - Replaces every instance of a group with the catalog version O(version), or the one O(channel) of
    O(image) points at, batch by batch behind the group's load balancer. A new instance takes traffic only
    once its health probe passes; the old one is drained before it stops.
  - Batches come from O(batch_size), like Ansible's C(serial). With O(max_surge), new instances start next
    to the old ones; otherwise old ones are replaced in place while at least O(min_healthy_percentage) of
    the group stays in service.
  - Instances already on the target version are skipped. The slots of a batch are replaced at once, and
    batches follow one another without a gap - as soon as a slot is done, one of the next batch starts, so
    that a batch's worth of slots is being replaced at any time (like the C(max_parallel) of a Nomad
    update or a Kubernetes rolling update), not waiting for the slowest slot of each batch. Batches wait
    for each other where something comes between them - a bake or analysis, a checkpoint, a canary step.
  - When more than O(max_failures) slots fail their health checks, no new slot starts; once the slots being
    replaced have finished (one of the next batch may have started), the roll-out stops and, unless
    O(auto_rollback=false), puts the previous version back in every slot it touched.
  - A journal under C(<state dir>/rollouts/<group>/) is written after every step; running the module again
    after the process was killed resumes the roll-out and ends converged. A lock per group refuses a second
    roll-out of the group while one runs. The result is also written there as C(<id>.json), and each event
    is appended to C(progress.log) as it happens.
  - The lock is machine-wide with an SQLite catalog. With a PostgreSQL catalog, the lock is a lease in the
    database (renewed every third of O(lease_ttl), expiring O(lease_ttl) seconds after the last renewal) and
    the journal is kept there too, so another runner takes over the roll-out of a runner that died once its
    lease has expired.
  - In check mode, returns the plan (batches, instances, versions) and changes nothing.
author:
  - kiln developers (@kiln)
extends_documentation_fragment:
  - kiln.immutable.attributes
  - kiln.immutable.attributes.actiongroup_kiln
  - kiln.immutable.catalog
  - kiln.immutable.aws
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff maps each replaced slot to its version before and after.
  idempotent:
    support: full
options:
  group:
    description: The group of instances, for example C(web-prod).
    type: str
    required: true
  version:
    description: The catalog version to roll out, like C(web/7). Mutually exclusive with O(channel).
    type: str
  channel:
    description: Roll out the version this channel of O(image) points at. Mutually exclusive with O(version).
    type: str
  image:
    description: The catalog image of O(channel), like C(web).
    type: str
  size:
    description:
      - How many instances the group should have (slots C(0) to C(size - 1)); empty slots are filled.
      - When not set, the slots the group has now.
    type: int
  batch_size:
    description:
      - Instances replaced per batch, like Ansible's C(serial) - a number, a percentage of the group like
        C("25%"), or a list like C([1, "50%", "100%"]) whose last entry repeats.
    type: raw
    default: 1
  max_surge:
    description:
      - How many new instances may run on top of the group's size at once, a number or a percentage.
      - When not set, a whole batch starts before its old instances are drained.
    type: raw
  min_healthy_percentage:
    description: Share of the group that stays in service during the roll-out (0 to 100).
    type: int
    default: 100
  max_failures:
    description: Failed slots tolerated before the roll-out stops, a number or a percentage of the group.
    type: raw
    default: 0
  auto_rollback:
    description: When the roll-out stops, put the previous version back in every slot it replaced.
    type: bool
    default: true
  checkpoints:
    description:
      - Percentages of the group after which the roll-out pauses, like C([50]).
      - With O(checkpoint_delay=0) it returns with RV(status=paused); the next run goes on.
    type: list
    elements: int
    default: []
  checkpoint_delay:
    description: Seconds to wait at a checkpoint before going on; C(0) pauses until the next run.
    type: float
    default: 0
  drain_timeout:
    description:
      - Seconds to wait for a drained instance's requests to end before it leaves the load balancer and
        is stopped; the wait ends as soon as they have.
      - Requests still in flight then are cut. With O(load_balancer=haproxy) their connections close
        before the response is complete (a client that had the status and headers gets a short body), and
        HAProxy counts a response cut that way as aborted by the server (C(srv_abrt)), not as an error.
    type: float
    default: 30
  parallel:
    description: At most this many slots are replaced at once. When not set, a whole batch.
    type: int
  strategy:
    description:
      - C(rolling) replaces the group in batches of O(batch_size).
      - C(canary) goes through O(steps), each a number of instances on the new version, baked and
        analysed before the next.
      - C(blue_green) starts a full new set beside the old one without traffic, analyses it through a
        preview (O(preview_percent) of the traffic), switches every request to it at once, and keeps the
        old set for O(rollback_window) seconds. Within the window a roll-out back to the old version (a
        channel rollback) switches back in about a second without starting anything.
      - Load balancer weights are needed for C(blue_green) and for canary steps with a C(weight).
    type: str
    choices: [rolling, canary, blue_green]
    default: rolling
  steps:
    description:
      - "With O(strategy=canary), the steps, like
        C([{instances: 1, bake_time: 60}, {percent: 50}, {percent: 100}])."
      - Each step has C(instances) or C(percent) (of the group) - how many instances run the new version after
        it; C(bake_time) (seconds, default O(bake_time)); and C(weight), the percentage of the traffic the
        new version takes during the bake (default - its share of the instances).
      - A last step of the whole group is added when missing.
    type: list
    elements: dict
    default: []
  bake_time:
    description:
      - Seconds of traffic each analysis looks at, after each batch (rolling), step (canary) or on the
        preview (blue_green). Without thresholds, a plain wait.
    type: float
    default: 0
  max_error_rate:
    description:
      - Analysis - the new version fails when its share of 5xx answers and connection errors over the bake
        is more than this above the old version's, like C("1%").
      - Analysis needs a load balancer with numbers (C(haproxy)); others are refused as "not available".
    type: raw
  max_latency_ratio:
    description:
      - Analysis - the new version fails when its average response time is more than this many times the old
        version's, like C(1.5).
    type: float
  min_requests:
    description:
      - Analysis - with fewer requests to the new version over the bake, the verdict is C(Inconclusive) and
        the roll-out pauses (RV(status=paused)); the next run goes on with the same window.
    type: int
    default: 100
  preview_percent:
    description: With O(strategy=blue_green), the percentage of the traffic the new set takes while analysed.
    type: int
    default: 10
  rollback_window:
    description:
      - With O(strategy=blue_green), seconds the old set is kept in service without traffic after the switch.
        The next roll-out after the window retires it; C(0) retires it at once.
    type: float
    default: 0
  lease_ttl:
    description:
      - With a PostgreSQL catalog, seconds the runner's lease on the group lasts after its last renewal (it
        is renewed every third of that). Another runner takes over the roll-out of a runner that died this
        long after its last renewal; a runner that cannot reach the database for that long loses the lease.
    type: float
    default: 30
  health:
    description: The health probe of a new instance, against its probe address on 127.0.0.1.
    type: dict
    default: {}
    suboptions:
      type:
        description: C(http) (GET O(health.path), expect O(health.status)), C(tcp) (connect) or C(command).
        type: str
        choices: [http, tcp, command]
        default: http
      path:
        description: The HTTP path.
        type: str
        default: /healthz
      status:
        description: HTTP status codes that mean healthy.
        type: list
        elements: int
        default: [200]
      command:
        description:
          - A command run on the controller; exit code 0 means healthy. C({address}), C({host}), C({port}),
            C({name}) and C({id}) are replaced by the instance's.
        type: list
        elements: str
        default: []
      interval:
        description: Seconds between probes.
        type: float
        default: 1.0
      timeout:
        description: Seconds one probe may take.
        type: float
        default: 2.0
      healthy_threshold:
        description: Consecutive passing probes to be healthy.
        type: int
        default: 2
      unhealthy_threshold:
        description:
          - Consecutive wrong answers (an HTTP status not in O(health.status), a failing command) to be
            unhealthy; C(0) waits for O(health.deadline). No answer at all only counts towards the deadline.
        type: int
        default: 3
      warmup:
        description: Seconds after launch before the first probe.
        type: float
        default: 0
      deadline:
        description: Seconds from launch to become healthy.
        type: float
        default: 60
  provider:
    description:
      - What starts and stops instances. C(docker) - containers on the local Docker engine. C(aws) - the
        EC2 instances of an Auto Scaling group, launched from versions of its launch template that carry
        the version's AMI of O(region).
    type: str
    choices: [docker, aws]
    default: docker
  provider_options:
    description:
      - Options of the provider. Docker - C(port) (the app's port in the container), C(bind), C(data_path),
        C(tmpfs_size), C(stop_timeout), C(memory), C(publish) (also publish the app on C(bind); by default
        the load balancer and the health probe reach it on the group network).
      - AWS - C(auto_scaling_group) and C(launch_template) (names, required), C(port) the app listens on,
        C(probe_address) (C(private), C(public), or C(none) to judge health by Auto Scaling and the target
        group alone), C(poll_interval), C(launch_timeout).
    type: dict
    default: {}
  load_balancer:
    description:
      - The group's load balancer; C(aws) is an Elastic Load Balancing target group (its deregistration
        delay is the drain); C(none) replaces instances without one.
    type: str
    choices: [haproxy, aws, none]
    default: haproxy
  load_balancer_options:
    description:
      - Options of the load balancer. HAProxy - C(port) (on 127.0.0.1), C(image), C(bind), C(health_path),
        C(check_interval).
      - AWS - C(target_group) (a name or ARN, required), C(port) targets are registered with,
        C(poll_interval).
    type: dict
    default: {}
notes:
  - The docker provider needs the Docker SDK for Python and a running Docker engine on the controller.
  - With O(provider=aws), a new instance must be C(InService) and not marked C(Unhealthy) by its Auto
    Scaling group, its target must be C(healthy), and, where it can be reached, the HTTP probe must pass.
    The Auto Scaling group's maximum size must leave room for O(max_surge).
  - The group's network and load balancer are created on the first roll-out when missing.
  - A revoked version, an unknown channel or version, a batch size of 0 or a percentage over 100 are refused
    before anything changes.
seealso:
  - module: kiln.immutable.image_channel
  - module: kiln.immutable.docker_group
"""

EXAMPLES = r"""
- name: Roll web-prod out to what the prod channel points at, two at a time
  kiln.immutable.rolling_replace:
    group: web-prod
    image: web
    channel: prod
    size: 4
    batch_size: 2
    max_surge: 2
    load_balancer_options:
      port: 8082

- name: Canary with analysis - one instance at a tenth of the traffic for a minute, then half, then all
  kiln.immutable.rolling_replace:
    group: web-prod
    version: web/7
    strategy: canary
    steps:
      - {instances: 1, bake_time: 60, weight: 10}
      - {percent: 50}
      - {percent: 100}
    bake_time: 30
    max_error_rate: 1%
    max_latency_ratio: 1.5
    min_requests: 200

- name: Blue/green, the old set kept for ten minutes for an instant switch back
  kiln.immutable.rolling_replace:
    group: web-prod
    version: web/7
    strategy: blue_green
    bake_time: 30
    max_error_rate: 1%
    rollback_window: 600

- name: Roll an Auto Scaling group out behind its target group (credentials from the environment)
  kiln.immutable.rolling_replace:
    group: web-prod
    image: web
    channel: prod
    batch_size: "25%"
    max_surge: "25%"
    provider: aws
    provider_options:
      auto_scaling_group: web-prod
      launch_template: web-prod
    load_balancer: aws
    load_balancer_options:
      target_group: web-prod
    region: eu-west-1

- name: Show the plan only
  kiln.immutable.rolling_replace:
    group: web-prod
    version: web/7
  check_mode: true
  register: plan

- name: Canary first, then halves; pause after 50% for a look, tolerate no failure
  kiln.immutable.rolling_replace:
    group: web-prod
    version: web/7
    batch_size: [1, "50%"]
    checkpoints: [50]
    health:
      path: /healthz
      interval: 0.5
      healthy_threshold: 2
"""

RETURN = r"""
analysis:
  description:
    - Every verdict - its step (C(batch-N), a canary step's index, or C(preview)), C(verdict) (C(Successful),
      C(Failed), C(Inconclusive)), C(reasons), the window in seconds, and per version the requests, errors,
      error rate and latency (ms) the load balancer counted in the window.
  returned: when not in check mode and the roll-out analysed something
  type: list
  elements: dict
  sample:
    - step: batch-0
      verdict: Failed
      reasons: ["error rate of web/8 19.50% (39/200) is over 1.00% (baseline 0.00% + max_error_rate 1.00%)"]
      versions:
        web/7: {requests: 600, errors: 0, error_rate: 0.0, latency_ms: 1.2}
        web/8: {requests: 200, errors: 39, error_rate: 0.195, latency_ms: 1.3}
standby:
  description: With O(strategy=blue_green), slot -> the old instance kept without traffic until
    RV(standby_until).
  returned: when not in check mode
  type: dict
standby_until:
  description: Epoch seconds at which the rollback window of a blue_green roll-out ends.
  returned: when not in check mode with O(strategy=blue_green)
  type: float
status:
  description:
    - C(succeeded), C(partial) (failures within O(max_failures); those slots keep their version),
      C(paused) (at a checkpoint), C(rolled_back), C(failed), or C(planned) in check mode.
  returned: always
  type: str
  sample: succeeded
target:
  description: The version rolled out.
  returned: always
  type: str
  sample: web/7
plan:
  description: In check mode, the batches with each slot's instance and versions.
  returned: check mode
  type: dict
  sample:
    batches:
      - index: 0
        slots: [{slot: 0, instance: kiln-web-prod-0-3fa2c1, from: web/6, to: web/7}]
    skipped: [2, 3]
    min_in_service: 4
id:
  description: The roll-out's id; its result is RV(result_path).
  returned: when not in check mode
  type: str
  sample: 20250101T120000-3fa2c1
batches:
  description: Every batch with its slots, timings and, per slot, old and new instance, health and outcome.
  returned: when not in check mode
  type: list
  elements: dict
  sample:
    - index: 0
      phase: forward
      slots: [0, 1]
      duration_s: 3.2
      outcome: ok
      instances:
        - slot: 0
          mode: surge
          outcome: replaced
          old: {name: kiln-web-prod-0-3fa2c1, version: web/6}
          new: {name: kiln-web-prod-0-9b1e07, version: web/7}
          health: {healthy: true, attempts: 2, duration_s: 1.1}
events:
  description: Timestamped events (launch, healthy, enabled, drain, terminated, rollback...) for a timeline.
  returned: when not in check mode
  type: list
  elements: dict
before:
  description: Slot -> version before the roll-out.
  returned: when not in check mode
  type: dict
after:
  description: Slot -> version after the roll-out.
  returned: when not in check mode
  type: dict
failed_slots:
  description: Slots whose new instance failed.
  returned: when not in check mode
  type: list
  elements: int
result_path:
  description: The result written as JSON.
  returned: when not in check mode
  type: str
report_path:
  description: The result as an HTML page with a timeline of instances by version, batches and health checks.
  returned: when not in check mode
  type: str
duration_s:
  description: Seconds from the roll-out's start to its end (across resumed runs).
  returned: when not in check mode
  type: float
"""

from ansible_collections.kiln.immutable.plugins.module_utils.common import aws
from ansible_collections.kiln.immutable.plugins.module_utils.common.module import KilnModule, dataclass_spec
from ansible_collections.kiln.immutable.plugins.module_utils.deploy import rolling_replace
from ansible_collections.kiln.immutable.plugins.module_utils.deploy.backends import LOAD_BALANCERS, PROVIDERS
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.health import PROBE_TYPES, HealthCheck
from ansible_collections.kiln.immutable.plugins.module_utils.rollout.options import STRATEGIES, RolloutOptions


def main() -> None:
    module = KilnModule(
        argument_spec=dict(
            group=dict(type="str", required=True),
            version=dict(type="str"),
            channel=dict(type="str"),
            image=dict(type="str"),
            **dataclass_spec(RolloutOptions, strategy={"choices": list(STRATEGIES)}),
            health=dict(
                type="dict",
                default={},
                options=dataclass_spec(HealthCheck, type={"choices": list(PROBE_TYPES)}),
            ),
            provider=dict(type="str", choices=list(PROVIDERS), default=PROVIDERS[0]),
            provider_options=dict(type="dict", default={}),
            load_balancer=dict(type="str", choices=list(LOAD_BALANCERS), default=LOAD_BALANCERS[0]),
            load_balancer_options=dict(type="dict", default={}),
            **aws.argument_spec(),
        ),
        mutually_exclusive=[("version", "channel"), ("profile", "access_key"), ("profile", "session_token")],
        required_one_of=[("version", "channel")],
        required_by={"channel": "image"},
    )
    module.run(lambda: rolling_replace.module_result(module.params, check=module.check_mode))


if __name__ == "__main__":
    main()
