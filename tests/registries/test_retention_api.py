"""Retention policies in the REST API (``registries/api/retention.py``): the organization's
default and a cluster's override read, written and deleted with their audit rows; bad input
refused with nothing written; the dry run; cleanup and its runs; another organization's cluster
is 404. (Deleting against a real registry: test_retention_registry.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from clusters.audit import AuditEvent
from clusters.models import ApiScope
from registries.inventory import RegistryNotification, Tag
from registries.models import Registry, State
from registries.retention import RetentionPolicy, RetentionRun
from tests.api import conftest as api_fixtures
from tests.api.test_registry_api import make_registry
from tests.registries.factories import inventory_push
from tests.support.query_counts import expected_queries

pytestmark = pytest.mark.django_db

# The REST API's clients and organization acme's cluster.
make_api, api, other_api = api_fixtures.make_api, api_fixtures.api, api_fixtures.other_api
cluster = api_fixtures.cluster

ORG = "/registry-retention-policy"
DEFAULTS = {
    "enabled": True,
    "keep_newest": None,
    "delete_older_than_days": None,
    "unless_pulled_within_days": None,
    "delete_untagged": False,
    "protected_tags": ["latest", "v*", "release-*"],
    "recent_hours": 24,
}
NONE = {"set_by": None, **dict.fromkeys(DEFAULTS), "updated_at": None}


def cluster_policy(cluster) -> str:
    return f"/clusters/{cluster.pk}/registry/retention-policy"


def shown(response) -> dict:
    body = response.json()
    assert body.pop("updated_at") is not None
    return body


def push(registry: Registry, tag: str, days: float, digest: str = "") -> None:
    inventory_push(
        registry, f"{registry.namespace}/base", tag, digest or f"sha256:{tag}",
        {f"sha256:l-{tag}": 1000}, at=timezone.now() - timedelta(days=days),
    )  # fmt: skip


def test_the_organizations_default_is_read_written_and_deleted(api) -> None:
    empty = api.get(ORG)
    put = api.put(ORG, {"keep_newest": 5, "protected_tags": ["stable"]})
    with expected_queries("registries-api:registry-retention-policy"):
        read = api.get(ORG)
    deleted = api.delete(ORG)
    again = api.delete(ORG)

    assert empty.status_code == 200
    assert empty.json() == NONE
    assert put.status_code == 200
    assert read.json() == put.json()
    assert shown(put) == {
        "set_by": "organization", **DEFAULTS, "keep_newest": 5, "protected_tags": ["stable"]
    }  # fmt: skip
    assert (deleted.status_code, again.status_code) == (204, 204)
    assert api.get(ORG).json() == NONE
    events = AuditEvent.objects.filter(type__contains="RETENTION_POLICY").order_by("occurred_at")
    assert [(e.type, e.subject_type, e.subject_name) for e in events] == [
        ("ORGANIZATION_REGISTRY_RETENTION_POLICY_UPDATED", "ORGANIZATION", "acme"),
        ("ORGANIZATION_REGISTRY_RETENTION_POLICY_UPDATED", "ORGANIZATION", "acme"),
    ]
    assert events[0].data["keep_newest"] == [None, 5]
    assert events[1].data["deleted"] is True


def test_a_clusters_override_replaces_the_default_and_says_where_it_comes_from(
    api, cluster
) -> None:
    registry = make_registry(cluster)
    path = cluster_policy(cluster)
    assert api.get(path).json() == NONE

    api.put(ORG, {"keep_newest": 5})
    with expected_queries("registries-api:registry-cluster-retention-policy"):
        inherited = api.get(path)
    put = api.put(path, {"delete_older_than_days": 30, "recent_hours": 2})
    deleted = api.delete(path)

    assert shown(inherited) == {"set_by": "organization", **DEFAULTS, "keep_newest": 5}
    assert put.status_code == 200
    assert shown(put) == {
        "set_by": "cluster", **DEFAULTS, "delete_older_than_days": 30, "recent_hours": 2
    }  # fmt: skip
    assert deleted.status_code == 204
    assert api.get(path).json()["set_by"] == "organization"
    event = AuditEvent.objects.filter(type="REGISTRY_RETENTION_POLICY_UPDATED").earliest(
        "occurred_at"
    )
    assert (event.subject_type, event.subject_uuid, event.subject_name) == (
        "REGISTRY", str(registry.pk), registry.namespace,
    )  # fmt: skip
    assert event.data["cluster"] == str(cluster.pk)
    assert event.data["delete_older_than_days"] == [None, 30]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"keep_newest": -1}, "keep_newest", "Must be a whole number from 0 to 2147483647"),
        ({"keep_newest": "5"}, "keep_newest", "Must be a whole number"),
        ({"delete_older_than_days": 1.5}, "delete_older_than_days", "Must be a whole number"),
        ({"delete_older_than_days": 36501}, "delete_older_than_days", "from 0 to 36500"),
        ({"recent_hours": None}, "recent_hours", "Must be a whole number from 0 to 876000."),
        ({"enabled": "yes"}, "enabled", "Must be true or false."),
        ({"protected_tags": "latest"}, "protected_tags", "Must be a list of at most 50"),
        ({"protected_tags": ["v*", ""]}, "protected_tags", "Each pattern must be a non-empty"),
        ({"protected_tags": [" "]}, "protected_tags", "Each pattern must be a non-empty"),
        ({"protected_tags": [f"t{i}" for i in range(51)]}, "protected_tags", "at most 50"),
        ({"protected_tags": [1]}, "protected_tags", "Each pattern must be a non-empty"),
        ({"keep_last": 5}, "keep_last", "Unknown field; the fields are enabled, keep_newest"),
        (
            {"unless_pulled_within_days": 7},
            "unless_pulled_within_days",
            "Only applies with delete_older_than_days; set it too.",
        ),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(api, cluster, body, field, message) -> None:
    for path in (ORG, cluster_policy(cluster)):
        response = api.put(path, body)

        assert response.status_code == 422, response.content
        errors = response.json()["errors"]
        assert [e["field"] for e in errors] == [field]
        assert message in errors[0]["message"], errors
    assert not RetentionPolicy.objects.exists()
    assert not AuditEvent.objects.filter(type__contains="RETENTION").exists()


def test_a_body_that_is_not_an_object_is_refused(api) -> None:
    response = api.put(ORG, ["keep_newest"])

    assert response.status_code == 400
    assert response.json() == {"message": "The body must be a JSON object of the policy's rules."}
    assert not RetentionPolicy.objects.exists()


def test_the_dry_run_lists_deletions_and_kept_tags_and_deletes_nothing(api, cluster) -> None:
    registry = make_registry(cluster)
    push(registry, "old", 40)
    push(registry, "v1", 40)
    push(registry, "new", 1)
    path = f"{cluster_policy(cluster)}/dry-run"
    api.put(cluster_policy(cluster), {"delete_older_than_days": 30})

    saved = api.post(path)
    tried = api.post(path, {"keep_newest": 0, "protected_tags": [], "recent_hours": 0})

    assert saved.status_code == 200
    assert saved.json() == {
        "set_by": "cluster",
        "deletions": [
            {
                "repository": "base", "tags": ["old"], "digest": "sha256:old",
                "reason": "pushed 40 days ago (more than 30)", "bytes": 1100,
            }
        ],
        "kept": [
            {"repository": "base", "tag": "v1", "digest": "sha256:v1",
             "reason": "protected by the pattern 'v*'"}
        ],
    }  # fmt: skip
    assert tried.json()["set_by"] == "request"
    assert [d["tags"] for d in tried.json()["deletions"]] == [["new"], ["old"], ["v1"]]
    assert Registry.objects.get(pk=registry.pk).usage_tags == 3
    assert not RetentionRun.objects.exists()


def test_a_dry_run_with_a_bad_policy_is_refused(api, cluster) -> None:
    make_registry(cluster)

    response = api.post(f"{cluster_policy(cluster)}/dry-run", {"keep_newest": -3})

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "keep_newest"


def test_cleanup_records_a_run_and_lists_it(api, cluster) -> None:
    """Nothing to delete here: the registry is not asked (deleting: the integration test)."""
    registry = make_registry(cluster)
    push(registry, "fresh", 0.1)
    api.put(cluster_policy(cluster), {"keep_newest": 0})

    response = api.post(f"/clusters/{cluster.pk}/registry/cleanup")

    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["trigger"], run["state"], run["deleted"], run["errors"]) == (
        "manual", "succeeded", [], [],
    )  # fmt: skip
    assert run["policy"]["keep_newest"] == 0
    assert run["policy"]["source"] == "cluster"
    assert run["usage_bytes_before"] == run["usage_bytes_after"] == 1100
    assert run["freed_bytes"] == 0
    with expected_queries("registries-api:registry-retention-runs"):
        listed = api.get(f"/clusters/{cluster.pk}/registry/retention-runs")
    assert [r["id"] for r in listed.json()] == [run["id"]]
    event = AuditEvent.objects.get(type="REGISTRY_RETENTION_RUN_FINISHED")
    assert event.data == {
        "run": run["id"], "trigger": "manual", "state": "succeeded", "tags": 0,
        "manifests": 0, "errors": 0, "bytes": [1100, 1100],
    }  # fmt: skip


def test_cleanup_skips_everything_while_the_registrys_events_are_not_applied(api, cluster) -> None:
    """The inventory is behind the registry until its events are applied: a run deletes nothing
    then, and says why (the registry is not asked)."""
    registry = make_registry(cluster)
    push(registry, "old", 40)
    RegistryNotification.objects.create(
        id="event-1", registry=registry, action="push", repository=f"{registry.namespace}/base",
        occurred_at=timezone.now(), target={"tag": "release-1", "digest": "sha256:old"},
    )  # fmt: skip
    api.put(cluster_policy(cluster), {"keep_newest": 0})

    run = api.post(f"/clusters/{cluster.pk}/registry/cleanup").json()

    assert (run["state"], run["deleted"]) == ("succeeded", [])
    assert run["errors"] == [
        {"repository": "base", "tag": "old",
         "error": "skipped: the registry has events not yet applied to the inventory"}
    ]  # fmt: skip
    assert list(Tag.objects.values_list("name", flat=True)) == ["old"]


def test_a_run_stops_at_its_time_limit_even_in_a_web_request(api, cluster, settings) -> None:
    """Cleanup runs in the request; it stops deleting at the time limit as the task does, so it
    never outlives the moment it stops counting as under way."""
    registry = make_registry(cluster)
    push(registry, "old-1", 40)
    push(registry, "old-2", 40)
    api.put(cluster_policy(cluster), {"keep_newest": 0})
    settings.REGISTRY_RETENTION_TIME_LIMIT_SECONDS = 0

    run = api.post(f"/clusters/{cluster.pk}/registry/cleanup").json()

    assert (run["state"], run["deleted"]) == ("failed", [])
    assert run["errors"] == [{"repository": "", "tag": "", "error": (
        "stopped at the time limit (0 s, REGISTRY_RETENTION_TIME_LIMIT_SECONDS): 2 planned "
        "deletions left to the next run"
    )}]  # fmt: skip
    assert sorted(Tag.objects.values_list("name", flat=True)) == ["old-1", "old-2"]


def test_cleanup_of_a_registry_that_is_not_ready_is_refused(api, cluster) -> None:
    make_registry(cluster, state=State.FAILED)

    response = api.post(f"/clusters/{cluster.pk}/registry/cleanup")

    assert response.status_code == 409
    assert response.json() == {
        "message": "The registry is failed: its policy runs only while ready."
    }
    assert not RetentionRun.objects.exists()


def test_a_second_cleanup_while_one_runs_is_refused(api, cluster) -> None:
    registry = make_registry(cluster)
    RetentionRun.objects.create(registry=registry, trigger="schedule")

    response = api.post(f"/clusters/{cluster.pk}/registry/cleanup")

    assert response.status_code == 409
    assert response.json()["message"].startswith(
        "A retention run of this registry is already under way"
    )
    assert RetentionRun.objects.count() == 1


def test_a_run_that_outlived_its_time_limit_is_taken_for_dead(api, cluster) -> None:
    registry = make_registry(cluster)
    dead = RetentionRun.objects.create(
        registry=registry, trigger="schedule", started_at=timezone.now() - timedelta(hours=2)
    )

    response = api.post(f"/clusters/{cluster.pk}/registry/cleanup")

    assert response.status_code == 201
    dead.refresh_from_db()
    assert dead.state == "failed"
    assert dead.errors == [{"repository": "", "tag": "", "error": "did not finish in time"}]


def test_another_organizations_cluster_is_404(api, other_api, cluster) -> None:
    registry = make_registry(cluster)
    push(registry, "old", 40)
    base = f"/clusters/{cluster.pk}/registry"
    requests = [
        ("get", f"{base}/retention-policy", None),
        ("put", f"{base}/retention-policy", {"keep_newest": 0}),
        ("delete", f"{base}/retention-policy", None),
        ("post", f"{base}/retention-policy/dry-run", None),
        ("post", f"{base}/cleanup", None),
        ("get", f"{base}/retention-runs", None),
    ]
    for method, path, body in requests:
        response = other_api.request(method, path, body)

        assert response.status_code == 404, (method, path)
        assert response.json() == {"message": "No cluster found"}
    assert not RetentionPolicy.objects.exists()
    assert not RetentionRun.objects.exists()


def test_reads_need_read_registries_and_writes_write_registries(make_api, cluster) -> None:
    make_registry(cluster)
    reader = make_api(scopes=[ApiScope.READ_REGISTRIES])

    assert reader.get(cluster_policy(cluster)).status_code == 200
    assert reader.post(f"{cluster_policy(cluster)}/dry-run").status_code == 200
    refused = reader.put(cluster_policy(cluster), {"keep_newest": 1})
    assert refused.status_code == 403
    assert refused.json() == {"message": "This API token needs the write_registries scope."}
    assert reader.post(f"/clusters/{cluster.pk}/registry/cleanup").status_code == 403
    assert not RetentionPolicy.objects.exists()


@pytest.mark.parametrize(("action", "repository"), [("pull", "base"), ("push", "other")])
def test_a_pending_pull_or_another_repositorys_event_does_not_hold_a_group_back(
    api, cluster, action: str, repository: str
) -> None:
    """Only a pending push, delete or mount in the group's own repository can leave the
    inventory behind for it (``test_cleanup_skips_everything...``): a pull moves no tag, and
    another repository's event changes nothing here. The run goes on to ask the registry (none
    answers in these tests, so that is the group's error)."""
    registry = make_registry(cluster)
    push(registry, "old", 40)
    RegistryNotification.objects.create(
        id="event-1", registry=registry, action=action,
        repository=f"{registry.namespace}/{repository}",
        occurred_at=timezone.now(), target={"tag": "old", "digest": "sha256:old"},
    )  # fmt: skip
    api.put(cluster_policy(cluster), {"keep_newest": 0})

    run = api.post(f"/clusters/{cluster.pk}/registry/cleanup").json()

    assert [(e["repository"], e["tag"]) for e in run["errors"]] == [("base", "old")]
    assert not run["errors"][0]["error"].startswith("skipped")
