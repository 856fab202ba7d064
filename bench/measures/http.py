"""The HTTP measures: P1, P2, P5, P6 against the bare view; P7 through the registry; P8 RSS.

Load comes from ``wrk`` (C, one thread, ``CONNECTIONS`` keep-alive connections, runs of
``SLICE_SECONDS``): it costs the shared CPUs far less than the server it loads, so the figures
are the server's. gunicorn's sync workers close every connection after one answer, so each
request also pays a TCP connection, for the bare view and the candidate alike. A round is
``SLICES`` short runs of each side, alternating; the ratio is candidate requests per second /
bare requests per second.

The rows are seeded once per stack through the services (``_Fixture``); query counts are taken
in the driver process through Django's own WSGI handler, so that ``close_old_connections`` runs
and the per-request health-check ping (``CONN_HEALTH_CHECKS``) is counted as production pays it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import statistics
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import yaml

from bench.measures import Measure, Result, at_least, at_most, progress, rss_mb

if TYPE_CHECKING:
    from bench.stack import Stack

#: A round: ``SLICES`` runs of ``SLICE_SECONDS`` for each side, alternating, so that a shared
#: machine's drift hits both sides alike; ``wrk``'s connections (more than gunicorn's 2 workers,
#: so that neither waits for the client).
SLICES = 3
SLICE_SECONDS = 1.0
CONNECTIONS = 4
#: A short run before the rounds, per target: imports, caches and connections warm.
WARM_SECONDS = 1.0
BARE_PATH = "/bench/bare"
#: P5: items per page, as the issue measures.
PAGE = 100
#: P7: the image's one layer, random bytes (incompressible).
IMAGE_MB = 100

NOTES = [
    f"**HTTP load**: `wrk` (Debian's), one thread, {CONNECTIONS} connections, after a "
    f"{WARM_SECONDS:g} s warm-up per target. A round is {SLICES} runs of {SLICE_SECONDS:g} s of "
    "each side, alternating (bare, candidate, candidate, bare, ...); a round's ratio is the "
    "median of its pairs' ratios, so that a burst of the shared machine's other load in one run "
    "moves it little. gunicorn's sync "
    "workers answer `Connection: close`, so every request of the bare view and of the candidate "
    "alike includes a TCP connection. A pair's ratio = candidate requests/s / bare requests/s.",
    "**Server CPU a request** (in the details): user + system CPU of gunicorn's workers and of "
    "the PostgreSQL backends of the stack's database (from `/proc`; Redis, shared, is left "
    "out), over each side's requests of a round; its ratio (bare / candidate) is what the "
    "server pays, which the machine's other load hardly moves, while requests/s swing with it.",
    "**P1, P2, P5 query counts**: through Django's WSGI handler in the bench process, on the same "
    "database and settings (so the health-check ping of `CONN_HEALTH_CHECKS`, which runs the "
    "first time a request touches the database, is counted as `+ N ping`), after a warming "
    "request.",
    f"**P7**: `skopeo copy` of a one-layer image ({IMAGE_MB} MB of random bytes, a new layer "
    "every round so that nothing is mounted or skipped) from an OCI layout to the registry and "
    "back to a `dir:`, through token authentication (the job credential, tokens from gunicorn) "
    "and through a second `docker-registry` with the same configuration minus `auth`; ratio = "
    "time with auth / time without.",
    "**P8**: VmRSS of each gunicorn worker after every HTTP measure's load; the figure is the "
    "larger worker.",
]


# --- the load generator ----------------------------------------------------------------------


@dataclass
class Target:
    """One request, repeated: the method, path, headers and body, and the status expected."""

    name: str
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    status: int = 200


BARE = Target("bare", BARE_PATH)

_LUA_STRING = re.compile(r"[^\w .,:;=/+\-{}\[\]\"@*()!?#%&<>|~^$]")


def _lua(text: str) -> str:
    """A Lua string literal for ``text`` (decimal escapes for anything unusual)."""
    escaped = _LUA_STRING.sub(
        lambda match: "".join(f"\\{byte}" for byte in match[0].encode()), text
    )
    return '"' + escaped.replace('"', '\\"') + '"'


def _script(stack: Stack, target: Target) -> Path:
    lines = [f"wrk.method = {_lua(target.method)}"]
    lines += [
        f"wrk.headers[{_lua(name)}] = {_lua(value)}" for name, value in target.headers.items()
    ]
    if target.body:
        lines.append(f"wrk.body = {_lua(target.body.decode())}")
    path = stack.workdir / "wrk" / f"{target.name}.lua"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _check(stack: Stack, target: Target) -> None:
    """One request by ``requests`` first: the target answers what the measure expects."""
    response = requests.request(
        target.method,
        stack.base_url + target.path,
        headers=dict(target.headers),
        data=target.body or None,
        timeout=10,
    )
    if response.status_code != target.status:
        raise RuntimeError(
            f"{target.name}: {target.method} {target.path} answered {response.status_code}, "
            f"not {target.status}: {response.text[:300]}"
        )


_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(stack: Stack, target: Target, seconds: float = SLICE_SECONDS) -> tuple[int, float]:
    """Requests answered and seconds taken by ``wrk`` on ``target``; raises if any answer was
    not of the expected kind (2xx, or 4xx for a refusal)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed: `sudo apt-get install wrk` (make bench does)")
    result = subprocess.run(  # noqa: S603 - wrk on our own server
        [binary, "-t1", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--timeout", "10s",
         "-s", str(_script(stack, target)), stack.base_url + target.path],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    output = result.stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    if done is None:
        raise RuntimeError(f"wrk printed no count:\n{output}{result.stderr}")
    requests_done, elapsed = int(done[1]), float(done[2]) * _DURATION_UNITS[done[3]]
    unexpected = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(unexpected[1]) if unexpected else 0
    wanted_non_2xx = requests_done if target.status >= 400 else 0
    if non_2xx != wanted_non_2xx or "Socket errors" in output:
        raise RuntimeError(
            f"{target.name}: {non_2xx} of {requests_done} answers were not 2xx/3xx "
            f"(expected {wanted_non_2xx}), or connections failed:\n{output}"
        )
    return requests_done, elapsed


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (``/proc/<pid>/stat``);
    a process gone meanwhile counts nothing."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


def server_pids(stack: Stack) -> list[int]:
    """gunicorn's workers and the PostgreSQL backends connected to the stack's database (the
    bench's own query excepted): the processes whose CPU a request costs on this host."""
    import psycopg

    with psycopg.connect(stack.database_url, autocommit=True, connect_timeout=5) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [*stack.gunicorn_pids(), *(int(row[0]) for row in rows)]


@dataclass
class _Side:
    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0


@dataclass
class Throughput:
    """A/B rounds of a candidate against the bare view: each side's requests per second, and
    the ratio of each round (the median of its pairs' ratios: a burst of the shared machine's
    other load that hits one run of one pair moves the round's ratio little). ``cpu_ratios``:
    per round, the bare view's server CPU per request / the candidate's, which other load on
    the machine hardly moves."""

    bare: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    bare_cpu_ms: list[float] = field(default_factory=list)
    candidate_cpu_ms: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)

    def cpu(self) -> str:
        """The CPU figures for a measure's detail."""
        return (
            f"server CPU a request {statistics.median(self.candidate_cpu_ms):.2f} ms vs bare "
            f"{statistics.median(self.bare_cpu_ms):.2f} ms (gunicorn worker + PostgreSQL "
            f"backend), CPU ratio {statistics.median(self.cpu_ratios):.2f}× "
            f"({', '.join(f'{ratio:.2f}' for ratio in self.cpu_ratios)})"
        )


