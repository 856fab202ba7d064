"""Metrics across processes (multiprocess mode): what several processes record, one scrape adds
up; and a provisioning done by a real Celery worker shows in the web process's /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.test import Client

from clusters import services
from registries.models import Registry, State
from tests.controlplane.test_metrics import TOKEN, delta, samples
from tests.support.processes import ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

RECORD = """
import django, sys
django.setup()
from controlplane import metrics
for _ in range(int(sys.argv[1])):
    metrics.TOKEN_REQUESTS.labels("ok").inc()
metrics.TOKEN_SECONDS.labels("ok").observe(float(sys.argv[1]))
"""


def test_two_processes_writing_one_scrape_sees_both(settings, tmp_path: Path, monkeypatch) -> None:
    settings.METRICS_TOKEN = TOKEN
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings_test",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    for count in ("3", "4"):
        subprocess.run([sys.executable, "-c", RECORD, count], cwd=ROOT, env=environment, check=True)
    assert len(list(tmp_path.glob("*.db"))) == 4  # a counter and a histogram file each
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    found = samples(response.content.decode())
    ok = (("outcome", "ok"),)
    assert found[("controlplane_registry_token_requests_total", ok)] == 7
    assert found[("controlplane_registry_token_seconds_count", ok)] == 2
    assert found[("controlplane_registry_token_seconds_sum", ok)] == 7


def test_a_process_that_records_nothing_leaves_no_file(tmp_path: Path) -> None:
    """``manage.py probe`` runs every few seconds: it must not add files to the folder."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings_test",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PROBE_HEARTBEAT_DIR": str(tmp_path),
    }
    subprocess.run(
        [sys.executable, "manage.py", "probe", "beat"], cwd=ROOT, env=environment, check=False
    )
    assert list(tmp_path.glob("*.db")) == []


def test_metrics_show_a_provisioning_done_by_a_worker(
    settings, live_server, registry_settings, start_worker, transactional_db
) -> None:
    settings.METRICS_TOKEN = TOKEN

    def scrape() -> dict:
        response = requests.get(
            f"{live_server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        assert response.status_code == 200
        return samples(response.text)

    start_worker(REGISTRY_URL=registry_settings.REGISTRY_URL)
    before = scrape()
    organization = services.organization_create(slug="scraped", name="Scraped")
    cluster = services.cluster_create(organization=organization, name="c")
    services.queue_create(cluster=cluster, key="linux", instance_shape="LINUX_AMD64_2X4")
    registry = Registry.objects.get(cluster=cluster)
    wait_until(
        lambda: Registry.objects.get(pk=registry.pk).state == State.READY,
        timeout=30,
        what="the worker to provision the registry",
    )
    # The worker counts the task after it returns.
    wait_until(
        lambda: (
            delta(
                before,
                scrape(),
                "controlplane_celery_tasks_total",
                task="registries.provision",
                outcome="succeeded",
            )
            >= 1
        ),
        timeout=10,
        what="the worker's task outcome in /metrics",
    )

    after = scrape()
    assert delta(before, after, "controlplane_registry_attempts_total", operation="provision") >= 1
    assert (
        delta(
            before,
            after,
            "controlplane_registry_time_to_ready_seconds_count",
            driver="distribution",
        )
        >= 1
    )
    assert after[("controlplane_registries", (("state", "ready"),))] >= 1


def test_a_worker_serves_its_metrics_on_its_own_port(settings, start_worker) -> None:
    """A worker in a pod of its own: METRICS_PORT, with the same bearer token."""
    port = free_port()
    start_worker(METRICS_PORT=str(port), METRICS_TOKEN=TOKEN)
    url = f"http://127.0.0.1:{port}/metrics"

    def scraped() -> requests.Response | None:
        try:
            return requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        except requests.ConnectionError:
            return None

    response = wait_until(scraped, timeout=10, what="the worker's metrics port")

    assert response is not None
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "controlplane_registries" not in response.text  # the web's /metrics reads those
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url.replace("/metrics", "/"), timeout=5).status_code == 404
