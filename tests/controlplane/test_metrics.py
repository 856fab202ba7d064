"""/metrics: the bearer token, the text format, and each metric after the event that drives it.

Metrics add up across processes and test runs (multiprocess mode, files in
PROMETHEUS_MULTIPROC_DIR), so each test compares a scrape after the event with one before it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from clusters import services
from clusters.models import Queue
from controlplane import metrics
from registries.drivers import RegistryUnavailable
from registries.models import Registry, State
from registries.reconciler import registries_reconcile
from registries.services import registry_canary, registry_provision
from registries.tasks import reconcile_registries
from tests.clusters.factories import ClusterAgentTokenFactory, ClusterFactory
from tests.clusters.webhooks.conftest import platform  # noqa: F401 - a fixture
from tests.clusters.webhooks.helpers import deliver, payload
from tests.registries.factories import RegistryFactory

TOKEN = "metrics-test-token"

Scrape = Callable[[], dict[tuple[str, tuple[tuple[str, str], ...]], float]]


@pytest.fixture
def scrape(settings) -> Scrape:
    """``scrape()[(sample name, sorted labels)]``: /metrics through the test client."""
    settings.METRICS_TOKEN = TOKEN

    def read() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content
        return samples(response.content.decode())

    return read


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


class FakeDriver:
    """A registry that answers as told."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def provision(self, *, namespace: str) -> str:
        if self.error:
            raise self.error
        return f"registry.example/{namespace}"

    def canary(self, *, namespace: str) -> str:
        if self.error:
            raise self.error
        return "pushed, read back and deleted"


# --- The endpoint -----------------------------------------------------------------------------


def test_without_a_configured_token_metrics_is_404(client, settings) -> None:
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", f"Token {TOKEN}", f"Bearer {TOKEN}x", "Bearer é"]
)
def test_without_the_token_metrics_is_401(client, settings, header) -> None:
    settings.METRICS_TOKEN = TOKEN
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}

    response = client.get("/metrics", **extra)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"controlplane_" not in response.content


