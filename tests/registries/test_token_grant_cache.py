"""Each process remembers parsed ``scope`` values and grants (``registries.tokens``): the same
answers as working them out again, never one principal's grant for another, and the token's
lifetime still read from the settings each time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest

from registries import tokens
from registries.tokens import (
    CACHED_GRANT_SCOPES,
    CACHED_VALUE_LENGTH,
    Principal,
    grant,
    grant_for,
    parse_scopes,
    token_issue,
)
from tests.support.registry_tokens import access_claims

NAMESPACE = "acme/0123456789ab"
OWNER = Principal(subject="s", namespace=NAMESPACE, agent_token_id=uuid.UUID(int=1))
OTHER = Principal(subject="t", namespace="acme/ba9876543210", agent_token_id=uuid.UUID(int=2))

ASKED = [
    [],
    [f"repository:{NAMESPACE}/x:pull"],
    [f"repository:{NAMESPACE}/x:pull,push"],
    [f"repository:{NAMESPACE}/x:pull repository:{NAMESPACE}/y:*", "registry:catalog:*"],
    [f"repository:{NAMESPACE}/x:pull", "repository:acme/ba9876543210/x:pull", "bad"],
]


@pytest.fixture(autouse=True)
def _empty_caches() -> None:
    tokens._parse_value.cache_clear()
    tokens._cached_grant.cache_clear()


@pytest.mark.parametrize("values", ASKED)
@pytest.mark.parametrize("principal", [OWNER, OTHER, Principal.anonymous()])
def test_a_remembered_grant_is_the_one_worked_out_again(
    principal: Principal, values: list[str]
) -> None:
    first = grant_for(principal, parse_scopes(values))
    again = grant_for(principal, parse_scopes(values))

    assert again is first  # remembered
    assert first == tokens._grant_for(principal, tuple(tokens._parse_uncached(" ".join(values))))
    assert list(first.access) == grant(principal, parse_scopes(values))
    assert first.requested == " ".join(str(scope) for scope in parse_scopes(values))


def test_the_same_scopes_for_another_principal_get_that_principals_grant() -> None:
    asked = parse_scopes([f"repository:{NAMESPACE}/x:pull,push"])
    assert grant_for(OWNER, asked).access

    assert grant_for(OTHER, asked).access == ()
    assert grant_for(Principal.anonymous(), asked).access == ()
    narrower = dataclasses.replace(OWNER, namespace=f"{NAMESPACE}/only")
    assert grant_for(narrower, asked).access == ()


def test_a_principal_with_another_expiry_is_its_own_entry(settings) -> None:
    settings.REGISTRY_TOKEN_PULL_TTL_SECONDS = 300
    asked = parse_scopes([f"repository:{NAMESPACE}/x:pull"])
    soon = dataclasses.replace(OWNER, expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90))

    assert token_issue(OWNER, asked).expires_in == 300
    assert token_issue(soon, asked).expires_in <= 90
    assert token_issue(OWNER, asked).expires_in == 300


def test_the_lifetime_follows_the_settings_with_the_grant_remembered(settings) -> None:
    asked = parse_scopes([f"repository:{NAMESPACE}/x:pull"])
    settings.REGISTRY_TOKEN_PULL_TTL_SECONDS = 300
    assert token_issue(OWNER, asked).expires_in == 300

    settings.REGISTRY_TOKEN_PULL_TTL_SECONDS = 120

    assert token_issue(OWNER, asked).expires_in == 120


def test_changing_an_issued_tokens_access_changes_no_later_token() -> None:
    asked = parse_scopes([f"repository:{NAMESPACE}/x:pull"])
    issued = token_issue(OWNER, asked)
    expected = [dict(entry, actions=list(entry["actions"])) for entry in issued.access]

    issued.access[0]["actions"].append("forged")
    issued.access.append({"type": "repository", "name": "elsewhere", "actions": ["push"]})

    later = token_issue(OWNER, asked)
    assert later.access == expected
    assert access_claims(later.token)["access"] == expected


def test_many_scopes_and_long_values_are_worked_out_each_time_the_same_way() -> None:
    many = [f"repository:{NAMESPACE}/r{i}:pull" for i in range(CACHED_GRANT_SCOPES + 3)]
    long_value = " ".join(many * (CACHED_VALUE_LENGTH // len(" ".join(many)) + 1))
    assert len(long_value) > CACHED_VALUE_LENGTH

    parsed = parse_scopes([long_value])

    assert parsed == parse_scopes(many) * (len(parsed) // len(many))
    assert tokens._parse_value.cache_info().currsize == len(many)  # the short ones only
    first = grant_for(OWNER, parse_scopes(many))
    assert grant_for(OWNER, parse_scopes(many)) is not first
    assert grant_for(OWNER, parse_scopes(many)) == first
    assert tokens._cached_grant.cache_info().currsize == 0
