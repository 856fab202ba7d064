"""The pieces of ``make scale`` that need no process (the run itself: tests/scale/run_scale.py):
the load balancer's configuration, the client's retry rule, when faults fire, the counting of
registries and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.scale.burst import Client, Injector
from tests.scale.checks import read_load_balancer_log
from tests.scale.lb import Upstream, render_nginx_config
from tests.scale.report import Fault, Trial, placement_problems, render_report
from tests.support.outcomes import count_registries

API = Upstream("api", "127.0.0.1:9000", ["127.0.0.1:9001", "127.0.0.1:9002"])
REGISTRY = Upstream(
    "backend1", "127.0.0.1:9100", ["127.0.0.1:9101", "127.0.0.1:9102"], streaming=True
)


def block(config: str, upstream: Upstream) -> str:
    """The ``upstream`` block and its ``server`` block."""
    start = config.index(f"upstream {upstream.name} {{")
    end = config.index("upstream ", start + 1) if config.count("upstream ") > 1 else len(config)
    return config[start:end]


class TestNginxConfig:
    config = render_nginx_config(Path("/trial"), [API, REGISTRY])

    def test_each_service_balances_its_two_backends_with_passive_failover(self) -> None:
        for upstream in (API, REGISTRY):
            text = self.config[self.config.index(f"upstream {upstream.name} {{") :]
            for server in upstream.servers:
                assert f"server {server} max_fails=1 fail_timeout=2s;" in text
            assert f"listen {upstream.listen} backlog=1024;" in text
            assert f"proxy_pass http://{upstream.name};" in text
        assert self.config.count("proxy_next_upstream_tries 2;") == 2

    def test_a_post_already_sent_is_never_sent_again_by_the_load_balancer(self) -> None:
        """Only connection failures (never sent) and idempotent requests move to the other
        backend: ``non_idempotent`` would re-send a POST that may have been committed."""
        lines = [line.strip() for line in self.config.splitlines()]
        retries = [line for line in lines if line.startswith("proxy_next_upstream ")]
        assert retries == ["proxy_next_upstream error timeout http_502 http_503;"] * 2
        assert "non_idempotent" not in self.config
        # No kept connections to the API: a request on one to a killed process counts as sent.
        assert "keepalive" not in self.config

    def test_the_registry_streams_bodies_of_any_size_and_the_api_does_not(self) -> None:
        registry = self.config[self.config.index("upstream backend1 {") :]
        api = self.config[: self.config.index("upstream backend1 {")]
        for line in ("client_max_body_size 0;", "proxy_request_buffering off;"):
            assert line in registry
            assert line not in api
        assert "proxy_set_header Host $http_host;" in registry  # upload Locations stay on the LB

    def test_state_stays_in_the_trial_folder_and_the_user_is_set_only_when_asked(self) -> None:
        assert "pid /trial/nginx.pid;" in self.config
        assert "access_log /trial/nginx-access.log scale;" in self.config
        assert "proxy_temp_path /trial/nginx-temp/proxy;" in self.config
        assert "daemon off;" in self.config
        assert "\nuser " not in self.config
        as_root = render_nginx_config(Path("/trial"), [API], user="root")
        assert "\nuser root;\n" in as_root


class FakeResponse:
    def __init__(self, status_code: int, body: dict[str, Any] | None = None) -> None:
        self.status_code = status_code
        self.body = body or {}
        self.text = str(self.body)

    def json(self) -> dict[str, Any]:
        return self.body


class ScriptedStack:
    """Answers the client's POSTs from a script, per path, and its one lookup by name."""

    def __init__(self, answers: dict[str, list[FakeResponse]], rows: list[tuple[Any, ...]]):
        self.answers = answers
        self.rows = rows
        self.sent: list[str] = []

    def api(self, method: str, path: str, json: Any = None) -> FakeResponse:
        self.sent.append(path)
        return self.answers[path.split("/")[-1]].pop(0)

    def sql(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return self.rows


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.scale.burst.time.sleep", lambda _seconds: None)


def test_a_post_answered_502_is_sent_again_and_a_conflict_after_it_means_it_was_created() -> None:
    stack = ScriptedStack(
        {
            "clusters": [FakeResponse(502), FakeResponse(422, {"message": "name taken"})],
            "tokens": [FakeResponse(201, {"token": "secret"})],
            "queues": [FakeResponse(503), FakeResponse(201)],
        },
        rows=[("cluster-1",)],
    )
    client = Client(stack)  # type: ignore[arg-type]

    created = client.create("c1")

    assert (created.cluster_id, created.secret, created.queue_created) == (
        "cluster-1",
        "secret",
        True,
    )
    assert (client.requests, client.retried, client.failed) == (5, 2, 0)


def test_a_conflict_without_a_retry_is_a_failure() -> None:
    stack = ScriptedStack(
        {
            "clusters": [FakeResponse(201, {"id": "cluster-1"})],
            "tokens": [FakeResponse(201, {"token": "secret"})],
            "queues": [FakeResponse(422, {"message": "key taken"})],
        },
        rows=[],
    )
    client = Client(stack)  # type: ignore[arg-type]

    created = client.create("c1")

    assert not created.queue_created
    assert (client.requests, client.retried, client.failed) == (3, 0, 1)
    assert "hosted queue: 422" in client.errors[-1]


def test_faults_fire_once_each_as_the_burst_crosses_their_fraction() -> None:
    fired: list[str] = []
    injector = Injector(None, Trial(1), total=10, rotate=lambda _created: (0.0, ""))  # type: ignore[arg-type]
    injector.schedule = [(0.2, lambda: fired.append("a")), (0.25, lambda: fired.append("b")),
                         (0.9, lambda: fired.append("c"))]  # fmt: skip
    for n in range(1, 6):
        injector.advance(None)  # type: ignore[arg-type]
        if n == 2:
            assert fired == ["a"]
    assert fired == ["a", "b"]
    injector.finish()  # a burst that ended before 90%: what is left fires at the end
    assert fired == ["a", "b", "c"]


def test_registries_are_counted_ready_lost_or_duplicated() -> None:
    clusters = ["ok", "none", "pending", "two", "twice", "interleaved"]
    registries = [
        ("ok", "r-ok", "ready", "lb/ok", "lb/ok"),
        ("none", None, None, None, None),
        ("pending", "r-pending", "provisioning", "", None),
        ("two", "r-two-a", "ready", "lb/two", "lb/two"),
        ("two", "r-two-b", "ready", "lb/two", "lb/two"),
        ("twice", "r-twice", "ready", "lb/twice", "lb/twice"),
        ("interleaved", "r-inter", "ready", "lb/inter", "lb/inter"),
        ("elsewhere", "r-other", "pending", "", None),  # not asked for: not counted
    ]
    events = [
        ("r-ok", "", "pending"), ("r-ok", "pending", "provisioning"),
        ("r-ok", "provisioning", "ready"),
        ("r-pending", "", "pending"), ("r-pending", "pending", "provisioning"),
        ("r-two-a", "provisioning", "ready"), ("r-two-b", "provisioning", "ready"),
        ("r-twice", "provisioning", "ready"), ("r-twice", "ready", "provisioning"),
        ("r-twice", "provisioning", "ready"),
        ("r-inter", "", "pending"), ("r-inter", "", "pending"),
        ("r-inter", "pending", "provisioning"), ("r-inter", "provisioning", "ready"),
    ]  # fmt: skip

    counts = count_registries(clusters, registries, events)

    # ok, two (its first), twice and interleaved are ready and published; none and pending not.
    assert (counts.recovered, counts.lost) == (4, 2)
    # two: an extra registry; twice: ready twice; interleaved: events that do not chain.
    assert counts.duplicated == 3
    assert counts.provisionings == 6  # ok 1, two 1 + 1, twice 2, interleaved 1
    assert any("r-twice" in problem for problem in counts.problems)
    assert any("r-pending: provisioning" in problem for problem in counts.problems)


def test_a_published_url_that_is_not_the_registry_s_is_lost() -> None:
    counts = count_registries(
        ["c"], [("c", "r", "ready", "lb/new", "lb/old")], [("r", "provisioning", "ready")]
    )
    assert (counts.recovered, counts.lost, counts.duplicated) == (0, 1, 0)


def passed_trial(number: int, last_ready: float) -> Trial:
    trial = Trial(number, clusters=200, recovered=200, provisionings=200, requests=610,
                  retried=3, burst_seconds=40.0, last_ready=last_ready, pushed=200, pulled=200,
                  refresh_tokens=30, refresh_accepted=180, refresh_exchanges=180,
                  placements={"backend-1": 134, "backend-2": 66},
                  weights={"backend-1": 2, "backend-2": 1})  # fmt: skip
    beat = Fault("SIGKILL the active beat", at=18.0, progress=90, back=3.5 + number)
    trial.faults = [Fault("SIGKILL api1", at=6.0, progress=30, back=0.05, restarted=3.0), beat]
    return trial


def test_a_trial_passes_only_with_nothing_lost_doubled_refused_or_failed() -> None:
    assert passed_trial(1, 9.0).passed
    for change in [
        {"lost": 1},
        {"duplicated": 1},
        {"provisionings": 201},
        {"pulled": 199},
        {"refresh_accepted": 179},
        {"unauthorized": 1},
        {"failed": 1},
        {"last_ready": -1.0},
        {"problems": ["something"]},
    ]:
        trial = passed_trial(1, 9.0)
        for name, value in change.items():
            setattr(trial, name, value)
        assert not trial.passed, change


def test_the_report_has_a_row_per_trial_the_totals_and_each_fault_s_median_and_max() -> None:
    failed = passed_trial(3, -1.0)
    failed.lost = 2
    report = render_report(
        [passed_trial(1, 9.0), passed_trial(2, 11.0), failed],
        clusters=200,
        topology=["two of everything"],
        steps=["a burst"],
    )

    assert "3 trial(s), 200 clusters each" in report
    assert "- two of everything\n" in report
    assert "1. a burst\n" in report
    rows = [line for line in report.splitlines() if line.startswith("| 1 |")]
    assert rows
    assert "| passed | 200 | 200 | 0 | 0 | 200 | 610 (3 / 0) |" in rows[0]
    assert "backend-1 134 (67%, weight 2), backend-2 66 (33%, weight 1)" in rows[0]
    assert "| 3 | **FAILED** |" in report
    assert "2 of 3 trials passed; 600 clusters, 600 registries ready, 2 lost" in report
    assert "last registry ready 10.00 / 11.00 (1 never) s (median / max)" in report
    assert "| SIGKILL api1 | 6.00 / 6.00 | 0.05 / 0.05 | 3.00 / 3.00 |" in report
    assert "| SIGKILL the active beat | 18.00 / 18.00 | 5.50 / 6.50 | – |" in report


def test_the_load_balancer_s_log_gives_failovers_and_502s_by_method(tmp_path: Path) -> None:
    (tmp_path / "nginx-access.log").write_text(
        '127.0.0.1 "POST /v2/organizations/acme/clusters HTTP/1.1" 201 900 0.050 '
        "upstream=127.0.0.1:1 upstream_status=201\n"
        '127.0.0.1 "POST /v2/organizations/acme/clusters HTTP/1.1" 201 900 0.051 '
        "upstream=127.0.0.1:1, 127.0.0.1:2 upstream_status=502, 201\n"
        '127.0.0.1 "GET /v2/ HTTP/1.1" 401 87 0.001 '
        "upstream=127.0.0.1:3, 127.0.0.1:4 upstream_status=502, 401\n"
        '127.0.0.1 "POST /v2/organizations/acme/clusters/c/queues HTTP/1.1" 502 157 0.2 '
        "upstream=127.0.0.1:1 upstream_status=502\n"
        '127.0.0.1 "PATCH /v2/acme/ns/base/blobs/uploads/u HTTP/1.1" 502 157 0.2 '
        "upstream=127.0.0.1:3 upstream_status=502\n"
        '127.0.0.1 "\\x16\\x03" 400 157 0.000 upstream=- upstream_status=-\n'
    )
    trial = Trial(1)

    read_load_balancer_log(type("Stack", (), {"workdir": tmp_path})(), trial)  # type: ignore[arg-type]

    assert trial.failovers == 2
    assert trial.bad_gateway == {"POST": 1, "PATCH": 1}


def test_placements_must_follow_the_weights_within_the_tolerance() -> None:
    weights = {"default": 200, "backend-2": 100}
    assert placement_problems({"default": 140, "backend-2": 60}, weights) == []  # 70%: 3 off
    assert placement_problems({"default": 120, "backend-2": 80}, weights) == []  # 60%: 7 off
    assert placement_problems({"default": 160, "backend-2": 40}, weights) == [
        "default: 80% of the registries, 67% of the weight",
        "backend-2: 20% of the registries, 33% of the weight",
    ]
    assert placement_problems({"default": 200}, weights)[-1] == (
        "backend-2: 0% of the registries, 33% of the weight"
    )
    assert placement_problems({"default": 1, "elsewhere": 1}, {"default": 1}) == [
        "1 registries on elsewhere, which has no weight",
        "default: 50% of the registries, 100% of the weight",
    ]
    assert placement_problems({}, weights) == ["no placements"]
