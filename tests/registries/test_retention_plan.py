"""The plan of a retention policy (``registries.services.retention.retention_plan``) on inventory
rows: each rule, each protection, tags sharing a manifest, index members, recent use, ties; and
the policy that applies to a registry (``registries.retention.policy_for``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction

from registries import services
from registries.inventory import Tag
from registries.models import Registry, State
from registries.retention import (
    FROM_CLUSTER,
    FROM_ORGANIZATION,
    RetentionPolicy,
    policies_for,
    policy_for,
)
from registries.services.retention import RetentionPlan, retention_plan
from tests.registries.factories import RegistryFactory, inventory_push

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OFF: dict[str, Any] = {
    "enabled": True,
    "keep_newest": None,
    "delete_older_than_days": None,
    "unless_pulled_within_days": None,
    "delete_untagged": False,
    "protected_tags": [],
    "recent_hours": 0,
}


def policy(**rules: Any) -> dict[str, Any]:
    return {**OFF, **rules}


def push(
    registry: Registry,
    tag: str,
    *,
    days: float,
    digest: str = "",
    repository: str = "base",
    pulled_days: float | None = None,
) -> None:
    """``repository:tag`` pushed ``days`` before NOW (and pulled ``pulled_days`` before it)."""
    digest = digest or f"sha256:{repository}-{tag}"
    inventory_push(
        registry, f"{registry.namespace}/{repository}", tag, digest, {f"sha256:l-{digest}": 1000},
        at=NOW - timedelta(days=days),
    )  # fmt: skip
    if pulled_days is not None:
        Tag.objects.filter(repository__name=f"{registry.namespace}/{repository}", name=tag).update(
            last_pulled_at=NOW - timedelta(days=pulled_days)
        )


def deleted(plan: RetentionPlan) -> list[tuple[str, list[str], str]]:
    return [(d.repository, d.tags, d.reason) for d in plan.deletions]


def kept(plan: RetentionPlan) -> list[tuple[str, str, str]]:
    return [(k.repository, k.tag, k.reason) for k in plan.kept]


@pytest.fixture
def registry() -> Registry:
    return RegistryFactory(state=State.READY)


def test_beyond_the_newest_n_tags_of_each_repository(registry: Registry) -> None:
    for index, tag in enumerate(["t1", "t2", "t3", "t4"]):
        push(registry, tag, days=10 - index)  # t4 newest
    push(registry, "only", days=50, repository="other")

    plan = retention_plan(registry, policy=policy(keep_newest=2), now=NOW)

    assert deleted(plan) == [
        ("base", ["t1"], "beyond the newest 2 tags of base"),
        ("base", ["t2"], "beyond the newest 2 tags of base"),
    ]
    assert plan.kept == []
    assert plan.source == "request"


def test_ties_in_push_time_are_ordered_by_name(registry: Registry) -> None:
    for tag in ["b", "a", "c"]:
        push(registry, tag, days=3)

    plan = retention_plan(registry, policy=policy(keep_newest=1), now=NOW)

    assert [d.tags for d in plan.deletions] == [["b"], ["c"]]


def test_older_than_d_days_unless_pulled_within_p_days(registry: Registry) -> None:
    push(registry, "old-unpulled", days=40)
    push(registry, "old-pulled-long-ago", days=40, pulled_days=20)
    push(registry, "old-pulled-lately", days=40, pulled_days=3)
    push(registry, "young", days=29)

    plan = retention_plan(
        registry, policy=policy(delete_older_than_days=30, unless_pulled_within_days=7), now=NOW
    )

    assert deleted(plan) == [
        ("base", ["old-pulled-long-ago"], "pushed 40 days ago, not pulled in the last 7 days"),
        ("base", ["old-unpulled"], "pushed 40 days ago, not pulled in the last 7 days"),
    ]


def test_without_p_a_pull_does_not_keep_an_old_tag(registry: Registry) -> None:
    push(registry, "old", days=40, pulled_days=2)

    plan = retention_plan(registry, policy=policy(delete_older_than_days=30), now=NOW)

    assert deleted(plan) == [("base", ["old"], "pushed 40 days ago (more than 30)")]


def test_no_rule_deletes_nothing(registry: Registry) -> None:
    push(registry, "old", days=400)

    assert retention_plan(registry, policy=policy(), now=NOW).deletions == []


def test_protected_patterns_keep_a_selected_tag(registry: Registry) -> None:
    for index, tag in enumerate(["latest", "v1.2", "release-3", "Latest", "build-7", "newest"]):
        push(registry, tag, days=20 - index)

    plan = retention_plan(
        registry,
        policy=policy(keep_newest=1, protected_tags=["latest", "v*", "release-*"]),
        now=NOW,
    )

    assert deleted(plan) == [
        ("base", ["Latest"], "beyond the newest 1 tag of base"),  # case-sensitive
        ("base", ["build-7"], "beyond the newest 1 tag of base"),
    ]
    assert kept(plan) == [
        ("base", "latest", "protected by the pattern 'latest'"),
        ("base", "release-3", "protected by the pattern 'release-*'"),
        ("base", "v1.2", "protected by the pattern 'v*'"),
    ]


def test_a_tag_pushed_or_pulled_within_recent_hours_is_kept(registry: Registry) -> None:
    push(registry, "base-of-a-running-build", days=40, pulled_days=0.125)  # 3 hours ago
    push(registry, "just-pushed", days=0.5)
    push(registry, "idle", days=40, pulled_days=2)

    plan = retention_plan(registry, policy=policy(keep_newest=0, recent_hours=24), now=NOW)

    assert deleted(plan) == [("base", ["idle"], "beyond the newest 0 tags of base")]
    assert kept(plan) == [
        ("base", "base-of-a-running-build", "pulled 3 h ago, within the last 24 hours"),
        ("base", "just-pushed", "pushed 12 h ago, within the last 24 hours"),
    ]


def test_tags_sharing_a_manifest_go_together_or_stay_together(registry: Registry) -> None:
    push(registry, "a", days=40, digest="sha256:shared")
    push(registry, "b", days=41, digest="sha256:shared")
    push(registry, "c", days=40, digest="sha256:kept-with-v1")
    push(registry, "v1", days=42, digest="sha256:kept-with-v1")

    plan = retention_plan(
        registry, policy=policy(delete_older_than_days=30, protected_tags=["v*"]), now=NOW
    )

    assert [(d.tags, d.digest) for d in plan.deletions] == [(["a", "b"], "sha256:shared")]
    assert plan.deletions[0].as_json()["tags"] == ["a", "b"]
    assert kept(plan) == [
        ("base", "c", "shares its manifest with v1, which is kept"),
        ("base", "v1", "protected by the pattern 'v*'"),
    ]


def test_a_member_of_a_kept_index_is_kept(registry: Registry) -> None:
    """A member tagged on its own (``amd64``) is deleted by digest: the index would lose it."""
    push(registry, "amd64", days=40, digest="sha256:member-amd64")
    push(registry, "arm64", days=40, digest="sha256:member-arm64")
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        assert locked is not None
        services.manifest_put(
            locked,
            digest="sha256:index",
            media_type="application/vnd.oci.image.index.v1+json",
            size=300,
            blobs={"sha256:member-amd64": 500, "sha256:l-sha256:member-amd64": 1000},
        )
        services.tag_put(
            locked, repository=f"{registry.namespace}/base", tag="v2", digest="sha256:index",
            at=NOW - timedelta(days=40),
        )  # fmt: skip
    push(registry, "amd64", days=40, digest="sha256:member-amd64", repository="elsewhere")

    plan = retention_plan(
        registry, policy=policy(delete_older_than_days=30, protected_tags=["v*"]), now=NOW
    )

    assert [(d.repository, d.tags) for d in plan.deletions] == [
        ("base", ["arm64"]),
        ("elsewhere", ["amd64"]),  # another repository's index does not list it
    ]
    assert kept(plan) == [
        ("base", "amd64", "a member of the index v2 (sha256:index…), which is kept"),
        ("base", "v2", "protected by the pattern 'v*'"),
    ]


def test_a_disabled_policy_deletes_nothing_and_says_so(registry: Registry) -> None:
    push(registry, "old", days=40)

    plan = retention_plan(
        registry, policy=policy(enabled=False, delete_older_than_days=30), now=NOW
    )

    assert plan.deletions == []
    assert kept(plan) == [("base", "old", "the policy is disabled")]


def test_each_deletion_carries_its_size(registry: Registry) -> None:
    push(registry, "old", days=40)

    plan = retention_plan(registry, policy=policy(delete_older_than_days=1), now=NOW)

    assert plan.deletions[0].as_json() == {
        "repository": "base",
        "tags": ["old"],
        "digest": "sha256:base-old",
        "reason": "pushed 40 days ago (more than 1)",
        "bytes": 1100,
    }


def test_the_cluster_override_else_the_organization_default_else_none(
    registry: Registry,
) -> None:
    organization = registry.cluster.organization
    push(registry, "old", days=40)
    assert policy_for(registry.cluster_id) == (None, None)
    assert retention_plan(registry, now=NOW) == RetentionPlan(None, None)

    default = RetentionPolicy.objects.create(organization=organization, keep_newest=5)
    assert policy_for(registry.cluster_id) == (default, FROM_ORGANIZATION)
    override = RetentionPolicy.objects.create(
        organization=organization, cluster=registry.cluster, delete_older_than_days=30,
        protected_tags=[], recent_hours=0,
    )  # fmt: skip
    assert policy_for(registry.cluster_id) == (override, FROM_CLUSTER)

    plan = retention_plan(registry, now=NOW)

    assert plan.source == FROM_CLUSTER
    assert deleted(plan) == [("base", ["old"], "pushed 40 days ago (more than 30)")]
    assert policy_for(None) == (None, None)


def test_many_clusters_policies_follow_the_same_precedence_in_one_query(
    django_assert_num_queries,
) -> None:
    """``policies_for`` (the sweep, the untagged decision) and ``policy_for`` are one
    precedence: an override, else the organization's default, else none; other organizations'
    policies and other clusters' overrides never leak in."""
    overridden = RegistryFactory()  # organization acme
    same_org = RegistryFactory()  # acme too: its default
    defaulted = RegistryFactory(cluster__organization__slug="other")
    bare = RegistryFactory(cluster__organization__slug="bare")
    acme = overridden.cluster.organization
    RetentionPolicy.objects.create(organization=acme, keep_newest=1)
    RetentionPolicy.objects.create(organization=acme, cluster=overridden.cluster, keep_newest=2)
    RetentionPolicy.objects.create(organization=defaulted.cluster.organization, keep_newest=3)
    RetentionPolicy.objects.create(
        organization=bare.cluster.organization,
        cluster=RegistryFactory(cluster__organization__slug="bare").cluster,
        keep_newest=4,
    )
    registries = [overridden, defaulted, same_org, bare]
    pairs = [(r.cluster_id, r.cluster.organization_id) for r in registries]

    with django_assert_num_queries(1):
        found = policies_for(pairs)

    assert {c: policy_for(c) for c, _ in pairs} == found
    assert [(found[c][0] and found[c][0].keep_newest, found[c][1]) for c, _ in pairs] == [
        (2, FROM_CLUSTER), (3, FROM_ORGANIZATION), (1, FROM_ORGANIZATION), (None, None),
    ]  # fmt: skip