def ab_rounds(stack: Stack, target: Target, rounds: int) -> Throughput:
    """Interleaved rounds of the bare view and ``target``: each round is ``SLICES`` pairs of
    runs, alternating which side goes first."""
    _check(stack, BARE)
    _check(stack, target)
    wrk(stack, BARE, WARM_SECONDS)
    wrk(stack, target, WARM_SECONDS)
    pids = server_pids(stack)  # after the warm-up: every worker holds its connection
    found = Throughput()
    for index in range(rounds):
        sides = {BARE.name: _Side(), target.name: _Side()}
        pairs = []
        for piece in range(SLICES):
            order = [BARE, target] if (index + piece) % 2 == 0 else [target, BARE]
            rates = {}
            for each in order:
                cpu_before = cpu_seconds(pids)
                requests_done, elapsed = wrk(stack, each)
                side = sides[each.name]
                side.cpu += cpu_seconds(pids) - cpu_before
                side.requests += requests_done
                side.seconds += elapsed
                rates[each.name] = requests_done / elapsed
            pairs.append(rates[target.name] / rates[BARE.name])
        bare, candidate = sides[BARE.name], sides[target.name]
        found.bare.append(bare.requests / bare.seconds)
        found.candidate.append(candidate.requests / candidate.seconds)
        found.ratios.append(statistics.median(pairs))
        found.bare_cpu_ms.append(1000 * bare.cpu / bare.requests)
        found.candidate_cpu_ms.append(1000 * candidate.cpu / candidate.requests)
        found.cpu_ratios.append(found.bare_cpu_ms[-1] / found.candidate_cpu_ms[-1])
        progress(
            f"{target.name} round {index + 1}: {found.candidate[-1]:.0f} req/s vs bare "
            f"{found.bare[-1]:.0f} req/s; pairs {', '.join(f'{pair:.2f}' for pair in pairs)} "
            f"= {found.ratios[-1]:.2f}×; CPU a request {found.candidate_cpu_ms[-1]:.2f} ms vs "
            f"{found.bare_cpu_ms[-1]:.2f} ms = {found.cpu_ratios[-1]:.2f}×"
        )
    return found