@pytest.mark.django_db
def test_with_the_token_metrics_is_prometheus_text(client, settings) -> None:
    settings.METRICS_TOKEN = TOKEN
    settings.ALLOWED_HOSTS = ["api.example.com"]  # scraped by the pod's address

    response = client.get(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", HTTP_HOST="10.1.2.3:8000"
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"] == "no-store"
    assert "# TYPE controlplane_registries gauge" in response.content.decode()


@pytest.mark.django_db
def test_registries_by_state_are_read_at_scrape_time(scrape) -> None:
    RegistryFactory(state=State.READY)
    RegistryFactory(state=State.READY)
    RegistryFactory(state=State.FAILED)

    found = scrape()

    assert found[("controlplane_registries", (("state", "ready"),))] == 2
    assert found[("controlplane_registries", (("state", "failed"),))] == 1
    assert found[("controlplane_registries", (("state", "pending"),))] == 0


def test_a_failing_reader_leaves_its_gauge_out_not_the_answer(scrape, monkeypatch) -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("no database")

    monkeypatch.setattr(metrics, "_collectors", [])
    metrics.register_reader(metrics.GaugeReader("controlplane_broken", "x", "state", broken))

    found = scrape()

    assert not any(name == "controlplane_broken" for name, _ in found)


# --- Each metric after its event --------------------------------------------------------------


@pytest.mark.django_db
def test_provisioning_counts_attempts_failures_and_time_to_ready(scrape, monkeypatch) -> None:
    registry = RegistryFactory()
    Registry.objects.filter(pk=registry.pk).update(created_at=timezone.now() - timedelta(seconds=7))
    driver = FakeDriver(RegistryUnavailable("connection refused"))
    monkeypatch.setattr(
        "registries.services.provisioning.get_driver", lambda name, backend=None: driver
    )
    before = scrape()

    registry_provision(registry_id=registry.pk)  # fails: the registry did not answer
    driver.error = None
    registry_provision(registry_id=registry.pk)  # ready

    after = scrape()
    attempts = "controlplane_registry_attempts_total"
    failures = "controlplane_registry_attempt_failures_total"
    ready = "controlplane_registry_time_to_ready_seconds"
    assert delta(before, after, attempts, operation="provision") == 2
    assert delta(before, after, failures, operation="provision", reason="unavailable") == 1
    assert delta(before, after, f"{ready}_count", driver="distribution") == 1
    assert delta(before, after, f"{ready}_sum", driver="distribution") >= 7
    assert delta(before, after, f"{ready}_bucket", driver="distribution", le="5.0") == 0
    assert delta(before, after, f"{ready}_bucket", driver="distribution", le="10.0") == 1


@pytest.mark.django_db
def test_a_failure_that_is_not_the_registrys_is_internal(scrape, monkeypatch) -> None:
    registry = RegistryFactory()
    monkeypatch.setattr(
        "registries.services.provisioning.get_driver",
        lambda name, backend=None: FakeDriver(ValueError("bug")),
    )
    before = scrape()

    registry_provision(registry_id=registry.pk)

    after = scrape()
    failures = "controlplane_registry_attempt_failures_total"
    assert delta(before, after, failures, operation="provision", reason="internal") == 1


@pytest.mark.django_db
def test_the_token_endpoint_counts_outcomes_with_latency(client, scrape, settings) -> None:
    before = scrape()

    anonymous = client.get("/registry/token", {"service": settings.REGISTRY_TOKEN_SERVICE})
    refused = client.get(
        "/registry/token",
        {"service": settings.REGISTRY_TOKEN_SERVICE},
        HTTP_AUTHORIZATION="Basic dXNlcjp3cm9uZw==",  # user:wrong
    )

    after = scrape()
    assert (anonymous.status_code, refused.status_code) == (200, 401)
    requests_ = "controlplane_registry_token_requests_total"
    assert delta(before, after, requests_, outcome="ok") == 1
    assert delta(before, after, requests_, outcome="unauthorized") == 1
    assert delta(before, after, "controlplane_registry_token_seconds_count", outcome="ok") == 1
    assert delta(before, after, "controlplane_registry_token_seconds_sum", outcome="ok") > 0


@pytest.mark.django_db
def test_agent_environment_requests_are_counted_by_outcome(client, scrape) -> None:
    token = ClusterAgentTokenFactory(secret="bkct_" + "a" * 43)
    Queue.objects.create(cluster=token.cluster, key="linux")
    before = scrape()

    ok = client.get(
        "/v3/agent/environment?queue=linux", HTTP_AUTHORIZATION="Token bkct_" + "a" * 43
    )
    unauthorized = client.get("/v3/agent/environment?queue=linux")

    after = scrape()
    assert (ok.status_code, unauthorized.status_code) == (200, 401)
    name = "controlplane_agent_environment_requests_total"
    assert delta(before, after, name, outcome="ok") == 1
    assert delta(before, after, name, outcome="unauthorized") == 1


@pytest.mark.django_db
def test_webhook_deliveries_are_counted_by_outcome(scrape, platform) -> None:  # noqa: F811
    before = scrape()

    applied = deliver(payload(), secret=platform.secret, delivery="d-1")
    repeated = deliver(payload(), secret=platform.secret, delivery="d-1")
    ping = deliver({"event": "ping"}, secret=platform.secret, delivery="d-2")
    refused = deliver(payload(), secret="wrong", delivery="d-3")

    after = scrape()
    assert [r.status_code for r in (applied, repeated, ping, refused)] == [200, 200, 200, 401]
    name = "controlplane_webhook_deliveries_total"
    for outcome in ("applied", "repeated", "ping", "refused"):
        assert delta(before, after, name, outcome=outcome) == 1, outcome


@pytest.mark.django_db
def test_canaries_count_results_with_latency(scrape, monkeypatch) -> None:
    registry = RegistryFactory(state=State.READY)
    driver = FakeDriver()
    monkeypatch.setattr("registries.services.health.get_driver", lambda name, backend=None: driver)
    before = scrape()

    registry_canary(registry_id=registry.pk)
    driver.error = RegistryUnavailable("connection refused")
    registry_canary(registry_id=registry.pk)

    after = scrape()
    runs, seconds = "controlplane_canary_runs_total", "controlplane_canary_seconds_count"
    assert delta(before, after, runs, backend="default", result="passed") == 1
    assert delta(before, after, runs, backend="default", result="failed") == 1
    assert delta(before, after, seconds, backend="default", result="passed") == 1


@pytest.mark.django_db
def test_reconcile_passes_are_timed_and_repairs_counted(
    scrape, django_capture_on_commit_callbacks, broker_queue
) -> None:
    cluster = ClusterFactory()
    # A hosted queue written around the services: no signal, no registry.
    Queue.objects.create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    before = scrape()

    with django_capture_on_commit_callbacks(execute=True):
        registries_reconcile()

    after = scrape()
    assert delta(before, after, "controlplane_reconcile_pass_seconds_count", outcome="ran") == 1
    assert delta(before, after, "controlplane_reconcile_repairs_total", repair="created") == 1


@pytest.mark.django_db
def test_celery_task_outcomes_are_counted(scrape, monkeypatch) -> None:
    before = scrape()

    reconcile_registries.apply()
    monkeypatch.setattr(
        "registries.tasks.registries_reconcile", lambda: (_ for _ in ()).throw(RuntimeError())
    )
    reconcile_registries.apply()

    after = scrape()
    tasks = "controlplane_celery_tasks_total"
    assert delta(before, after, tasks, task="registries.reconcile", outcome="succeeded") == 1
    assert delta(before, after, tasks, task="registries.reconcile", outcome="failed") == 1
    seconds = "controlplane_celery_task_seconds_count"
    assert delta(before, after, seconds, task="registries.reconcile") == 2


@pytest.mark.django_db
def test_hot_paths_record_without_queries(client, django_assert_num_queries) -> None:
    """Recording is a memory write: the token endpoint's anonymous answer makes no query."""
    with django_assert_num_queries(0):
        assert client.get("/registry/token", {"service": "hosted-registry"}).status_code == 200


def test_http_outcomes_are_bounded() -> None:
    assert metrics.http_outcome(200) == "ok"
    assert metrics.http_outcome(204) == "ok"
    assert metrics.http_outcome(422) == "invalid"
    assert metrics.http_outcome(418) == "error"
    assert metrics.http_outcome(500) == "error"


@pytest.mark.django_db
def test_first_hosted_queue_to_ready_through_the_services(scrape, monkeypatch, broker_queue):
    """The histogram starts at the first hosted queue: the registry is created with it."""
    monkeypatch.setattr(
        "registries.services.provisioning.get_driver", lambda name, backend=None: FakeDriver()
    )
    organization = services.organization_create(slug="metrics", name="Metrics")
    cluster = services.cluster_create(organization=organization, name="c")
    before = scrape()

    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    registry_provision(registry_id=Registry.objects.get(cluster=cluster).pk)

    after = scrape()
    name = "controlplane_registry_time_to_ready_seconds_count"
    assert delta(before, after, name, driver="distribution") == 1
