"""``make scale``: the fault run across replicas (issue 16, item 5), one test per trial.

Not a test module's name, so ``make test`` never collects it: only ``make scale`` names this
file (``pytest tests/scale/run_scale.py --scale-trials 3 --scale-report docs/SCALE.md``). Each
trial starts its own deployment (tests/scale/topology.py), runs the burst with its faults
(tests/scale/burst.py), checks everything afterwards (tests/scale/checks.py) and prints a line
per phase; the session writes docs/SCALE.md from every trial, passed or not
(tests/scale/report.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scale.burst import RESTART_DELAY, run_burst
from tests.scale.checks import (
    RefreshTokens,
    audit,
    push_and_pull,
    read_load_balancer_log,
    rotate_through_issuer,
    wait_all_ready,
)
from tests.scale.report import Trial, render_report
from tests.scale.topology import SCALE_ENVIRONMENT, ScaleStack
from tests.support.stack import PostgresServer

pytestmark = pytest.mark.integration

BURST_THREADS = 12
PUSH_THREADS = 8
#: After the burst, how long registries have to become ready before they count as lost.
READY_TIMEOUT = 120.0

TOPOLOGY = [
    "a private PostgreSQL (one fresh copy of a migrated template database per trial) and a "
    "private Redis: broker, cache and RedBeat's lock and schedule (db 0), the registries' "
    "blob-descriptor cache (db 2);",
    "moto's S3 server (PyPI `moto[server]`) with one bucket;",
    "**backend 1** (`default`, the one the settings name, weight 200): two `docker-registry` "
    "replicas from `registry_config --replicas 2` on that bucket, sharing the Redis cache and "
    "one `http.secret`;",
    "**backend 2** (`backend-2`, weight 100: placements 2:1): one `docker-registry` on local "
    "disk, its configuration from `registry_config --backend backend-2` (its own token "
    "service). Added as an operator adds one: `POST /v2/operator/registry-backends` draining "
    "(an operator's API token), its registry rendered and started, then `PATCH` active and the "
    "first backend's weight set;",
    "**two API processes**: gunicorn with `deploy/gunicorn.conf.py` "
    f"({SCALE_ENVIRONMENT['WEB_CONCURRENCY']} workers x {SCALE_ENVIRONMENT['GUNICORN_THREADS']} "
    "threads each). The signing keys are in the database (the key store): API process 2 alone "
    "has a keys folder, with the CA's key (it is where keys are issued, as the keys Job); API "
    "process 1 (the one killed), the workers and the beats have an empty one;",
    "**nginx** (Debian's) in front of the API and of both backends (config rendered by "
    "`tests/scale/lb.py` into the trial's folder): the registry URLs the control plane "
    "provisions on and publishes, and the token realm the registries send clients to, are the "
    "load balancer's. Passive failover (`max_fails=1 fail_timeout=2s`, `proxy_next_upstream error "
    "timeout http_502 http_503`, no upstream keep-alive for the API): a refused connection is "
    "retried on the other backend whatever the method; a POST or PATCH already sent to a process "
    "that then dies is **not** re-sent by nginx (it may have been committed: `non_idempotent` is "
    "left out on purpose) and answers 502, and the client, which can look, sends it again;",
    "**two Celery workers** (threads pool, 4 each) and **two beats** (RedBeat: one active, one "
    "standby; lock timeout 3 s, loop 1 s).",
]
STEPS = [
    "Start everything; wait until each process is ready and the first beat is active, the "
    "second standing by; add backend 2 and set the weights (Topology).",
    "**Burst**: {clusters} clusters, each created with an agent token and its first hosted queue "
    f"through the load balancer's REST API, from {BURST_THREADS} client threads. A POST answered "
    "502/503/504 or a broken connection is sent again; a create answered 4xx after such a retry "
    "was committed the first time, and the client looks it up.",
    "**Faults, mid-burst** (at 10/25/40/55/80% of the clusters): SIGKILL of API process 1 "
    "(gunicorn master and workers, its whole process group), of Celery worker 1, of the active "
    "beat and of backend 1's replica A; then a signing-key rotation: `POST "
    "/v2/operator/registry-signing-keys/rotate` (an operator's token) sent to API process 2, "
    "the one that holds the CA's key, after the same POST to API process 1, which has none, "
    f"answered 409 and changed nothing. **Each killed process is started again {RESTART_DELAY:g} "
    "s after the kill**, as an orchestrator restarts a crashed container (meanwhile the load "
    "balancer meets its refused port and the standbys take over); *restarted* is from the kill "
    "until it is ready again. *Service back*: for the API, the first answer through the load "
    "balancer after the kill; for the worker, the next registry ready; for the beat, the "
    "standby's heartbeat saying active; for the replica, the load balancer's registry "
    "answering `/v2/`.",
    "**Rotation**: just before it, refresh tokens (what `docker login` stores) are taken for up "
    "to 30 clusters whose registry is ready (waiting for 10). *Service back* for the rotation "
    "is from the rotation's 201 until every API process answering then signs with "
    "the new key (the `kid` of anonymous tokens from each, polled: the first of 8 answers in a "
    "row with the new one, as each gunicorn worker has its own keys; the key store promises "
    "`REGISTRY_KEYS_RECHECK_SECONDS`, 5 s by default, which this run keeps; a process down at "
    "the rotation, killed earlier, must sign with the new key once started again); then, and "
    "again at the end, each refresh token is exchanged at API process 1, API process 2 and the "
    "load balancer. Any answer but 200 counts as refused.",
    f"**Afterwards**: wait (up to {READY_TIMEOUT:g} s) until every cluster's registry is ready; "
    "count them (tests/support/outcomes.py, as `make faults` does): one registry per cluster, "
    "ready, its URL published, one unbroken event sequence with one `ready`; placements per "
    "backend, each backend's share within 10 points of its share of the weights (three standard "
    "deviations of 200 weighted draws).",
    f"**Push and pull for every cluster** ({PUSH_THREADS} at a time): `skopeo copy` of a tiny "
    "OCI image into `<registry URL>/base:latest` through the load balancer with the cluster's "
    "agent token (the registry's 401 challenge, then our token endpoint through the load "
    "balancer), then back out; a skopeo failure mentioning 401/unauthorized counts as a token "
    "refused.",
]

_TRIALS = pytest.StashKey[list[Trial]]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    trials = metafunc.config.getoption("--scale-trials")
    metafunc.parametrize("trial_number", range(1, trials + 1), ids=lambda n: f"trial{n}")


@pytest.fixture(scope="session")
def trials(request: pytest.FixtureRequest) -> Iterator[list[Trial]]:
    done: list[Trial] = []
    yield done
    path = request.config.getoption("--scale-report")
    if path and done:
        clusters = request.config.getoption("--scale-clusters")
        steps = [step.format(clusters=clusters) for step in STEPS]
        Path(path).write_text(
            render_report(done, clusters=clusters, topology=TOPOLOGY, steps=steps)
            + RERUN.format(trials=len(done), clusters=clusters)
        )
        print(f"\nwrote {path}")


RERUN = """
## Rerunning it

