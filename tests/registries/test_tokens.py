"""What a registry token grants, and the JWTs that say so: access tokens and refresh tokens."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from jwt.utils import base64url_encode

from registries import signing, tokens
from registries.key_files import KeyFolder
from registries.key_store import KeyStore, key_store
from registries.keys import issue_signing_key, libtrust_kid
from registries.models import TokenSigningKey
from registries.services.signing_keys import rotate_keys
from registries.tokens import (
    InvalidRefreshToken,
    Principal,
    Scope,
    grant,
    parse_scopes,
    refresh_token_issue,
    refresh_token_subject,
    token_issue,
)
from tests.support.registry_tokens import access_claims

NAMESPACE = "acme/0123456789ab"
OWNER = Principal(subject="s", namespace=NAMESPACE)
#: What the principal gets on a repository of its namespace, whatever it asked (issue 13: oras
#: asks for pull and pushes with the same token).
ALL = ["pull", "push", "delete"]


def scopes(*raw: str) -> list[Scope]:
    return parse_scopes(raw)


# --- Scope.parse ----------------------------------------------------------------------------


def test_a_scope_has_a_type_a_name_and_actions() -> None:
    assert Scope.parse("repository:acme/0123456789ab/base:pull,push") == Scope(
        type="repository", name="acme/0123456789ab/base", actions=("pull", "push")
    )


def test_a_scope_name_may_contain_colons_the_actions_follow_the_last_one() -> None:
    assert Scope.parse("repository:host:5000/x:pull") == Scope(
        type="repository", name="host:5000/x", actions=("pull",)
    )


def test_the_catalog_scope_parses() -> None:
    assert Scope.parse("registry:catalog:*") == Scope(
        type="registry", name="catalog", actions=("*",)
    )


@pytest.mark.parametrize("raw", ["", "repository", "repository:name", ":x:pull", "::pull"])
def test_a_scope_without_type_name_and_actions_parts_is_none(raw: str) -> None:
    assert Scope.parse(raw) is None


def test_duplicate_actions_are_kept_once_in_the_order_asked() -> None:
    scope = Scope.parse("repository:a/b:push,pull,push,,pull")

    assert scope is not None
    assert scope.actions == ("push", "pull")


def test_a_scope_prints_back_as_it_parses() -> None:
    assert (
        str(Scope.parse("repository:host:5000/x:pull,push")) == "repository:host:5000/x:pull,push"
    )


def test_parse_scopes_splits_on_spaces_and_drops_malformed_scopes() -> None:
    parsed = parse_scopes(
        ["repository:a/b:pull repository:c:push", "nonsense", "  registry:catalog:*  ", ""]
    )

    assert parsed == [
        Scope("repository", "a/b", ("pull",)),
        Scope("repository", "c", ("push",)),
        Scope("registry", "catalog", ("*",)),
    ]


# --- grant ----------------------------------------------------------------------------------


def test_a_principal_gets_its_namespace_and_the_repositories_under_it() -> None:
    granted = grant(
        OWNER,
        scopes(
            f"repository:{NAMESPACE}:pull",
            f"repository:{NAMESPACE}/base:pull,push",
            f"repository:{NAMESPACE}/team/app:delete,*",
        ),
    )

    assert granted == [
        {"type": "repository", "name": NAMESPACE, "actions": ALL},
        {"type": "repository", "name": f"{NAMESPACE}/base", "actions": ALL},
        {"type": "repository", "name": f"{NAMESPACE}/team/app", "actions": [*ALL, "*"]},
    ]


@pytest.mark.parametrize(
    "name",
    [
        "acme/0123456789abX/base",
        "acme/0123456789ab-evil",
        "acme/0123456789ab_evil/x",
        "acme/other/base",
        "acme",
        "acme/0123456789a",
        "acme/0123456789ab/../x",
        "acme/0123456789ab/./x",
        "acme/0123456789ab/Base",
        "acme/0123456789ab//x",
        "acme/0123456789ab/",
        "acme/0123456789ab/-x",
        "acme/0123456789ab/x\n",
        "/acme/0123456789ab/x",
        f"acme/0123456789ab/{'x' * (255 - len(NAMESPACE))}",
    ],
)
def test_nothing_is_granted_outside_the_namespace_or_for_invalid_names(name: str) -> None:
    assert grant(OWNER, [Scope("repository", name, ("pull", "push"))]) == []


def test_a_repository_name_of_255_characters_is_still_granted() -> None:
    name = f"{NAMESPACE}/{'x' * (254 - len(NAMESPACE))}"
    assert len(name) == 255

    assert grant(OWNER, [Scope("repository", name, ("pull",))]) == [
        {"type": "repository", "name": name, "actions": ALL}
    ]


def test_unknown_actions_are_dropped_and_a_scope_left_with_none_is_left_out() -> None:
    granted = grant(
        OWNER,
        scopes(f"repository:{NAMESPACE}/base:admin,pull", f"repository:{NAMESPACE}/other:admin"),
    )

    assert granted == [{"type": "repository", "name": f"{NAMESPACE}/base", "actions": ALL}]


def test_scopes_for_the_same_repository_are_merged_into_one_entry() -> None:
    granted = grant(
        OWNER,
        scopes(
            f"repository:{NAMESPACE}/base:pull",
            f"repository:{NAMESPACE}/x:pull",
            f"repository:{NAMESPACE}/base:push,pull",
        ),
    )

    assert granted == [
        {"type": "repository", "name": f"{NAMESPACE}/base", "actions": ALL},
        {"type": "repository", "name": f"{NAMESPACE}/x", "actions": ALL},
    ]


def test_the_catalog_is_not_granted_to_an_agent_principal() -> None:
    assert grant(OWNER, scopes("registry:catalog:*")) == []


def test_the_control_plane_gets_the_catalog_and_its_namespace() -> None:
    principal = Principal.control_plane(NAMESPACE)

    granted = grant(
        principal,
        scopes("registry:catalog:*", "registry:catalog:pull", f"repository:{NAMESPACE}/x:pull"),
    )

    assert granted == [
        {"type": "registry", "name": "catalog", "actions": ["*"]},
        {"type": "repository", "name": f"{NAMESPACE}/x", "actions": ALL},
    ]


def test_other_registry_resources_and_unknown_types_are_never_granted() -> None:
    principal = Principal.control_plane(NAMESPACE)

    assert grant(principal, scopes("registry:other:*", f"image:{NAMESPACE}/x:pull")) == []


@pytest.mark.parametrize(
    "principal",
    [Principal.anonymous(), Principal(subject="s", namespace=None)],
    ids=["anonymous", "no namespace"],
)
def test_a_principal_without_a_namespace_gets_nothing(principal: Principal) -> None:
    asked = scopes(
        f"repository:{NAMESPACE}/base:pull,push",
        "repository:library/alpine:pull",
        "registry:catalog:*",
    )

    assert grant(principal, asked) == []


# --- grant, as a property -------------------------------------------------------------------

ALPHABET = ":/,.*-_ abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ACTIONS = ["pull", "push", "delete", "*", "admin", "", "PULL"]

#: Anything at all, mostly malformed.
arbitrary_scope = st.text(alphabet=ALPHABET, max_size=60)
VALID_COMPONENT = r"[a-z0-9]{1,4}(?:(?:[._]|__|-+)[a-z0-9]{1,3})?"
path_component = st.one_of(
    st.from_regex(VALID_COMPONENT, fullmatch=True),
    st.from_regex(VALID_COMPONENT, fullmatch=True),
    st.text(alphabet="ab09._-A:/", max_size=6),
)
#: Path components after a prefix near the namespace: often valid names, often not quite.
name_tail = st.lists(path_component, max_size=4).map(
    lambda parts: "".join(f"/{part}" for part in parts)
)
scope_near_namespace = st.builds(
    lambda type_, prefix, tail, actions: f"{type_}:{prefix}{tail}:{','.join(actions)}",
    st.sampled_from(["repository"] * 4 + ["registry", "Repository", ""]),
    st.sampled_from([NAMESPACE] * 4 + [NAMESPACE[:-1], f"{NAMESPACE}0", "acme/other", "acme"]),
    st.one_of(name_tail, name_tail, st.text(alphabet=ALPHABET, max_size=20)),
    st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=5),
)
catalog_scope = st.builds(
    lambda name, actions: f"registry:{name}:{','.join(actions)}",
    st.sampled_from(["catalog", "catalogue", "Catalog"]),
    st.lists(st.sampled_from(ACTIONS), max_size=3),
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    raw=st.lists(
        st.one_of(arbitrary_scope, scope_near_namespace, scope_near_namespace, catalog_scope),
        max_size=8,
    ),
    catalog=st.booleans(),
)
def test_grants_never_leave_the_namespace_or_the_known_actions(
    raw: list[str], catalog: bool
) -> None:
    principal = Principal(subject="s", namespace=NAMESPACE, catalog=catalog)

    granted = grant(principal, parse_scopes(raw))

    names = [(entry["type"], entry["name"]) for entry in granted]
    assert len(names) == len(set(names))
    for entry in granted:
        assert entry["actions"]
        assert len(entry["actions"]) == len(set(entry["actions"]))
        if entry["type"] == "registry":
            assert catalog
            assert entry == {"type": "registry", "name": "catalog", "actions": ["*"]}
            continue
        assert entry["type"] == "repository"
        name = entry["name"]
        assert name == NAMESPACE or name.startswith(f"{NAMESPACE}/")
        assert tokens.REPOSITORY_NAME.fullmatch(name)
        assert len(name) <= tokens.REPOSITORY_NAME_MAX_LENGTH
        assert set(entry["actions"]) <= {"pull", "push", "delete", "*"}


@hypothesis_settings(max_examples=300, deadline=None)
@given(raw=st.lists(st.one_of(arbitrary_scope, scope_near_namespace), max_size=8))
def test_every_known_action_on_a_valid_repository_in_the_namespace_is_granted(
    raw: list[str],
) -> None:
    asked = parse_scopes(raw)
    owned = [
        scope
        for scope in asked
        if scope.type == "repository"
        and (scope.name == NAMESPACE or scope.name.startswith(f"{NAMESPACE}/"))
        and tokens.REPOSITORY_NAME.fullmatch(scope.name)
        and len(scope.name) <= 255
        and set(scope.actions) & {"pull", "push", "delete", "*"}
    ]
    # Every owned repository asked anything known gets pull, push and delete; "*" when asked.
    expected = {(scope.name, action) for scope in owned for action in ALL} | {
        (scope.name, "*") for scope in owned if "*" in scope.actions
    }

    granted = grant(OWNER, asked)

    assert {(entry["name"], action) for entry in granted for action in entry["actions"]} == expected


# --- access tokens --------------------------------------------------------------------------


def test_an_access_token_carries_the_grant_for_the_service(settings) -> None:
    asked = scopes(f"repository:{NAMESPACE}/base:pull,push", "repository:acme/other/x:pull")

    issued = token_issue(OWNER, asked)

    claims = access_claims(issued.token)
    assert claims["iss"] == settings.REGISTRY_TOKEN_ISSUER == "controlplane"
    assert claims["aud"] == settings.REGISTRY_TOKEN_SERVICE == "hosted-registry"
    assert isinstance(claims["aud"], str)
    assert claims["sub"] == "s"
    assert claims["access"] == grant(OWNER, asked) == issued.access
    assert claims["access"] == [{"type": "repository", "name": f"{NAMESPACE}/base", "actions": ALL}]
    assert claims["nbf"] == claims["iat"] == int(issued.issued_at.timestamp())
    assert claims["exp"] - claims["iat"] == issued.expires_in
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])
    assert sorted(claims) == ["access", "aud", "exp", "iat", "iss", "jti", "nbf", "sub"]


def test_an_access_token_names_the_current_key_and_its_certificate() -> None:
    current = key_store().load().current

    header = jwt.get_unverified_header(token_issue(OWNER, []).token)

    assert header == {"alg": "ES256", "typ": "JWT", "kid": current.kid, "x5c": current.x5c}


def test_every_access_token_has_its_own_id(settings) -> None:
    first = access_claims(token_issue(OWNER, []).token)
    second = access_claims(token_issue(OWNER, []).token)

    assert first["jti"] != second["jti"]


def test_a_token_id_is_a_random_uuid4() -> None:
    ids = [signing.new_jti() for _ in range(200)]

    assert len(set(ids)) == len(ids)
    for jti in ids:
        parsed = uuid.UUID(hex=jti)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, jti)


PULL_TTL, PUSH_TTL = 120, 1800


@pytest.mark.parametrize(
    ("raw", "lifetime"),
    [
        ([], PULL_TTL),
        ([f"repository:{NAMESPACE}/a:pull", f"repository:{NAMESPACE}/b:pull"], PULL_TTL),
        ([f"repository:{NAMESPACE}/a:pull", f"repository:{NAMESPACE}/b:push"], PUSH_TTL),
        ([f"repository:{NAMESPACE}/a:delete"], PUSH_TTL),
        ([f"repository:{NAMESPACE}/a:*"], PUSH_TTL),
        ([f"repository:{NAMESPACE}/a:pull", "repository:acme/other/a:push"], PULL_TTL),
    ],
    ids=["empty", "pull only", "push", "delete", "all actions", "push refused"],
)
def test_a_token_that_can_only_read_lives_shorter_than_one_that_can_write(
    raw: list[str], lifetime: int, settings
) -> None:
    settings.REGISTRY_TOKEN_PULL_TTL_SECONDS = PULL_TTL
    settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS = PUSH_TTL

    issued = token_issue(OWNER, scopes(*raw))

    claims = access_claims(issued.token)
    assert issued.expires_in == lifetime
    assert claims["exp"] - claims["iat"] == lifetime


def test_the_token_response_has_the_token_under_both_names() -> None:
    issued = token_issue(OWNER, scopes(f"repository:{NAMESPACE}/base:pull"))

    response = issued.as_response()

    assert response == {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", response["issued_at"])


# --- refresh tokens -------------------------------------------------------------------------


def agent_principal() -> Principal:
    return Principal(subject="s", namespace=None, agent_token_id=uuid.uuid4())


def test_a_refresh_token_names_its_agent_token() -> None:
    principal = agent_principal()

    refresh_token = refresh_token_issue(principal)

    assert refresh_token_subject(refresh_token).agent_token_id == principal.agent_token_id


def test_a_refresh_token_is_not_accepted_by_the_registry(settings) -> None:
    refresh_token = refresh_token_issue(agent_principal())

    with pytest.raises(jwt.InvalidAudienceError):
        access_claims(refresh_token)


def test_only_an_agent_tokens_principal_gets_a_refresh_token() -> None:
    with pytest.raises(ValueError, match="Only an agent token's principal gets a refresh token."):
        refresh_token_issue(OWNER)


def test_an_access_token_is_not_a_refresh_token() -> None:
    access_token = token_issue(agent_principal(), []).token

    with pytest.raises(InvalidRefreshToken, match="Audience doesn't match"):
        refresh_token_subject(access_token)


def test_an_access_token_is_not_a_refresh_token_even_when_service_and_issuer_are_equal(
    settings,
) -> None:
    settings.REGISTRY_TOKEN_SERVICE = settings.REGISTRY_TOKEN_ISSUER
    access_token = token_issue(agent_principal(), []).token

    with pytest.raises(InvalidRefreshToken, match="This is not a refresh token."):
        refresh_token_subject(access_token)


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "e30.e30.", "x" * 5000])
def test_garbage_is_not_a_refresh_token(garbage: str) -> None:
    with pytest.raises(InvalidRefreshToken):
        refresh_token_subject(garbage)


def refresh_claims(settings, agent_token_id: uuid.UUID) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": settings.REGISTRY_TOKEN_ISSUER,
        "sub": "s",
        "aud": settings.REGISTRY_TOKEN_ISSUER,
        "exp": now + 3600,
        "nbf": now,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "use": "refresh",
        "agent_token": str(agent_token_id),
    }


@pytest.mark.django_db
def test_a_refresh_token_signed_by_a_key_we_do_not_hold_is_refused(settings) -> None:
    foreign = ec.generate_private_key(ec.SECP256R1())
    claims = refresh_claims(settings, uuid.uuid4())
    current = key_store().load().current

    claiming_our_kid = jwt.encode(
        claims, foreign, algorithm="ES256", headers={"kid": current.kid, "x5c": current.x5c}
    )
    its_own_kid = jwt.encode(
        claims, foreign, algorithm="ES256", headers={"kid": libtrust_kid(foreign.public_key())}
    )

    with pytest.raises(InvalidRefreshToken, match="Signature verification failed"):
        refresh_token_subject(claiming_our_kid)
    with pytest.raises(InvalidRefreshToken, match="not signed by a key we accept"):
        refresh_token_subject(its_own_kid)


def test_a_refresh_token_without_an_agent_token_is_refused(settings) -> None:
    current = key_store().load().current
    claims = refresh_claims(settings, uuid.uuid4())
    claims["agent_token"] = "not-a-uuid"
    token = jwt.encode(claims, current.private_key, algorithm="ES256", headers={"kid": current.kid})

    with pytest.raises(InvalidRefreshToken, match="names no agent token"):
        refresh_token_subject(token)


@pytest.mark.django_db
def test_a_refresh_token_of_the_previous_key_is_accepted_until_its_window_closes(
    tmp_path: Path, settings
) -> None:
    principal = agent_principal()
    refresh_token = refresh_token_issue(principal)

    rotate_keys(KeyFolder(settings.REGISTRY_KEYS_DIR))  # the session's CA, in the database

    assert key_store().load().current.kid != jwt.get_unverified_header(refresh_token)["kid"]
    assert refresh_token_subject(refresh_token).agent_token_id == principal.agent_token_id
    settings.REGISTRY_TOKEN_PULL_TTL_SECONDS = 0
    settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS = 0
    settings.REGISTRY_REFRESH_TOKEN_TTL_SECONDS = 0  # the window closes at the rotation
    key_store().forget()  # windows are worked out when the keys are read
    with pytest.raises(InvalidRefreshToken, match="not signed by a key we accept"):
        refresh_token_subject(refresh_token)


@given(st.binary(max_size=400))
def test_b64url_is_pyjwts_base64url(data: bytes) -> None:
    assert signing.b64url(data) == base64url_encode(data)


@pytest.mark.django_db
def test_a_refresh_token_of_a_rotation_this_process_has_not_loaded_yet_is_accepted(
    settings,
) -> None:
    """Another replica rotated (a row this process has not read: its clock stands still): the
    unknown key id makes it look at the database at once."""
    before = key_store().load().current.kid
    principal = agent_principal()
    with mock.patch.object(key_store(), "forget"):  # as if another process had rotated
        rotate_keys(KeyFolder(settings.REGISTRY_KEYS_DIR))
    newest = TokenSigningKey.objects.order_by("-issued_at").first()
    assert newest is not None
    assert key_store().load().current.kid == before != newest.kid  # not read yet
    other = KeyStore()
    other.forget()
    with mock.patch.object(signing, "key_store", return_value=other):
        refresh_token = refresh_token_issue(principal)  # signed "there" with the new key
    assert jwt.get_unverified_header(refresh_token)["kid"] == newest.kid

    assert refresh_token_subject(refresh_token).agent_token_id == principal.agent_token_id
    assert key_store().load().current.kid == newest.kid  # and signs with it from now on


@pytest.mark.django_db
def test_a_key_of_another_ca_or_past_its_window_is_refused_after_a_look(settings) -> None:
    other_ca = KeyFolder(settings.REGISTRY_KEYS_DIR + "-other")
    ca_key, ca_certificate = other_ca.create_ca()
    foreign_key = issue_signing_key(ca_key, ca_certificate)
    foreign = jwt.encode(
        refresh_claims(settings, uuid.uuid4()),
        foreign_key.private_key,
        algorithm="ES256",
        headers={"kid": foreign_key.kid, "x5c": foreign_key.x5c},
    )
    stale = refresh_token_issue(agent_principal())
    settings.REGISTRY_TOKEN_PULL_TTL_SECONDS = 0
    settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS = 0
    settings.REGISTRY_REFRESH_TOKEN_TTL_SECONDS = 0
    rotate_keys(KeyFolder(settings.REGISTRY_KEYS_DIR))
    rotate_keys(KeyFolder(settings.REGISTRY_KEYS_DIR))

    for token in (foreign, stale):
        with pytest.raises(InvalidRefreshToken, match="not signed by a key we accept"):
            refresh_token_subject(token)
