"""API tokens from the per-process cache (``clusters.selectors.api_token_authenticate``,
``controlplane.hotcache``): a warm request reads no database for its token, and whatever changes
what the token may do (revoked, deleted, its scopes, its user, its organization) is seen by the
next request in the same process; elsewhere, within ``HOT_CACHE_SECONDS``.

Tests run outside a transaction (``transaction=True``): the caches keep nothing read inside one.
The bound is set far out (an hour), so that only invalidation can explain a fresh answer.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone

from clusters import services
from clusters.models import ApiScope, ApiToken
from clusters.selectors import api_token_authenticate
from controlplane import hotcache
from tests.api.conftest import Api

pytestmark = pytest.mark.django_db(transaction=True)
ACCESS_TOKEN = "/v2/access-token"
INVALID = {"message": "Invalid or revoked API access token."}


@pytest.fixture(autouse=True)
def cache(settings) -> None:
    settings.HOT_CACHE_SECONDS = 3600
    hotcache.clear()


def warm(api: Api, django_assert_num_queries) -> bytes:
    """Ask twice: the second answer's token comes from the cache (no query), the same bytes."""
    first = api.get(ACCESS_TOKEN)
    assert first.status_code == 200, first.content
    with django_assert_num_queries(0):
        second = api.get(ACCESS_TOKEN)
    assert second.status_code == 200
    assert second.content == first.content
    return second.content


def test_a_warm_request_reads_no_database_for_its_token(api, django_assert_num_queries) -> None:
    warm(api, django_assert_num_queries)


def test_a_miss_is_one_query(api, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        assert api.get(ACCESS_TOKEN).status_code == 200


def test_a_revoked_token_is_refused_at_once(api, django_assert_num_queries) -> None:
    warm(api, django_assert_num_queries)

    services.api_token_revoke(token=api.token)

    response = api.get(ACCESS_TOKEN)
    assert response.status_code == 401
    assert response.json() == INVALID


def test_a_token_revoked_by_saving_it_is_refused_at_once(api, django_assert_num_queries) -> None:
    warm(api, django_assert_num_queries)

    api.token.revoked_at = timezone.now()
    api.token.save()  # as the admin saves a form

    assert api.get(ACCESS_TOKEN).status_code == 401


def test_a_deleted_token_is_refused_at_once(api, django_assert_num_queries) -> None:
    warm(api, django_assert_num_queries)

    api.token.delete()

    assert api.get(ACCESS_TOKEN).json() == INVALID


def test_a_narrower_scope_applies_to_the_next_request(
    api, cluster, django_assert_num_queries
) -> None:
    warm(api, django_assert_num_queries)
    assert api.get("/clusters").status_code == 200

    api.token.scopes = [ApiScope.READ_ORGANIZATIONS]
    api.token.save()

    response = api.get("/clusters")
    assert response.status_code == 403
    assert response.json() == {"message": "This API token needs the read_clusters scope."}


def test_a_renamed_organization_is_seen_by_the_next_request(api, django_assert_num_queries) -> None:
    old = api.base
    warm(api, django_assert_num_queries)
    assert api.get(f"{old}/clusters").status_code == 200

    organization = api.organization
    organization.slug = "renamed"
    organization.save()

    assert api.get(f"{old}/clusters").status_code == 404
    assert api.get("/v2/organizations/renamed/clusters").status_code == 200


def test_a_deactivated_user_is_refused_at_once(api, django_assert_num_queries) -> None:
    warm(api, django_assert_num_queries)

    user = api.token.user
    user.is_active = False
    user.save()

    assert api.get(ACCESS_TOKEN).json() == INVALID


def test_a_renamed_user_is_shown_by_the_next_request(api, django_assert_num_queries) -> None:
    warm(api, django_assert_num_queries)

    user = api.token.user
    user.first_name = "Robin"
    user.save()

    assert api.get(ACCESS_TOKEN).json()["user"]["name"] == "Robin Kim"


def test_a_change_no_signal_reports_is_seen_within_the_bound(
    api, monkeypatch, django_assert_num_queries
) -> None:
    """What another process or host changes reaches this one when the entry ends: the bound."""
    warm(api, django_assert_num_queries)
    started = hotcache.clock()
    ApiToken.objects.filter(pk=api.token.pk).update(revoked_at=timezone.now())  # no signal

    monkeypatch.setattr(hotcache, "clock", lambda: started + 3599)
    assert api.get(ACCESS_TOKEN).status_code == 200  # still within the bound
    monkeypatch.setattr(hotcache, "clock", lambda: started + 3601)
    with django_assert_num_queries(1):  # read again: the database decides
        assert api.get(ACCESS_TOKEN).json() == INVALID


def test_misses_are_not_cached(api, django_assert_num_queries) -> None:
    """A token created in another process works at once: a refusal is never kept."""
    assert api_token_authenticate("bkua_unknown") is None
    with django_assert_num_queries(1):
        assert api_token_authenticate("bkua_unknown") is None


def test_nothing_read_inside_a_transaction_is_kept(api, django_assert_num_queries) -> None:
    with transaction.atomic():
        assert api_token_authenticate(api.secret) is not None
    with django_assert_num_queries(1):
        assert api_token_authenticate(api.secret) is not None


def test_each_caller_gets_instances_of_its_own(api) -> None:
    first = api_token_authenticate(api.secret)
    second = api_token_authenticate(api.secret)
    assert first is not None
    assert second is not None
    assert (first.pk, first.user.pk, first.organization.pk) == (
        api.token.pk,
        api.token.user.pk,
        api.token.organization.pk,
    )
    assert first is not second
    assert first.user is not second.user
    assert first.organization is not second.organization
    first.scopes.clear()
    first.organization.slug = "changed"

    third = api_token_authenticate(api.secret)
    assert third is not None
    assert third.scopes == api.token.scopes
    assert third.organization.slug == api.token.organization.slug


def test_caching_off_reads_every_time(api, settings, django_assert_num_queries) -> None:
    settings.HOT_CACHE_SECONDS = 0
    api.get(ACCESS_TOKEN)
    with django_assert_num_queries(1):
        assert api.get(ACCESS_TOKEN).status_code == 200