```sh
make scale                    # TRIALS=3 by default; CLUSTERS=200
make scale TRIALS=5 CLUSTERS=300
```

This run: {trials} trial(s) of {clusters} clusters. It needs nginx, docker-registry, skopeo,
postgresql and redis-server (Debian; `make scale` installs them as root) and moto from the venv.
Each trial's logs (every process, nginx's access log with the upstream each request went to)
stay in pytest's temporary folder (`/tmp/pytest-of-$USER/`); the code is in `tests/scale/`.
"""


def test_trial(
    trial_number: int,
    trials: list[Trial],
    scale_postgres: PostgresServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    clusters = request.config.getoption("--scale-clusters")
    trial = Trial(trial_number)
    trials.append(trial)
    phase = _Phases(trial_number)
    stack = ScaleStack(tmp_path / "stack", scale_postgres)
    stack.start()
    try:
        phase("started", f"logs in {stack.workdir}")
        refresh = RefreshTokens(stack)
        created, injector = run_burst(
            stack,
            trial,
            clusters,
            threads=BURST_THREADS,
            rotate=lambda so_far: rotate_through_issuer(stack, refresh, so_far),
        )
        phase("burst", f"{trial.requests} POSTs, {trial.retried} retried, {trial.failed} failed")
        ready = wait_all_ready(stack, created, READY_TIMEOUT)
        trial.last_ready = round(time.monotonic() - injector.last_fault, 2) if ready else -1.0
        audit(stack, trial, created)
        phase(
            "registries",
            f"{trial.recovered}/{trial.clusters} ready, {trial.lost} lost, "
            f"{trial.duplicated} duplicated, last {trial.last_ready:.1f} s after the last fault",
        )
        push_and_pull(stack, trial, created, tmp_path, threads=PUSH_THREADS)
        phase("push/pull", f"{trial.pushed} pushed, {trial.pulled} pulled")
        refresh.exchange()
        trial.refresh_tokens = len(refresh.tokens)
        trial.refresh_exchanges, trial.refresh_accepted = refresh.exchanges, refresh.accepted
        trial.unauthorized += sum(" 401 " in f" {refused} " for refused in refresh.refused)
        trial.problems.extend(refresh.refused[:10] + refresh.problems)
        if not refresh.tokens:
            trial.problems.append("no refresh token was taken before the rotation")
        phase("tokens", f"{refresh.accepted}/{refresh.exchanges} refresh exchanges accepted")
        read_load_balancer_log(stack, trial)
        phase("load balancer", f"{trial.failovers} failovers, 502s: {trial.bad_gateway}")
    finally:
        stack.stop()
    print(trial.summary())
    assert trial.passed, "\n".join(trial.problems[:20])


class _Phases:
    """Prints a line per phase of a trial, with the time since the trial started."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.started = time.monotonic()

    def __call__(self, name: str, detail: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"\ntrial {self.number} [{elapsed:6.1f} s] {name}: {detail}", flush=True)
