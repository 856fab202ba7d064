"""The admin creates through the same services as every other entry point."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client

from clusters.models import ApiToken, Cluster, ClusterAgentToken, Organization, Queue
from clusters.selectors import agent_token_authenticate, api_token_authenticate
from registries.models import Registry, State
from tests.clusters.factories import (
    ClusterAgentTokenFactory,
    ClusterFactory,
    OrganizationFactory,
)
from tests.registries.factories import RegistryFactory

pytestmark = pytest.mark.django_db


def test_every_model_of_the_apps_is_in_the_admin() -> None:
    for app_label in ("clusters", "registries"):
        for model in apps.get_app_config(app_label).get_models():
            assert admin.site.is_registered(model), model


def test_adding_a_hosted_queue_in_the_admin_owes_the_cluster_a_registry(
    operator: Client, django_capture_on_commit_callbacks, broker_queue
) -> None:
    cluster = ClusterFactory()
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(
            "/admin/clusters/queue/add/",
            {"cluster": cluster.pk, "key": "linux-small", "instance_shape": "LINUX_AMD64_2X4",
             "retry_agent_affinity": "prefer-warmest", "description": ""},
        )  # fmt: skip
    assert response.status_code == 302
    queue = Queue.objects.get()
    assert response["Location"] == "/admin/clusters/queue/"
    assert (queue.key, queue.instance_shape) == ("linux-small", "LINUX_AMD64_2X4")
    registry = Registry.objects.get(cluster=cluster)
    assert registry.state == State.PENDING
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]


def test_an_invalid_queue_in_the_admin_is_refused_and_nothing_is_written(operator: Client) -> None:
    cluster = ClusterFactory()
    response = operator.post(
        "/admin/clusters/queue/add/",
        {"cluster": cluster.pk, "key": "bad key", "instance_shape": "LINUX_AMD64_2X4"},
    )
    assert response.status_code == 200
    assert "Use only letters, digits, hyphens (-) and underscores (_)." in response.text
    assert Queue.objects.count() == 0
    assert Registry.objects.count() == 0


def agent_token_form() -> dict[str, object]:
    return {"cluster": ClusterFactory().pk, "description": "hosted agents", "expires_at_0": "",
            "expires_at_1": ""}  # fmt: skip


def api_token_form() -> dict[str, object]:
    user = User.objects.create_user("sam")
    return {"user": user.pk, "organization": OrganizationFactory().pk, "description": "ci",
            "scopes": ["read_clusters", "write_clusters"]}  # fmt: skip


@pytest.mark.parametrize(
    ("model", "form", "prefix", "authenticate"),
    [
        ("clusteragenttoken", agent_token_form, "bkct_", agent_token_authenticate),
        ("apitoken", api_token_form, "bkua_", api_token_authenticate),
    ],
)
def test_a_token_secret_is_shown_once_on_creation_and_never_again(
    operator: Client, model, form, prefix, authenticate
) -> None:
    response = operator.post(f"/admin/clusters/{model}/add/", form())

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = response.context["secret"]
    token = authenticate(secret)
    assert token is not None
    assert secret.startswith(prefix)
    assert f'<pre id="{response.context["secret_id"]}"' in response.text
    assert secret in response.text
    for url in (f"/admin/clusters/{model}/{token.pk}/change/", f"/admin/clusters/{model}/"):
        page = operator.get(url)
        assert page.status_code == 200
        assert secret not in page.text
        assert token.token_prefix in page.text


def test_an_api_token_gets_the_scopes_ticked_in_the_admin(operator: Client) -> None:
    operator.post("/admin/clusters/apitoken/add/", api_token_form())
    assert ApiToken.objects.get().scopes == ["read_clusters", "write_clusters"]


def test_organizations_and_clusters_added_in_the_admin_go_through_the_services(
    operator: Client,
) -> None:
    response = operator.post("/admin/clusters/organization/add/", {"slug": "acme", "name": "Acme"})
    assert response.status_code == 302
    organization = Organization.objects.get(slug="acme")
    response = operator.post(
        "/admin/clusters/cluster/add/",
        {"organization": organization.pk, "name": "Open Source", "description": "",
         "emoji": ":technologist:", "color": "#FFE0F1"},
    )  # fmt: skip
    assert response.status_code == 302
    cluster = Cluster.objects.get()
    assert (cluster.name, cluster.emoji, cluster.color) == (
        "Open Source",
        ":technologist:",
        "#FFE0F1",
    )


def test_the_default_queue_must_be_in_the_cluster(operator: Client) -> None:
    cluster = ClusterFactory(organization=OrganizationFactory())
    other = Queue.objects.create(cluster=ClusterFactory(), key="elsewhere")
    response = operator.post(
        f"/admin/clusters/cluster/{cluster.pk}/change/",
        {"name": cluster.name, "default_queue": other.pk, "description": "", "emoji": "",
         "color": "", "queues-TOTAL_FORMS": 0, "queues-INITIAL_FORMS": 0,
         "environment-TOTAL_FORMS": 0, "environment-INITIAL_FORMS": 0},
    )  # fmt: skip
    assert response.status_code == 200
    assert "Select a valid choice." in response.text
    cluster.refresh_from_db()
    assert cluster.default_queue is None


def test_registries_are_read_only_but_a_failed_one_can_be_retried(
    operator: Client, django_capture_on_commit_callbacks, broker_queue
) -> None:
    cluster = ClusterFactory()
    registry = RegistryFactory(
        cluster=cluster, namespace="x/y", state=State.FAILED, last_error="boom"
    )
    page = operator.get(f"/admin/registries/registry/{registry.pk}/change/")
    assert page.status_code == 200
    assert 'name="state"' not in page.text  # no editable field
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(
            "/admin/registries/registry/",
            {"action": "retry", "_selected_action": [registry.pk]},
        )
    assert response.status_code == 302
    registry.refresh_from_db()
    assert registry.state == State.PENDING
    assert broker_queue.drain() == [("registries.provision", (str(registry.pk),))]
    assert operator.get("/admin/registries/registry/add/").status_code == 403


def edit_queue(operator: Client, queue: Queue, shape: str) -> object:
    return operator.post(
        f"/admin/clusters/queue/{queue.pk}/change/",
        {
            "description": "edited",
            "instance_shape": shape,
            "retry_agent_affinity": "prefer-warmest",
        },
    )


def test_a_hosted_queue_can_be_resized_in_the_admin(operator: Client) -> None:
    queue = Queue.objects.create(
        cluster=ClusterFactory(), key="q", instance_shape="LINUX_AMD64_2X4"
    )
    page = operator.get(f"/admin/clusters/queue/{queue.pk}/change/")
    assert 'value="LINUX_AMD64_8X32"' in page.text
    assert 'value="LINUX_ARM64_2X4"' not in page.text
    assert 'value="MACOS_ARM64_M4_6X28"' not in page.text
    assert "(self-hosted)" not in page.text

    response = edit_queue(operator, queue, "LINUX_AMD64_8X32")

    assert response.status_code == 302
    queue.refresh_from_db()
    assert (queue.instance_shape, queue.description) == ("LINUX_AMD64_8X32", "edited")


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ("", "MACOS_ARM64_M4_6X28", "Select a valid choice."),
        ("LINUX_AMD64_2X4", "", "A queue cannot change between hosted and self-hosted."),
        ("LINUX_AMD64_2X4", "LINUX_ARM64_2X4", "Select a valid choice."),
    ],
)
def test_a_queue_never_converts_in_the_admin(
    operator: Client, before: str, after: str, message: str
) -> None:
    queue = Queue.objects.create(cluster=ClusterFactory(), key="q", instance_shape=before)
    response = edit_queue(operator, queue, after)
    assert response.status_code == 200
    assert message in response.text
    queue.refresh_from_db()
    assert (queue.instance_shape, queue.description) == (before, "")
    assert Registry.objects.count() == 0


def test_the_admin_deletes_nothing_that_needs_a_service_to_delete(operator: Client) -> None:
    queue = Queue.objects.create(cluster=ClusterFactory(), key="q")
    token = ClusterAgentTokenFactory(cluster=queue.cluster)
    for url in (
        f"/admin/clusters/queue/{queue.pk}/delete/",
        f"/admin/clusters/cluster/{queue.cluster.pk}/delete/",
        f"/admin/clusters/organization/{queue.cluster.organization.pk}/delete/",
        f"/admin/clusters/clusteragenttoken/{token.pk}/delete/",
    ):
        assert operator.post(url, {"post": "yes"}).status_code == 403
    assert Queue.objects.count() == 1
    assert ClusterAgentToken.objects.count() == 1
