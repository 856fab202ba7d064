"""The whole path with real processes: a Celery worker on the configured broker (Redis in CI),
a Distribution registry, and the API over HTTP.
"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
import requests
from django.core.management import CommandError, call_command

from clusters import services
from clusters.models import AgentEnvironmentVariable, Cluster
from registries.conditions import error_detail
from registries.demo_image import write_oci_layout
from registries.models import Registry, State
from registries.services import registry_retry, registry_usage_scan
from registries.tokens import Principal, Scope, token_issue
from tests.support.processes import RegistryProcess, closed_url, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def cluster_with_hosted_queue(name: str, key: str) -> tuple[Cluster, str]:
    """A cluster of organization ``acme`` with an agent token (returned: its secret), then a
    hosted queue ``key``, created through the services as every entry point does."""
    organization = services.organization_create(slug="acme", name="Acme")
    cluster = services.cluster_create(organization=organization, name=name)
    _, secret = services.agent_token_create(cluster=cluster, description="agents")
    services.queue_create(cluster=cluster, key=key, instance_shape="LINUX_AMD64_2X4")
    return cluster, secret


def registry_in_state(cluster_id: object, *states: str) -> Registry | None:
    return Registry.objects.filter(cluster_id=cluster_id, state__in=states).first()


def test_a_hosted_queue_gets_a_ready_registry_whose_url_jobs_receive(
    start_worker, registry_process: RegistryProcess, live_server, job_environment
) -> None:
    start_worker(REGISTRY_URL=registry_process.url, REGISTRY_PUBLIC_HOST=registry_process.host)

    cluster, secret = cluster_with_hosted_queue("Open Source", "linux-small")

    registry = wait_until(
        lambda: registry_in_state(cluster.pk, State.READY, State.FAILED),
        timeout=30,
        what="the registry to be provisioned by the worker",
    )
    assert registry.state == State.READY, registry.last_error
    url = f"{registry_process.host}/{registry.namespace}"
    assert registry.url == url

    assert job_environment(secret, "linux-small")["BUILDKITE_HOSTED_REGISTRY_URL"] == url

    host = url.split("/", 1)[0]
    v2 = requests.get(f"http://{host}/v2/", timeout=5)
    assert v2.status_code == 401  # it sends clients to our token endpoint
    assert v2.headers["WWW-Authenticate"] == (
        f'Bearer realm="{live_server.url}/registry/token",service="hosted-registry"'
    )


def test_a_deleted_clusters_registry_is_swept_by_the_worker(
    start_worker, registry_process: RegistryProcess, live_server, skopeo, workdir: Path
) -> None:
    start_worker(REGISTRY_URL=registry_process.url, REGISTRY_PUBLIC_HOST=registry_process.host)
    cluster, secret = cluster_with_hosted_queue("Short-lived", "linux")
    registry = wait_until(
        lambda: registry_in_state(cluster.pk, State.READY), timeout=30, what="a ready registry"
    )
    write_oci_layout(workdir / "image", "short-lived")
    pushed = skopeo.push(workdir / "image", f"{registry.url}/base:latest", secret)
    assert pushed.returncode == 0, pushed.stderr

    services.cluster_delete(cluster=cluster)

    sweep = wait_until(
        lambda: registry.events.filter(message__startswith="deleted ").first(),
        timeout=30,
        what="the worker to sweep the registry's namespace",
    )
    assert (sweep.from_state, sweep.to_state) == (State.DEPROVISIONING, State.DEPROVISIONING)
    assert sweep.message.startswith(
        f"deleted 1 manifest(s) from {registry.namespace}; sweeping again after "
    )
    token = token_issue(
        Principal.control_plane(registry.namespace),
        [Scope("repository", f"{registry.namespace}/base", ("pull",))],
    ).token
    manifest = requests.head(
        f"{registry_process.url}/v2/{registry.namespace}/base/manifests/latest",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert manifest.status_code == 404


def test_an_unreachable_registry_is_retried_by_the_worker_then_failed_then_retried_to_ready(
    start_worker, workdir: Path
) -> None:
    port = free_port()  # nothing listens here until the registry is started below
    worker = start_worker(
        REGISTRY_URL=f"http://127.0.0.1:{port}",
        REGISTRY_PUBLIC_HOST=f"127.0.0.1:{port}",
        REGISTRY_PROVISION_MAX_ATTEMPTS="3",
        REGISTRY_PROVISION_BACKOFF_SECONDS="0.2",
        REGISTRY_PROVISION_BACKOFF_MAX_SECONDS="0.5",
    )
    cluster, _ = cluster_with_hosted_queue("Flaky", "linux")

    registry = wait_until(
        lambda: registry_in_state(cluster.pk, State.READY, State.FAILED),
        timeout=30,
        what="the worker to give up",
    )
    assert registry.state == State.FAILED
    assert registry.attempts == 3
    assert registry.last_error == "The registry did not answer (connection refused)"
    assert "Connection refused" in error_detail(registry)
    assert [e.to_state for e in registry.events.all()] == [
        State.PENDING,
        *[State.PROVISIONING, State.PENDING] * 2,
        State.PROVISIONING,
        State.FAILED,
    ]
    assert worker.log().count("registry.attempt.retrying") == 2
    assert not AgentEnvironmentVariable.objects.filter(cluster=cluster).exists()

    registry_process = RegistryProcess(workdir, port=port).start()
    try:
        registry_retry(registry=registry)
        registry = wait_until(
            lambda: registry_in_state(cluster.pk, State.READY),
            timeout=30,
            what="the retried registry to become ready",
        )
    finally:
        registry_process.stop()
    assert registry.url == f"127.0.0.1:{port}/{registry.namespace}"
    assert AgentEnvironmentVariable.objects.get(cluster=cluster).value == registry.url


@pytest.mark.parametrize("builder", ["buildah", "skopeo"])
def test_the_demo_pushes_and_pulls_an_image_through_token_authentication(
    start_worker,
    registry_process: RegistryProcess,
    registry_settings,
    live_server,
    container_tools,
    builder: str,
) -> None:
    start_worker(REGISTRY_URL=registry_process.url, REGISTRY_PUBLIC_HOST=registry_process.host)
    out = StringIO()

    call_command("demo", api_url=live_server.url, timeout=30, builder=builder, stdout=out)

    registry = Registry.objects.get()
    output = out.getvalue()
    host, reference = re.escape(registry_process.host), re.escape(f"{registry.url}/base:latest")
    tags_url = (
        f"{live_server.url}/v2/organizations/demo/clusters/{registry.cluster_id}"
        "/registry/repositories/base/tags"
    )
    audit_url = f"{live_server.url}/v2/organizations/demo/audit_events"
    registry_url = (
        f"{live_server.url}/v2/organizations/demo/clusters/{registry.cluster_id}/registry"
    )
    assert registry.url.startswith(f"{registry_process.host}/demo/")
    assert f"export BUILDKITE_HOSTED_REGISTRY_URL=$'{registry.url}'\n" in output
    assert "export BUILDKITE_COMPUTE_TYPE=$'hosted'\n" in output
    timed = r" \(\d+\.\ds\)"
    previous = re.escape(f"{registry.url}/base:build-1")
    if builder == "buildah":
        build = [
            rf"✔ built {reference} from \S+/context/Dockerfile with buildah{timed}",
            rf"✔ pushed {reference}{timed}",
        ]
    else:
        build = [
            r"✔ wrote an OCI image layout for skopeo: sha256:[0-9a-f]{64}",
            rf"✔ pushed {reference} with skopeo{timed}",
        ]
    expected = [
        rf"✔ GET http://{host}/v2/: 401 with our token challenge, 200 with our token",
        rf"✔ logged in to {host} with the agent token{timed}",
        rf"✔ pushed an earlier build, {previous}{timed}",
        *build,
        rf"✔ pulled it back into \S+/pulled{timed}",
        rf"✔ inspected it{timed}",
        "",
        rf"{reference} is sha256:[0-9a-f]{{64}}: pushed and pulled with the agent token\.",
        "",
        r"Its tag and size, and the audit log of what the demo did, through the REST API "
        r"\(the README's usage example\):",
        r"  TOKEN=\$\(DJANGO_DEBUG=true (CONTROLPLANE_VAR_DIR=\S+ )?"
        r"\.venv/bin/python manage\.py create_api_token demo you\)",
        rf'  curl -s -H "Authorization: Bearer \$TOKEN" {re.escape(tags_url)}',
        rf'  curl -s -H "Authorization: Bearer \$TOKEN" {re.escape(audit_url)}',
        "",
        r"Keep the newest tag of each repository \(base:build-1 goes\), then collect the garbage "
        r"\(the README's retention example\):",
        rf"  REGISTRY={re.escape(registry_url)}",
        r"""  curl -s -X PUT -H "Authorization: Bearer \$TOKEN" """
        r"""-H 'Content-Type: application/json' -d '\{"keep_newest": 1, "recent_hours": 0\}' """
        r"\$REGISTRY/retention-policy",
        r'  curl -s -X POST -H "Authorization: Bearer \$TOKEN" \$REGISTRY/retention-policy/dry-run',
        r'  curl -s -X POST -H "Authorization: Bearer \$TOKEN" \$REGISTRY/cleanup',
        r"  make gc( PORT=\d+)?( REGISTRY_PORT=\d+)?( CONTROLPLANE_VAR_DIR=\S+)?",
    ]
    steps = output.split(f"\nBUILDKITE_HOSTED_REGISTRY_URL={registry.url}\n", 1)[1]
    assert len(steps.splitlines()) == len(expected), steps
    for line, pattern in zip(steps.splitlines(), expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    # The usage example, as the README runs it. The session's registry sends no notifications
    # (make run's does: tests/registries/test_notifications_live.py), so the usage scan finds it.
    assert registry_usage_scan(registry_id=registry.pk).ok
    token = StringIO()
    call_command("create_api_token", "demo", "you", stdout=token, stderr=StringIO())
    secret = token.getvalue().strip()
    listed = requests.get(tags_url, headers={"Authorization": f"Bearer {secret}"}, timeout=5)
    assert listed.status_code == 200, listed.text
    tags = {tag["tag"]: tag for tag in listed.json()}
    assert sorted(tags) == ["build-1", "latest"], tags
    assert tags["latest"]["bytes"] > 0
    assert tags["latest"]["digest"] != tags["build-1"]["digest"]
    # The demo's writes, in the audit log (the README's second curl), attributed to the command.
    audited = requests.get(audit_url, headers={"Authorization": f"Bearer {secret}"}, timeout=5)
    assert audited.status_code == 200, audited.text
    types = [event["type"] for event in audited.json()["items"]]
    for expected_type in ("CLUSTER_CREATED", "CLUSTER_TOKEN_CREATED", "CLUSTER_QUEUE_CREATED"):
        assert expected_type in types, types
    # What was pushed is in the registry, under the cluster's namespace, for its agents only.
    manifest = requests.get(
        f"{registry_process.url}/v2/{registry.namespace}/base/manifests/latest", timeout=5
    )
    assert manifest.status_code == 401


def test_the_demo_says_what_to_do_when_no_worker_runs(live_server, broker_queue) -> None:
    with pytest.raises(CommandError) as excinfo:
        call_command("demo", api_url=live_server.url, timeout=1, stdout=StringIO())
    assert str(excinfo.value) == (
        "The registry is still pending after 1s. No worker has taken the provisioning task: "
        "is `make run` running? It starts the Celery worker."
    )


def test_the_demo_says_what_to_do_when_the_api_is_down() -> None:
    url = closed_url()
    with pytest.raises(CommandError) as excinfo:
        call_command("demo", api_url=url, stdout=StringIO())
    assert str(excinfo.value).startswith(f"The API at {url} does not answer (")
    assert str(excinfo.value).endswith(
        "Start the service with `make run` in another terminal, or pass --api-url."
    )
    assert Registry.objects.count() == 0
