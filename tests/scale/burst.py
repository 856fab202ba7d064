"""The burst of a ``make scale`` trial, and the faults injected while it runs.

Each of ``clusters`` clusters gets, through the load balancer, from a pool of client threads:
a cluster, an agent token (the credential its jobs push and pull with) and its first hosted
queue. A client that gets 502/503/504 or a broken connection sends the POST again (the load
balancer never re-sends a POST that reached a backend: tests/scale/lb.py); a create answered
4xx after such a retry means the first one was committed, and the client looks it up.

Meanwhile the :class:`Injector` fires, at set fractions of the burst, SIGKILL of API process 1
(its whole process group), of worker 1, of the active beat and of backend 1's first replica,
then a signing-key rotation through API process 2's operators' endpoint (the process that holds
the CA's key). Each killed process is started again ``RESTART_DELAY`` seconds later, as an
orchestrator restarts a crashed container; the time until the service answers again (or another
process takes over) and until the process is ready again is measured.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from tests.scale.report import Fault, Trial
from tests.scale.topology import ScaleStack
from tests.support.stack import ManagedProcess

HOSTED = {"hostedAgents": {"instanceShape": "LINUX_AMD64_2X4"}}
RETRIED_STATUSES = frozenset({502, 503, 504})
ATTEMPTS = 8
#: Seconds between a kill and the start of the process again: an orchestrator noticing the exit
#: and starting the container. Meanwhile the load balancer meets the dead port (a refused
#: connection, which it sends to the other backend) and the standbys take over.
RESTART_DELAY = 2.0


@dataclass
class Created:
    """One cluster of the burst, as the client saw it."""

    name: str
    cluster_id: str = ""
    secret: str = ""
    queue_created: bool = False


@dataclass
class Client:
    """Sends the burst's POSTs with the client's retry rule; counts them."""

    stack: ScaleStack
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def post(self, path: str, body: dict[str, Any]) -> tuple[requests.Response | None, bool]:
        """POST until answered other than 502/503/504: the answer (None if it never was), and
        whether the POST was sent more than once."""
        for attempt in range(ATTEMPTS):
            with self.lock:
                self.requests += 1
            try:
                response = self.stack.api("POST", path, json=body)
            except requests.RequestException as exc:
                reason = type(exc).__name__
            else:
                if response.status_code not in RETRIED_STATUSES:
                    return response, attempt > 0
                reason = str(response.status_code)
            with self.lock:
                self.retried += 1
                self.errors.append(f"POST {path}: {reason}")
            time.sleep(0.2 * (attempt + 1))
        return None, True

    def create(self, name: str) -> Created:
        created = Created(name)
        response, retried = self.post("clusters", {"name": name})
        if response is not None and response.status_code == 201:
            created.cluster_id = response.json()["id"]
        elif response is not None and retried and response.status_code < 500:
            rows = self.stack.sql("select id::text from clusters_cluster where name = %s", [name])
            created.cluster_id = rows[0][0] if rows else ""
        if not created.cluster_id:
            return self._failed(created, "cluster", response)
        token, _ = self.post(f"clusters/{created.cluster_id}/tokens", {"description": "scale"})
        if token is None or token.status_code != 201:
            return self._failed(created, "agent token", token)
        created.secret = token.json()["token"]
        queue, retried = self.post(
            f"clusters/{created.cluster_id}/queues", {"key": "linux", **HOSTED}
        )
        created.queue_created = queue is not None and (
            queue.status_code == 201 or (retried and 400 <= queue.status_code < 500)
        )
        if not created.queue_created:
            return self._failed(created, "hosted queue", queue)
        return created

    def _failed(self, created: Created, what: str, response: requests.Response | None) -> Created:
        with self.lock:
            self.failed += 1
            answer = "no answer" if response is None else f"{response.status_code} {response.text}"
            self.errors.append(f"{created.name}: {what}: {answer[:200]}")
        return created


class Injector:
    """Fires the faults (module docstring) as the burst's progress crosses ``schedule``'s
    fractions; ``rotate`` is called for the rotation (the refresh tokens are taken first)."""

    def __init__(
        self,
        stack: ScaleStack,
        trial: Trial,
        total: int,
        rotate: Callable[[list[Created]], tuple[float | None, str]],
    ) -> None:
        self.stack = stack
        self.trial = trial
        self.total = total
        self.rotate = rotate
        self.started = time.monotonic()
        self.done = 0
        self.created: list[Created] = []
        self.last_fault = time.monotonic()
        self.lock = threading.Lock()
        self.restarts = ThreadPoolExecutor(max_workers=4, thread_name_prefix="restart")
        self.pending: list[Future[None]] = []
        self.schedule: list[tuple[float, Callable[[], None]]] = [
            (0.10, self.kill_api),
            (0.25, self.kill_worker),
            (0.40, self.kill_active_beat),
            (0.55, self.kill_replica),
            # Late enough for API process 1 to be back: the rotation then reaches a process
            # other than the one it went through.
            (0.80, self.rotate_key),
        ]

    def advance(self, created: Created) -> None:
        """One more cluster answered; fire the faults now due (in the calling thread)."""
        with self.lock:
            self.done += 1
            self.created.append(created)
            due = [entry for entry in self.schedule if self.done >= entry[0] * self.total]
            for entry in due:
                self.schedule.remove(entry)
        for _, fire in due:
            fire()

    def finish(self) -> None:
        """Fire what is left (a burst too short to reach it) and wait for every restart."""
        for _, fire in list(self.schedule):
            fire()
        self.schedule.clear()
        for future in self.pending:
            future.result()
        self.restarts.shutdown()

    # the faults

    def _fault(self, what: str) -> Fault:
        now = time.monotonic()
        self.last_fault = now
        fault = Fault(what, at=round(now - self.started, 2), progress=self.done)
        self.trial.faults.append(fault)
        print(f"  [{fault.at:6.1f} s] {what} ({fault.progress}/{self.total} clusters done)")
        return fault

    def _restart(self, fault: Fault, process: ManagedProcess, killed: float) -> None:
        def restart() -> None:
            time.sleep(max(0.0, killed + RESTART_DELAY - time.monotonic()))
            process.start()
            fault.restarted = round(time.monotonic() - killed, 2)

        self.pending.append(self.restarts.submit(restart))

    def _until(self, check: Callable[[], bool], since: float, timeout: float = 60) -> float | None:
        while time.monotonic() - since < timeout:
            if check():
                return round(time.monotonic() - since, 2)
            time.sleep(0.02)
        return None

    def kill_api(self) -> None:
        fault = self._fault("SIGKILL API process 1 (gunicorn master and workers)")
        process = self.stack.apis[0]
        self.stack.kill_group(process)
        killed = time.monotonic()
        fault.back = self._until(lambda: _answers(f"{self.stack.api_url}/", 200), killed)
        self._restart(fault, process, killed)

    def kill_worker(self) -> None:
        fault = self._fault("SIGKILL Celery worker 1")
        ready = self._ready_count()
        self.stack.workers[0].kill(signal.SIGKILL)
        killed = time.monotonic()
        self._restart(fault, self.stack.workers[0], killed)
        # Back: the next registry to become ready (the other worker, or this one restarted).
        fault.back = self._until(lambda: self._ready_count() > ready, killed)

    def kill_active_beat(self) -> None:
        active = self.stack.active_beat()
        if active is None:
            self.trial.problems.append("no beat was active when the active one was to be killed")
            return
        fault = self._fault(f"SIGKILL the active beat (beat{active + 1})")
        self.stack.beats[active].kill(signal.SIGKILL)
        killed = time.monotonic()
        other = 1 - active
        fault.back = self._until(lambda: self.stack.beat_state(other) == "active", killed)
        fault.note = f"beat{other + 1} took over"
        self._restart(fault, self.stack.beats[active], killed)

    def kill_replica(self) -> None:
        fault = self._fault("SIGKILL backend 1's registry replica A")
        self.stack.replicas[0].kill(signal.SIGKILL)
        killed = time.monotonic()
        fault.back = self._until(lambda: _answers(f"{self.stack.registry_url}/v2/", 401), killed)
        self._restart(fault, self.stack.replicas[0], killed)

    def rotate_key(self) -> None:
        fault = self._fault(f"rotate the signing key through API process {self.stack.issuer + 1}")
        with self.lock:
            created = list(self.created)
        fault.back, fault.note = self.rotate(created)
        # The key store's promise: every process signs with the newest key within its re-check
        # interval (plus a request, and this poll's own step).
        bound = float(self.stack.env.get("REGISTRY_KEYS_RECHECK_SECONDS", "5")) + 1
        if fault.back is None or fault.back > bound:
            self.trial.problems.append(f"the rotation reached every API process in {fault.back} s")

    def _ready_count(self) -> int:
        return int(
            self.stack.sql("select count(*) from registries_registry where state='ready'")[0][0]
        )


def _answers(url: str, status: int) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == status
    except requests.RequestException:
        return False


def run_burst(
    stack: ScaleStack,
    trial: Trial,
    clusters: int,
    *,
    threads: int,
    rotate: Callable[[list[Created]], tuple[float | None, str]],
) -> tuple[list[Created], Injector]:
    """Create ``clusters`` clusters' first hosted queues with ``threads`` clients while the
    injector fires; return what the clients created."""
    client = Client(stack)
    injector = Injector(stack, trial, clusters, rotate)

    def one(index: int) -> Created:
        created = client.create(f"scale-{trial.number}-{index:04d}")
        injector.advance(created)
        return created

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="burst") as pool:
        results = list(pool.map(one, range(clusters)))
    trial.burst_seconds = round(time.monotonic() - injector.started, 2)
    injector.finish()
    trial.requests, trial.retried, trial.failed = client.requests, client.retried, client.failed
    trial.problems.extend(e for e in client.errors if not e.startswith("POST "))
    return results, injector