def _rates(found: Throughput) -> str:
    candidate, bare = statistics.median(found.candidate), statistics.median(found.bare)
    return f"{candidate:.0f} req/s vs bare {bare:.0f} req/s (medians of the rounds); {found.cpu()}"


# --- query counts in the driver process ------------------------------------------------------


@dataclass
class Queries:
    """What one request cost the database, counted in the driver process."""

    status: int
    statements: list[str]
    pings: int

    def __str__(self) -> str:
        ping = f" + {self.pings} health-check ping" if self.pings else ""
        return f"{len(self.statements)} SQL{ping}"


def count_queries(
    path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
) -> Queries:
    """Run one request through Django's WSGI handler in this process (Django configured by
    ``Stack.django``); the SQL it ran and the health-check pings (``is_usable`` calls)."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = urlsplit(path)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": url.path,
        "QUERY_STRING": url.query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    statuses: list[str] = []
    pings = 0

    def start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        statuses.append(status)

    is_usable = connection.is_usable

    def counted_is_usable() -> bool:
        nonlocal pings
        pings += 1
        return is_usable()

    connection.is_usable = counted_is_usable  # type: ignore[method-assign]
    try:
        with CaptureQueriesContext(connection) as captured:
            response = WSGIHandler()(environ, start_response)
            b"".join(response)
            response.close()  # request_finished: what production runs after each request
    finally:
        del connection.is_usable
    return Queries(
        int(statuses[0].split()[0]), [q["sql"] for q in captured.captured_queries], pings
    )


def warm_queries(path: str, headers: Mapping[str, str]) -> Queries:
    """The queries of the second of two identical requests (the first warms the caches)."""
    count_queries(path, headers=headers)
    found = count_queries(path, headers=headers)
    if found.status != 200:
        raise RuntimeError(f"GET {path} answered {found.status} in the driver process")
    return found


# --- the rows every measure uses ---------------------------------------------------------------


@dataclass
class _Fixture:
    organization: str
    api_token: str
    agent_token: str
    job_credential: str
    queue_key: str
    namespace: str
    webhook_secret: str
    clusters_org: str
    queues_cluster: str
    one_org: str
    one_org_token: str
    one_cluster: str


_fixtures: dict[int, _Fixture | Exception] = {}


def _api_token(slug: str) -> str:
    from django.core.management import call_command

    from clusters.models import ApiScope

    out = io.StringIO()
    call_command(
        "create_api_token", slug, "bench", "--scopes", ",".join(ApiScope.values), "--quiet",
        stdout=out,
    )  # fmt: skip
    return out.getvalue().strip()


def fixture(stack: Stack) -> _Fixture:
    """Seed once per stack, through the services: an organization with a cluster, a hosted
    queue whose registry is ready (provisioned here, against the stack's registry), an agent
    token, a job credential, a webhook secret; 100 clusters in a second organization, 100 queues
    in one cluster of it, and one cluster with one queue in a third (for the query counts)."""
    if id(stack) not in _fixtures:
        try:
            _fixtures[id(stack)] = _seed(stack)
        except Exception as exc:  # every measure that needs it reports the same failure
            _fixtures[id(stack)] = exc
    found = _fixtures[id(stack)]
    if isinstance(found, Exception):
        raise RuntimeError(f"seeding failed: {found}") from found
    return found


def _seed(stack: Stack) -> _Fixture:
    stack.django()
    from clusters import services
    from clusters.webhooks import webhook_secret_create
    from registries.models import Registry, State
    from registries.services import job_credential_create, registry_provision

    started = time.monotonic()
    organization = services.organization_create(slug="bench-http", name="Bench HTTP")
    cluster = services.cluster_create(organization=organization, name="hot")
    services.queue_create(cluster=cluster, key="hosted", instance_shape="LINUX_AMD64_2X4")
    registry = Registry.objects.get(cluster=cluster)
    outcome = registry_provision(registry_id=registry.pk)
    registry.refresh_from_db()
    if registry.state != State.READY:
        raise RuntimeError(f"the registry did not become ready: {outcome!r}, {registry.state}")
    agent_token, agent_secret = services.agent_token_create(cluster=cluster, description="bench")
    _credential, credential_secret = job_credential_create(agent_token=agent_token, job_id="bench")
    _secret, webhook_secret = webhook_secret_create(organization=organization, description="bench")

    many = services.organization_create(slug="bench-lists", name="Bench lists")
    clusters = [services.cluster_create(organization=many, name=f"c{i:03}") for i in range(PAGE)]
    for index in range(PAGE):
        services.queue_create(cluster=clusters[0], key=f"q{index:03}")
    one = services.organization_create(slug="bench-one", name="Bench one")
    one_cluster = services.cluster_create(organization=one, name="only")
    services.queue_create(cluster=one_cluster, key="only")
    found = _Fixture(
        organization=organization.slug,
        api_token=_api_token(many.slug),
        agent_token=agent_secret,
        job_credential=credential_secret,
        queue_key="hosted",
        namespace=registry.namespace,
        webhook_secret=webhook_secret,
        clusters_org=many.slug,
        queues_cluster=str(clusters[0].pk),
        one_org=one.slug,
        one_org_token=_api_token(one.slug),
        one_cluster=str(one_cluster.pk),
    )
    progress(f"seeded the HTTP measures' rows in {time.monotonic() - started:.1f}s")
    return found


# --- P1 ----------------------------------------------------------------------------------------


def _p1(stack: Stack, rounds: int) -> Result:
    rows = fixture(stack)
    path = f"/v3/agent/environment?queue={rows.queue_key}"
    headers = {"Authorization": f"Token {rows.agent_token}"}
    answer = requests.get(stack.base_url + path, headers=headers, timeout=10).json()
    if "BUILDKITE_HOSTED_REGISTRY_URL" not in json.dumps(answer):
        raise RuntimeError(f"the agent environment has no registry URL: {answer}")
    queries = warm_queries(path, headers)
    found = ab_rounds(stack, Target("P1 agent environment", path, headers=headers), rounds)
    return Result(
        found.ratios,
        f"warm: {queries} a request; {_rates(found)}",
        {"queries": queries.statements, "pings": queries.pings, "throughput": asdict(found)},
    )  # fmt: skip


# --- P2 ----------------------------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _p2(stack: Stack, rounds: int) -> Result:
    from django.conf import settings

    from registries.services import JOB_CREDENTIAL_USERNAME

    rows = fixture(stack)
    scope = f"repository:{rows.namespace}/x:pull,push"
    path = f"/registry/token?service={settings.REGISTRY_TOKEN_SERVICE}&scope={scope}"
    headers = {"Authorization": _basic(JOB_CREDENTIAL_USERNAME, rows.job_credential)}
    token = requests.get(stack.base_url + path, headers=headers, timeout=10).json()
    if "token" not in token:
        raise RuntimeError(f"the token endpoint answered no token: {token}")
    queries = warm_queries(path, headers)
    found = ab_rounds(stack, Target("P2 registry token", path, headers=headers), rounds)
    return Result(
        found.ratios,
        f"HTTP Basic with a job credential, one `{scope}` scope; warm: {queries} a request; "
        f"{_rates(found)}",
        {"queries": queries.statements, "throughput": asdict(found)},
    )


# --- P5 ----------------------------------------------------------------------------------------


def _list(stack: Stack, rounds: int, what: str) -> Result:
    rows = fixture(stack)
    if what == "clusters":
        many = f"/v2/organizations/{rows.clusters_org}/clusters?per_page={PAGE}"
        one = f"/v2/organizations/{rows.one_org}/clusters?per_page={PAGE}"
    else:
        many = f"/v2/organizations/{rows.clusters_org}/clusters/{rows.queues_cluster}/queues"
        one = f"/v2/organizations/{rows.one_org}/clusters/{rows.one_cluster}/queues"
        many, one = f"{many}?per_page={PAGE}", f"{one}?per_page={PAGE}"
    headers = {"Authorization": f"Bearer {rows.api_token}"}
    items = requests.get(stack.base_url + many, headers=headers, timeout=10).json()
    if len(items) != PAGE:
        raise RuntimeError(f"{many} answered {len(items)} items, not {PAGE}")
    queries_many = warm_queries(many, headers)
    one_headers = {"Authorization": f"Bearer {rows.one_org_token}"}
    queries_one = warm_queries(one, one_headers)
    found = ab_rounds(stack, Target(f"P5 {what} list", many, headers=headers), rounds)
    return Result(
        found.ratios,
        f"{PAGE} {what} a page: {queries_many} for {PAGE} items, {queries_one} for 1; "
        f"{_rates(found)}",
        {"queries_100": queries_many.statements, "queries_1": queries_one.statements,
         "throughput": asdict(found)},
    )  # fmt: skip


def _list_check(threshold: float) -> Callable[[Result], bool]:
    def check(result: Result) -> bool:
        same = len(result.extra.get("queries_100", [])) == len(result.extra.get("queries_1", []))
        return result.median >= threshold and same

    return check


# --- P6 ----------------------------------------------------------------------------------------


def _delivery(stack: Stack, secret: str, forged: bool) -> Target:
    from clusters.webhooks import sign

    rows = fixture(stack)
    body = json.dumps(
        {
            "event": "cluster_queue.created",
            "organization": {"slug": rows.organization},
            "cluster": {"id": str(uuid.uuid4()), "name": f"webhook-{uuid.uuid4().hex[:8]}"},
            "queue": {"id": str(uuid.uuid4()), "key": "from-webhook", "hosted": False},
            "sender": {"id": str(uuid.uuid4()), "name": "Bench"},
        }
    ).encode()
    signature = sign("bkwh_forged" + secret[::-1] if forged else secret, int(time.time()), body)
    return Target(
        "P6 forged signature" if forged else "P6 repeated delivery",
        f"/v2/webhooks/buildkite/{rows.organization}",
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Buildkite-Event": "cluster_queue.created",
            "X-Buildkite-Delivery": str(uuid.uuid4()),
            "X-Buildkite-Signature": signature,
        },
        body=body,
        status=401 if forged else 200,
    )


def _p6(stack: Stack, rounds: int, forged: bool) -> Result:
    rows = fixture(stack)
    target = _delivery(stack, rows.webhook_secret, forged)
    if not forged:  # delivered once: every request of the rounds is a repeat
        first = requests.post(
            stack.base_url + target.path, data=target.body, headers=dict(target.headers), timeout=10
        )
        if first.status_code != 200:
            raise RuntimeError(f"the first delivery answered {first.status_code}: {first.text}")
        again = requests.post(
            stack.base_url + target.path, data=target.body, headers=dict(target.headers), timeout=10
        )
        if again.headers.get("X-Delivery-Repeated") != "true":
            raise RuntimeError(f"a repeat was not answered as one: {again.headers}")
    found = ab_rounds(stack, target, rounds)
    what = "401, nothing written" if forged else "200 with the original answer"
    return Result(
        found.ratios,
        f"{what}; {_rates(found)}",
        {"throughput": asdict(found)},
    )


# --- P7 ----------------------------------------------------------------------------------------


def _oci_layout(folder: Path, megabytes: int) -> None:
    """An OCI image layout in ``folder``: one uncompressed layer holding ``megabytes`` of
    random bytes in one file, a config and a manifest, tagged ``latest``."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> tuple[str, int]:
        digest = sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as archive:
        payload = os.urandom(megabytes * 1024 * 1024)
        member = tarfile.TarInfo("payload.bin")
        member.size = len(payload)
        member.mtime = int(time.time())
        archive.addfile(member, io.BytesIO(payload))
    layer_digest, layer_size = blob(layer.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "config": {},
    }
    config_digest, config_size = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))


