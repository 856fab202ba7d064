"""Registry quotas (``registries.quotas``, ``registries.services.quotas``): which quota applies,
how usage is judged against it, what a change of state records, and what the token endpoint
grants a registry at its hard limit."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from clusters import services as cluster_services
from clusters.audit import AuditEvent
from clusters.interface import Actor, ActorType, acting_as
from clusters.models import Organization
from controlplane import hotcache
from registries import conditions, services
from registries.models import Registry, State
from registries.quotas import (
    HARD_EXCEEDED,
    SOFT_EXCEEDED,
    UNLIMITED,
    WITHIN,
    QuotaLimits,
    RegistryQuota,
    human_bytes,
    judge,
    quota_status,
)
from registries.services.quotas import quota_delete, quota_set
from tests.controlplane.test_metrics import delta, scrape  # noqa: F401 - a fixture
from tests.registries.factories import RegistryFactory
from tests.registries.test_hot_cache import granted, token_for, warm
from tests.registries.test_token_endpoint import URL, basic, error, make_agent
from tests.support.registry_tokens import access_claims

pytestmark = pytest.mark.django_db

GB = 1000**3
USER = Actor(ActorType.USER, "u-1", "Sam Kim")


def _store(registry: Registry, tag: str, size: int) -> Registry:
    """Record a push of ``size`` bytes (a manifest of 100 and one blob) as ``base:<tag>``,
    through the inventory services, as the event path does."""
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        assert locked is not None
        services.manifest_put(
            locked,
            digest=f"sha256:m-{tag}",
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=100,
            blobs={f"sha256:b-{tag}": size - 100},
        )
        services.tag_put(
            locked,
            repository=f"{registry.namespace}/base",
            tag=tag,
            digest=f"sha256:m-{tag}",
            at=timezone.now(),
        )
        return services.usage_refresh(locked)


def _untag(registry: Registry, tag: str) -> Registry:
    with transaction.atomic():
        locked = services.inventory_lock(registry.pk)
        assert locked is not None
        services.tags_remove(locked, repository=f"{registry.namespace}/base", tag=tag)
        services.manifests_unreferenced_delete(locked)
        return services.usage_refresh(locked)


def _events(registry: Registry) -> list[tuple[str, str]]:
    rows = AuditEvent.objects.filter(subject_uuid=str(registry.pk)).order_by("occurred_at")
    return [(row.type, row.actor_type) for row in rows]


@pytest.fixture
def registry() -> Registry:
    return RegistryFactory(state=State.READY)


# --- Sizes and messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (None, "no limit"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (1500, "1.5 kB"),
        (10 * GB, "10 GB"),
        (10_200_000_000, "10.2 GB"),
        (10_249_999_999, "10.2 GB"),
        (3 * 1000**5, "3 PB"),
        (5 * 1000**6, "5 EB"),
    ],
)
def test_sizes_are_shown_in_decimal_units(size: int | None, shown: str) -> None:
    assert human_bytes(size) == shown


def test_the_refusal_reads_as_the_issue_asks_and_tells_close_figures_apart() -> None:
    over = judge(QuotaLimits(hard_bytes=10 * GB), "cluster", 10_200_000_000, 3)
    close = judge(QuotaLimits(hard_bytes=1_041_233), "cluster", 1_041_234, 1)
    tags = judge(QuotaLimits(hard_tags=50), "organization", 0, 50)

    assert over.push_refused == (
        "quota exceeded: 10.2 GB of 10 GB used; delete tags or raise the quota"
    )
    assert over.state == HARD_EXCEEDED
    assert over.percent == 102.0
    assert close.push_refused == (
        "quota exceeded: 1041234 B of 1041233 B used; delete tags or raise the quota"
    )
    assert tags.push_refused == (
        "quota exceeded: 50 tags of 50 used; delete tags or raise the quota"
    )


@pytest.mark.parametrize(
    ("limits", "used", "state", "message"),
    [
        (QuotaLimits(), 5 * GB, UNLIMITED, "No quota applies to this registry."),
        (QuotaLimits(hard_bytes=10 * GB), 7 * GB, WITHIN, "7 GB used of 10 GB."),
        # The soft limit defaults to 80% of the hard one.
        (
            QuotaLimits(hard_bytes=10 * GB),
            8 * GB,
            SOFT_EXCEEDED,
            "8 GB used, over the soft limit of 8 GB (hard limit: 10 GB).",
        ),
        (QuotaLimits(hard_bytes=10 * GB, soft_bytes_set=9 * GB), 8 * GB, WITHIN, None),
        (
            QuotaLimits(soft_bytes_set=GB),
            2 * GB,
            SOFT_EXCEEDED,
            "2 GB used, over the soft limit of 1 GB (hard limit: no limit).",
        ),
        (
            QuotaLimits(hard_bytes=10 * GB),
            10 * GB,
            HARD_EXCEEDED,
            "Pushes are refused: quota exceeded: 10 GB of 10 GB used; delete tags or raise the "
            "quota.",
        ),
    ],
)
def test_usage_is_judged_at_or_over_each_limit(
    limits: QuotaLimits, used: int, state: str, message: str | None
) -> None:
    status = judge(limits, "organization", used, 1)

    assert status.state == state
    assert (status.push_refused != "") == (state == HARD_EXCEEDED)
    if message is not None:
        assert status.message == message


# --- Which quota applies ---------------------------------------------------------------------


def test_the_clusters_override_replaces_the_organizations_default_which_replaces_the_setting(
    registry: Registry, settings
) -> None:
    settings.REGISTRY_QUOTA_DEFAULT_BYTES = 50 * GB
    organization, cluster = registry.cluster.organization, registry.cluster
    other = RegistryFactory(state=State.READY, cluster__organization=organization)

    assert quota_status(registry).limits == QuotaLimits(hard_bytes=50 * GB)
    assert quota_status(registry).source == "setting"
    quota_set(organization=organization, hard_bytes=20 * GB, hard_tags=100)
    quota_set(organization=organization, cluster=cluster, soft_bytes=GB)

    # Whole: the override sets no hard limit, and does not inherit the default's.
    assert (quota_status(registry).limits, quota_status(registry).source) == (
        QuotaLimits(soft_bytes_set=GB),
        "cluster",
    )
    assert (quota_status(other).limits, quota_status(other).source) == (
        QuotaLimits(hard_bytes=20 * GB, hard_tags=100),
        "organization",
    )
    assert quota_delete(organization=organization, cluster=cluster) is True
    assert quota_status(registry).source == "organization"
    settings.REGISTRY_QUOTA_DEFAULT_BYTES = None
    assert quota_delete(organization=organization) is True
    assert quota_status(registry).state == UNLIMITED
    assert quota_status(registry).source is None
    assert quota_delete(organization=organization) is False


# --- Evaluation and its transitions ----------------------------------------------------------


def test_crossing_each_limit_sets_the_condition_and_records_one_event_per_transition(
    registry: Registry,
) -> None:
    quota_set(organization=registry.cluster.organization, cluster=registry.cluster, hard_bytes=1000)

    with acting_as(USER):  # the crossings are the system's, whoever pushed
        _store(registry, "1", 500)
        registry.refresh_from_db()
        within = conditions.condition_get(registry, conditions.QUOTA_EXCEEDED)
        _store(registry, "2", 300)  # 800: the soft limit, 80% of 1000
        _store(registry, "3", 100)  # still over the soft limit: no new event
        registry.refresh_from_db()
        soft = conditions.condition_get(registry, conditions.QUOTA_EXCEEDED)
        soft_refused = registry.push_refused
        _store(registry, "4", 100)  # 1000: the hard limit
        registry.refresh_from_db()
        hard = conditions.condition_get(registry, conditions.QUOTA_EXCEEDED)
        hard_refused = registry.push_refused
        _untag(registry, "1")
        registry.refresh_from_db()

    assert (within["status"], within["reason"]) == ("False", "WithinQuota")
    assert within["message"] == "500 B used of 1 kB."
    assert (soft["status"], soft["reason"]) == ("True", "SoftLimitExceeded")
    assert soft["message"] == "900 B used, over the soft limit of 800 B (hard limit: 1 kB)."
    assert soft_refused == ""
    assert (hard["status"], hard["reason"]) == ("True", "HardLimitExceeded")
    assert hard_refused == "quota exceeded: 1 kB of 1 kB used; delete tags or raise the quota"
    # Soft and hard are both True: the time is when it first turned True.
    assert hard["last_transition_time"] == soft["last_transition_time"]
    assert registry.push_refused == ""
    assert conditions.condition_get(registry, conditions.QUOTA_EXCEEDED)["reason"] == (
        "WithinQuota"
    )
    system = ActorType.SYSTEM
    assert _events(registry) == [
        ("REGISTRY_QUOTA_UPDATED", "SYSTEM"),  # the quota_set, outside acting_as
        ("REGISTRY_QUOTA_SOFT_LIMIT_EXCEEDED", system),
        ("REGISTRY_QUOTA_HARD_LIMIT_EXCEEDED", system),
        ("REGISTRY_QUOTA_WITHIN_LIMITS", system),
    ]
    crossing = AuditEvent.objects.get(type="REGISTRY_QUOTA_HARD_LIMIT_EXCEEDED")
    assert crossing.organization == registry.cluster.organization
    assert crossing.subject_type == "REGISTRY"
    assert crossing.subject_name == registry.namespace
    assert crossing.data == {
        "state": "hard_exceeded",
        "used_bytes": 1000,
        "used_tags": 4,
        "hard_bytes": 1000,
        "soft_bytes": 800,
        "hard_tags": None,
        "source": "cluster",
    }


def test_a_crossing_is_counted_once_committed(
    registry: Registry,
    scrape,  # noqa: F811 - the fixture
    django_capture_on_commit_callbacks,
) -> None:
    quota_set(organization=registry.cluster.organization, hard_bytes=1000)
    before = scrape()

    with django_capture_on_commit_callbacks(execute=True):
        _store(registry, "1", 900)
        _store(registry, "2", 50)  # still over the soft limit

    name = "controlplane_registry_quota_transitions_total"
    assert delta(before, scrape(), name, state="soft_exceeded") == 1


def test_a_registry_no_quota_applies_to_gets_no_condition_and_no_write(
    registry: Registry, django_assert_num_queries
) -> None:
    _store(registry, "1", 500)
    registry.refresh_from_db()

    with django_assert_num_queries(1):  # the quota's read, nothing written
        services.quota_evaluate(registry)
    assert conditions.condition_get(registry, conditions.QUOTA_EXCEEDED) is None
    assert _events(registry) == []


def test_a_tag_limit_refuses_pushes_too(registry: Registry) -> None:
    _store(registry, "1", 500)
    quota_set(organization=registry.cluster.organization, hard_tags=1)
    registry.refresh_from_db()

    assert registry.push_refused == (
        "quota exceeded: 1 tag of 1 used; delete tags or raise the quota"
    )


# --- Quota writes ----------------------------------------------------------------------------


def test_a_quota_write_records_who_changed_what_and_judges_the_registries_at_once(
    registry: Registry,
) -> None:
    organization = registry.cluster.organization
    other = RegistryFactory(state=State.READY, cluster__organization=organization)
    overridden = RegistryFactory(state=State.READY, cluster__organization=organization)
    quota_set(organization=organization, cluster=overridden.cluster, hard_bytes=10 * GB)
    for each in (registry, other, overridden):
        _store(each, "1", 2000)

    with acting_as(USER):
        quota_set(organization=organization, hard_bytes=1000)
        quota_set(organization=organization, hard_bytes=1000, soft_bytes=500)

    refused = {r.pk: r.push_refused for r in Registry.objects.all()}
    assert refused[registry.pk] == refused[other.pk] != ""
    assert refused[overridden.pk] == ""  # its own quota applies
    rows = AuditEvent.objects.filter(type="ORGANIZATION_REGISTRY_QUOTA_UPDATED").order_by(
        "occurred_at"
    )
    assert [(row.actor_name, row.subject_name, row.data) for row in rows] == [
        ("Sam Kim", "acme", {"hard_bytes": [None, 1000]}),
        ("Sam Kim", "acme", {"soft_bytes": [None, 500]}),
    ]  # fmt: skip
    assert rows[0].subject_uuid == str(organization.uuid)
    assert rows[0].organization == organization


def test_a_clusters_quota_is_recorded_on_its_registry(registry: Registry) -> None:
    organization, cluster = registry.cluster.organization, registry.cluster

    quota_set(organization=organization, cluster=cluster, hard_bytes=GB)
    quota_delete(organization=organization, cluster=cluster)

    rows = AuditEvent.objects.filter(type="REGISTRY_QUOTA_UPDATED").order_by("occurred_at")
    assert [(row.subject_type, row.subject_uuid, row.subject_name) for row in rows] == [
        ("REGISTRY", str(registry.pk), registry.namespace)
    ] * 2
    assert rows[0].data == {"hard_bytes": [None, GB], "cluster": str(cluster.pk)}
    assert rows[1].data == {"hard_bytes": [GB, None], "deleted": True, "cluster": str(cluster.pk)}


@pytest.mark.parametrize(
    ("values", "errors"),
    [
        ({"hard_bytes": -1}, {"hard_bytes"}),
        ({"hard_bytes": "10"}, {"hard_bytes"}),
        ({"hard_bytes": True}, {"hard_bytes"}),
        ({"hard_tags": 2**63}, {"hard_tags"}),
        ({"hard_bytes": 10, "soft_bytes": 11}, {"soft_bytes"}),
        ({"hard_gigabytes": 10}, {"hard_gigabytes"}),
    ],
)
def test_a_bad_limit_writes_nothing(registry: Registry, values: dict, errors: set[str]) -> None:
    with pytest.raises(ValidationError) as raised:
        quota_set(organization=registry.cluster.organization, **values)

    assert set(raised.value.message_dict) == errors
    assert not RegistryQuota.objects.exists()
    assert not AuditEvent.objects.filter(type__contains="QUOTA").exists()


def test_another_organizations_cluster_is_refused(registry: Registry) -> None:
    other = cluster_services.organization_create(slug="other", name="Other")

    with pytest.raises(ValidationError, match="not the organization's"):
        quota_set(organization=other, cluster=registry.cluster, hard_bytes=1)
    with pytest.raises(ValidationError, match="not the organization's"):
        quota_delete(organization=other, cluster=registry.cluster)
    assert not RegistryQuota.objects.exists()


def test_a_write_that_rolls_back_leaves_no_quota_and_no_audit_row(registry: Registry) -> None:
    _store(registry, "1", 500)

    @transaction.atomic
    def write_then_fail() -> None:
        quota_set(organization=registry.cluster.organization, hard_bytes=100)
        raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError):
        write_then_fail()

    registry.refresh_from_db()
    assert not RegistryQuota.objects.exists()
    assert not AuditEvent.objects.filter(type__contains="QUOTA").exists()
    assert registry.push_refused == ""


def test_the_database_keeps_one_default_per_organization_and_soft_under_hard() -> None:
    organization = Organization.objects.create(slug="acme", name="Acme")
    RegistryQuota.objects.create(organization=organization, hard_bytes=10)

    for fields in ({"hard_bytes": 20}, {"cluster": None, "hard_bytes": 10, "soft_bytes": 11}):
        with pytest.raises(Exception, match="(?i)unique|constraint"), transaction.atomic():
            RegistryQuota.objects.create(organization=organization, **fields)


# --- The token endpoint ----------------------------------------------------------------------


@pytest.fixture
def refused_agent():
    organization = cluster_services.organization_create(slug="acme", name="Acme")
    agent = make_agent(organization, "Open Source")
    registry = Registry.objects.get(cluster=agent.cluster)
    _store(registry, "1", 2000)
    quota_set(organization=organization, cluster=agent.cluster, hard_bytes=1000)
    return agent


REFUSED = "quota exceeded: 2 kB of 1 kB used; delete tags or raise the quota"


@pytest.mark.parametrize("asked", ["pull,push", "push"])
def test_a_push_is_refused_with_the_reason_as_a_clients_error(
    client, refused_agent, asked: str
) -> None:
    response = client.get(
        URL,
        {"service": "hosted-registry", "scope": f"repository:{refused_agent.namespace}/b:{asked}"},
        **basic(refused_agent.secret),
    )

    assert response.status_code == 401
    assert response.json() == error(REFUSED, "DENIED")


@pytest.mark.parametrize(
    ("asked", "granted"), [("pull", ["pull", "delete"]), ("*", ["pull", "delete"])]
)
def test_pulls_and_deletes_are_still_granted_without_push(
    client, refused_agent, asked: str, granted: list[str]
) -> None:
    """A pull-only request is not widened to push (as it is within the quota, for oras), and
    ``*`` (``skopeo delete``) gets pull and delete: deleting tags is how space is freed."""
    response = client.get(
        URL,
        {"service": "hosted-registry", "scope": f"repository:{refused_agent.namespace}/b:{asked}"},
        **basic(refused_agent.secret),
    )

    assert response.status_code == 200
    assert access_claims(response.json()["token"])["access"] == [
        {"type": "repository", "name": f"{refused_agent.namespace}/b", "actions": granted}
    ]


def test_a_job_credential_is_refused_push_as_its_agent_token_is(client, refused_agent) -> None:
    _, secret = services.job_credential_create(agent_token=refused_agent.token, job_id="job-1")

    response = client.get(
        URL,
        {"service": "hosted-registry", "scope": f"repository:{refused_agent.namespace}/b:push"},
        **basic(secret),
    )

    assert response.status_code == 401
    assert response.json() == error(REFUSED, "DENIED")


@pytest.mark.django_db(transaction=True)
def test_a_cached_principal_is_refused_push_as_soon_as_the_quota_is_reached_in_this_process(
    client, settings, django_assert_num_queries
) -> None:
    """The refusal rides on the token endpoint's one query, so a warm principal reads nothing;
    a quota write (or a new usage figure) that moves the refusal drops it at once here, and
    other processes within ``HOT_CACHE_SECONDS``."""
    settings.HOT_CACHE_SECONDS = 3600
    hotcache.clear()
    organization = cluster_services.organization_create(slug="acme", name="Acme")
    agent = make_agent(organization, "Open Source")
    _store(Registry.objects.get(cluster=agent.cluster), "1", 2000)
    with django_assert_num_queries(1):  # cold: the token, its namespace and its refusal
        assert token_for(client, agent.secret, agent.namespace).status_code == 200
    warm(client, agent.secret, agent.namespace, django_assert_num_queries)

    quota_set(organization=organization, hard_bytes=1000)
    refused = token_for(client, agent.secret, agent.namespace)
    quota_set(organization=organization, hard_bytes=10_000)
    allowed = token_for(client, agent.secret, agent.namespace)

    assert refused.status_code == 401
    assert refused.json()["message"] == REFUSED
    assert granted(allowed)[0]["actions"] == ["pull", "push", "delete"]
