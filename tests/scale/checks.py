"""What a ``make scale`` trial checks once the burst is over, and the rotation's refresh tokens.

- :class:`RefreshTokens`: just before the rotation, refresh tokens (what ``docker login``
  stores) are issued through the load balancer for clusters whose registry is ready; after the
  rotation, and again at the end, each is exchanged at API process 1, API process 2 and the load
  balancer: a 401 is a token refused because of the rotation.
- :func:`audit`: every registry ready exactly once (tests/support/outcomes.py) and the
  placements per backend.
- :func:`push_and_pull`: for every cluster, ``skopeo copy`` of a tiny image into its registry
  through the load balancer with its agent token (the registry's token flow: a 401 challenge,
  then our realm, through the load balancer too), and back out.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from registries.demo_image import write_oci_layout
from tests.scale.burst import Created
from tests.scale.report import Trial, placement_problems
from tests.scale.topology import ScaleStack
from tests.support.outcomes import EVENTS_QUERY, REGISTRIES_QUERY, count_registries
from tests.support.processes import require_binary, wait_until

AGENT_USER = "buildkite-agent"
#: At most this many refresh tokens are taken before the rotation (one per ready cluster).
REFRESH_SAMPLE = 30
REFRESH_MINIMUM = 10
NEW_KID_STREAK = 8


def namespaces(stack: ScaleStack) -> dict[str, str]:
    """Each ready registry's URL (``host/namespace``) by cluster id."""
    return dict(
        stack.sql("select cluster_id::text, url from registries_registry where state = 'ready'")
    )