def _unauthenticated_registry(stack: Stack) -> str:
    """A second ``docker-registry``: the stack's configuration without ``auth``, its own port
    and storage. Returns its host:port."""
    from bench.stack import free_port

    port = free_port()
    config = yaml.safe_load((stack.workdir / "registry" / "config.yml").read_text())
    config.pop("auth")
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"].pop("debug", None)
    config["storage"]["filesystem"]["rootdirectory"] = str(stack.workdir / "registry-open-data")
    path = stack.workdir / "registry" / "open.yml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    stack.registry_process("registry-open", path, port)
    return f"127.0.0.1:{port}"


def _copy_time(source: str, destination: str, credentials: str | None, workdir: Path) -> float:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise RuntimeError("skopeo is not installed: `sudo apt-get install skopeo`")
    argv = [skopeo, "--tmpdir", str(workdir), "copy", "--quiet"]
    if source.startswith("docker://"):
        argv += ["--src-tls-verify=false"] + (["--src-creds", credentials] if credentials else [])
    if destination.startswith("docker://"):
        argv += ["--dest-tls-verify=false"] + (["--dest-creds", credentials] if credentials else [])
    started = time.monotonic()
    result = subprocess.run(  # noqa: S603 - skopeo on our own registries
        [*argv, source, destination], capture_output=True, text=True, check=False, timeout=600
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"skopeo copy {source} {destination} failed:\n{result.stderr[-2000:]}")
    return elapsed


def _push_pull(layout: Path, host: str, repository: str, credentials: str | None) -> float:
    pulled = layout.parent / f"pulled-{uuid.uuid4().hex[:8]}"
    reference = f"docker://{host}/{repository}:latest"
    try:
        push = _copy_time(f"oci:{layout}:latest", reference, credentials, layout.parent)
        pull = _copy_time(reference, f"dir:{pulled}", credentials, layout.parent)
    finally:
        shutil.rmtree(pulled, ignore_errors=True)
    return push + pull


def _p7(stack: Stack, rounds: int) -> Result:
    from registries.services import JOB_CREDENTIAL_USERNAME

    rows = fixture(stack)
    open_host = _unauthenticated_registry(stack)
    credentials = f"{JOB_CREDENTIAL_USERNAME}:{rows.job_credential}"
    with_auth: list[float] = []
    without: list[float] = []
    base = stack.workdir / "p7"
    for index in range(rounds):
        layout = base / f"round-{index}" / "layout"
        _oci_layout(layout, IMAGE_MB)
        repository = f"{rows.namespace}/big{index}"
        runs = [("auth", stack.registry_host, credentials), ("open", open_host, None)]
        for name, host, creds in runs if index % 2 == 0 else runs[::-1]:
            seconds = _push_pull(layout, host, repository, creds)
            (with_auth if name == "auth" else without).append(seconds)
        shutil.rmtree(layout.parent, ignore_errors=True)
        progress(
            f"P7 round {index + 1}: {with_auth[-1]:.2f}s with auth, {without[-1]:.2f}s without "
            f"= {with_auth[-1] / without[-1]:.2f}×"
        )
    ratios = [a / b for a, b in zip(with_auth, without, strict=True)]
    return Result(
        ratios,
        f"push + pull of {IMAGE_MB} MB: {statistics.median(with_auth):.2f}s with token "
        f"auth vs {statistics.median(without):.2f}s without (medians)",
        {"with_auth": with_auth, "without": without},
    )