@dataclass
class RefreshTokens:
    stack: ScaleStack
    tokens: list[tuple[str, str]] = field(default_factory=list)  # (refresh token, scope)
    exchanges: int = 0
    accepted: int = 0
    refused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def take(self, created: list[Created]) -> None:
        """Refresh tokens for up to REFRESH_SAMPLE clusters with a ready registry (waiting up to
        15 s for REFRESH_MINIMUM of them: the burst has just begun)."""
        wanted = {c.cluster_id for c in created if c.queue_created}
        deadline = time.monotonic() + 15
        urls = namespaces(self.stack)
        while len(wanted & set(urls)) < min(REFRESH_MINIMUM, len(wanted)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
            urls = namespaces(self.stack)
        for cluster in created:
            url = urls.get(cluster.cluster_id)
            if url is None or not cluster.secret or len(self.tokens) >= REFRESH_SAMPLE:
                continue
            scope = f"repository:{url.split('/', 1)[1]}/base:pull,push"
            response = self._post(
                self.stack.api_url,
                {"grant_type": "password", "username": AGENT_USER, "password": cluster.secret,
                 "access_type": "offline", "scope": scope},
            )  # fmt: skip
            if response.status_code == 200 and "refresh_token" in response.json():
                self.tokens.append((response.json()["refresh_token"], scope))

    def exchange(self) -> None:
        """Each refresh token at each API process (once each answers) and at the load
        balancer."""
        for base in self.stack.api_urls:  # one killed earlier may still be starting again
            wait_until(lambda base=base: signing_kid(self.stack, base), timeout=30, what=base)
        for refresh_token, scope in self.tokens:
            for base in [*self.stack.api_urls, self.stack.api_url]:
                response = self._post(
                    base,
                    {"grant_type": "refresh_token", "refresh_token": refresh_token,
                     "scope": scope},
                )  # fmt: skip
                self.exchanges += 1
                if response.status_code == 200:
                    self.accepted += 1
                else:
                    self.refused.append(f"{base}: {response.status_code} {response.text[:120]}")

    def _post(self, base: str, form: dict[str, str]) -> requests.Response:
        form = {**form, "service": self.stack.env["REGISTRY_TOKEN_SERVICE"]}
        return requests.post(f"{base}/registry/token", data=form, timeout=30)


def signing_kid(stack: ScaleStack, base: str) -> str | None:
    """The ``kid`` of the key ``base`` signs with now: the header of an anonymous token (an
    empty grant, which the endpoint gives anyone); None if it does not answer."""
    try:
        response = requests.get(
            f"{base}/registry/token",
            params={"service": stack.env["REGISTRY_TOKEN_SERVICE"]},
            timeout=10,
        )
        response.raise_for_status()
    except requests.RequestException:
        return None
    header = response.json()["token"].split(".", 1)[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def _rotate(stack: ScaleStack, base: str) -> requests.Response:
    """``POST /v2/operator/registry-signing-keys/rotate`` to one API process, directly."""
    return requests.post(
        f"{base}/v2/operator/registry-signing-keys/rotate",
        headers={"Authorization": f"Bearer {stack.operator_token}"},
        timeout=30,
    )


def rotate_through_issuer(
    stack: ScaleStack, refresh: RefreshTokens, created: list[Created]
) -> tuple[float | None, str]:
    """Take refresh tokens, rotate the signing key through the operators' endpoint of the API
    process that holds the CA's key (another answers 409 and writes nothing), wait until every
    API process signs with the new key, then exchange the refresh tokens. Return the seconds
    from the end of the rotation until every API process that was answering then signed with
    the new key (None: not within 30 s), and what happened (a process down at the rotation,
    killed earlier, is waited for as well: once started again it must sign with the new
    key)."""
    refresh.take(created)
    issuer = stack.api_urls[stack.issuer]
    old = signing_kid(stack, issuer)
    down = [base for base in stack.api_urls if signing_kid(stack, base) is None]
    notes = []
    for base in stack.api_urls:
        if base == issuer or base in down:
            continue
        elsewhere = _rotate(stack, base)
        notes.append(f"POST .../rotate to {base} (no CA key) answered {elsewhere.status_code}")
        if elsewhere.status_code != 409 or signing_kid(stack, issuer) != old:
            refresh.problems.append(f"rotate through {base}, which has no CA key: not a 409")
    started = time.monotonic()
    response = _rotate(stack, issuer)
    rotated = time.monotonic()
    if response.status_code != 201:
        raise AssertionError(f"rotate through {issuer}: {response.status_code} {response.text}")
    # A process answers from several gunicorn workers, each with its own keys: it signs with
    # the new key from the first of NEW_KID_STREAK answers in a row that carry it.
    late, times = list(stack.api_urls), {}
    streaks: dict[str, list[float]] = {base: [] for base in late}
    while late and time.monotonic() - rotated < 30:
        for base in list(late):
            kid = signing_kid(stack, base)
            if kid is None or kid == old:
                streaks[base].clear()
                continue
            streaks[base].append(time.monotonic() - rotated)
            if len(streaks[base]) >= NEW_KID_STREAK:
                late.remove(base)
                times[base] = streaks[base][0]
        time.sleep(0.02)
    answering = [times.get(base) for base in stack.api_urls if base not in down]
    everywhere = None if None in answering else round(max(answering, default=0.0), 2)
    refresh.exchange()
    notes.append(f"then POST .../rotate to {issuer} answered 201 in {rotated - started:.2f} s")
    notes += [f"{base} was down at the rotation (killed earlier)" for base in down]
    notes += [f"{base} still signed with the old key after 30 s" for base in late]
    notes.append(
        f"{len(refresh.tokens)} refresh tokens taken just before, "
        f"{refresh.accepted}/{refresh.exchanges} exchanges accepted right after"
    )
    return everywhere, "; ".join(notes)


def audit(stack: ScaleStack, trial: Trial, created: list[Created]) -> None:
    """Count the registries of the clusters whose hosted queue was created, and their placement
    per backend against the backends' weights (the operators' endpoint)."""
    cluster_ids = [c.cluster_id for c in created if c.queue_created]
    trial.clusters = len(cluster_ids)
    counts = count_registries(
        cluster_ids, stack.sql(REGISTRIES_QUERY, [cluster_ids]), stack.sql(EVENTS_QUERY)
    )
    trial.recovered, trial.lost = counts.recovered, counts.lost
    trial.duplicated, trial.provisionings = counts.duplicated, counts.provisionings
    trial.problems.extend(counts.problems[:20])
    trial.placements = dict(
        stack.sql(
            "select b.name, count(*) from registries_registry r "
            "join registries_registrybackend b on b.id = r.backend_id "
            "where r.cluster_id::text = any(%s) group by b.name",
            [cluster_ids],
        )
    )
    listed = stack.operator("GET", "")
    backends = listed["results"] if isinstance(listed, dict) and "results" in listed else listed
    trial.weights = {backend["name"]: backend["weight"] for backend in backends}
    trial.problems.extend(placement_problems(trial.placements, trial.weights))


def read_load_balancer_log(stack: ScaleStack, trial: Trial) -> None:
    """Failovers (an ``upstream`` list of two addresses: the first refused or failed) and 502
    answers by method, from nginx's access log (tests/scale/lb.py's ``scale`` format)."""
    for line in (stack.workdir / "nginx-access.log").read_text(errors="replace").splitlines():
        trial.failovers += ", " in line.partition(" upstream=")[2].partition(" upstream_status=")[0]
        parts = line.split('"')
        if len(parts) >= 3 and parts[2].split()[:1] == ["502"]:
            method = parts[1].split(" ", 1)[0]
            trial.bad_gateway[method] = trial.bad_gateway.get(method, 0) + 1


def wait_all_ready(stack: ScaleStack, created: list[Created], timeout: float) -> bool:
    wanted = {c.cluster_id for c in created if c.queue_created}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= set(namespaces(stack)):
            return True
        time.sleep(0.25)
    return False


def push_and_pull(
    stack: ScaleStack, trial: Trial, created: list[Created], workdir: Path, *, threads: int
) -> None:
    """Push a tiny image into every cluster's registry and pull it back, through the load
    balancer with the cluster's agent token; count successes and 401s."""
    skopeo = require_binary("skopeo")
    layout = workdir / "image"
    (workdir / "pulled").mkdir(parents=True, exist_ok=True)
    write_oci_layout(layout, "make scale")
    urls = namespaces(stack)
    lock = threading.Lock()

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [skopeo, "--insecure-policy", *args], capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip

    def one(cluster: Created) -> None:
        url = urls.get(cluster.cluster_id)
        if url is None:
            return
        reference = f"docker://{url}/base:latest"
        creds = f"{AGENT_USER}:{cluster.secret}"
        pushed = run(["copy", "--dest-tls-verify=false", "--dest-creds", creds,
                      f"oci:{layout}", reference])  # fmt: skip
        pulled: Any = None
        if pushed.returncode == 0:
            into = workdir / "pulled" / cluster.cluster_id
            pulled = run(["copy", "--src-tls-verify=false", "--src-creds", creds, reference,
                          f"dir:{into}"])  # fmt: skip
        with lock:
            trial.pushed += pushed.returncode == 0
            trial.pulled += pulled is not None and pulled.returncode == 0
            for result in (pushed, pulled):
                if result is not None and result.returncode != 0:
                    trial.unauthorized += "401" in result.stderr or "nauthorized" in result.stderr
                    trial.problems.append(f"skopeo for {url}: {result.stderr.strip()[-300:]}")

    started = time.monotonic()
    ready = [c for c in created if c.queue_created and c.secret]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, ready))
    trial.push_pull_seconds = round(time.monotonic() - started, 2)