# --- P8 ----------------------------------------------------------------------------------------


def _p8(stack: Stack, rounds: int) -> Result:
    pids = stack.gunicorn_pids()
    sizes = [rss_mb(pid) for pid in pids]
    listed = ", ".join(f"{size:.0f}" for size in sizes)
    return Result(
        [max(sizes)],
        f"VmRSS of the {len(pids)} gunicorn workers after the HTTP measures' load: {listed} MB",
        {"workers": dict(zip(pids, sizes, strict=True))},
    )


# --- why goals are not met yet (profiled in-process, CPU) ----------------------------------------

P2_SHORTFALL = (
    "Profiled 2026-12-01 after the token endpoint was thinned (callgrind, through the WSGI "
    "handler, warm): a token request is 1.67M instructions against the bare view's 0.92M (was "
    "2.00M; 1,072 Python calls against 741, was 1,224); in-process CPU ~345-380 µs against "
    "~165 µs (was ~415-440). What is left is the token's own work: the ES256 signature ~0.25M "
    "(OpenSSL's nonce, inverse and scalar multiplication; the header is hashed once per key), "
    "the audit line ~0.14M, the claims ~0.1M, URL resolution through two includes +0.06M, the "
    "response's no-store and Allow headers ~0.05M, the metrics ~0.03M. Under gunicorn on the "
    "shared machine (load 3-5 on 2 cores) the thinned code gave CPU ratios 0.52-0.65 and "
    "throughput 0.56-1.01× in five runs, the unchanged code 0.61-0.63 and 0.61-0.67×: the "
    "machine's noise is larger than what is left to cut. Signed tokens are never reused "
    "(docs/registry-tokens.md), so 0.7× every time needs a quieter machine or fewer of these."
)
P5_SHORTFALL = (
    "Measured 2026-12-01 (shared 2 cores, load 4-7): server CPU a request 4.5 ms (clusters) and "
    "6.1 ms (queues) against ~0.65 ms for the bare view (13.9 / 17.9 ms before the pages were "
    "compiled, read as rows and written by orjson); 0.2× needs ~3.3 ms. It is not the floor: "
    "through the same gunicorn, a view that runs the same page query (rows fetched with "
    "psycopg's C loaders) and answers the same 100 KB costs ~1.9 ms (0.29×), and the 100 KB "
    "alone costs what the bare view costs. The rest is Python: ~15M instructions a request "
    "for 100 clusters (callgrind; 50M before, the bare view 1.1M), ~7.7M of them the "
    "serializer (~77k an item: nine method fields, four links, graphql_id, the timestamp) and "
    "~3.6M the path of a 1-item page (token, rate-limit round trip, Link header). Next: the "
    "method fields rendered from the row's columns as the plain fields already are."
)

MEASURES = [
    Measure("P1", "agent environment, warm", "≥ 0.8×, 0 SQL", lambda r: (
        r.median >= 0.8 and not r.extra["queries"] and not r.extra["pings"]), _p1),
    Measure("P2", "registry token (HTTP Basic, one pull/push scope)", "≥ 0.6×", at_least(0.6),
            _p2, shortfall=P2_SHORTFALL),
    Measure("P5 clusters", f"clusters list, {PAGE} per page", "≥ 0.2×, same queries for 1 and "
            f"{PAGE}", _list_check(0.2), lambda stack, rounds: _list(stack, rounds, "clusters"),
            shortfall=P5_SHORTFALL),
    Measure("P5 queues", f"queues list, {PAGE} per page", f"≥ 0.2×, same queries for 1 and {PAGE}",
            _list_check(0.2), lambda stack, rounds: _list(stack, rounds, "queues"),
            shortfall=P5_SHORTFALL),
    Measure("P6 repeat", "webhook: a repeated delivery", "≥ 0.4×", at_least(0.4),
            lambda stack, rounds: _p6(stack, rounds, forged=False)),
    Measure("P6 forged", "webhook: a forged signature", "≥ 0.7×", at_least(0.7),
            lambda stack, rounds: _p6(stack, rounds, forged=True)),
    Measure("P7", f"push + pull of {IMAGE_MB} MB, token auth vs none", "≤ 1.1×", at_most(1.1),
            _p7),
    Measure("P8 web", "RSS of one gunicorn worker after the load", "≤ 120 MB", at_most(120), _p8,
            unit="MB"),
]  # fmt: skip
