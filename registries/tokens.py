"""Registry tokens: what a caller may do in the registry, and the JWT that says so.

Distribution's token authentication (https://distribution.github.io/distribution/spec/auth/token/):
the registry answers 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; the
client asks the realm (our token endpoint) for those scopes; we answer with a JWT whose ``access``
claim lists what we grant. The registry checks ``iss``, ``aud`` (a single string), ``exp``/``nbf``
and the signature (by the ``x5c`` chain up to the CA in its ``rootcertbundle``).

A repository of the caller's own namespace that it asks anything of gets every action the caller
may do there (pull, push and delete), whatever subset was asked: clients such as the Python
``oras`` package, the oras CLI and older Helm ask for ``pull``, then reuse that token to push
(lenient registries serve them). Any other scope the caller may not have is dropped, never an
error: clients ask for extra scopes when they try to mount a blob from another repository, and the
push must go on by plain upload.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from django.conf import settings
from django.core.signals import setting_changed

from registries.key_store import key_store
from registries.keys import utc_now
from registries.signing import new_jti, sign

#: A repository name as Distribution's reference grammar defines it: lower-case path components
#: separated by "/", each alphanumeric runs joined by ".", "_", "__" or dashes.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
REPOSITORY_NAME_MAX_LENGTH = 255

#: Every action Distribution knows on a repository; "*" means all of them (``skopeo delete``
#: asks for it).
REPOSITORY_ACTIONS = ("pull", "push", "delete", "*")
#: What a principal is granted on a repository of its namespace that it asks any known action of.
OWNED_REPOSITORY_ACTIONS = ("pull", "push", "delete")
#: What it is granted there while its registry refuses pushes (its quota's hard limit): deleting
#: is how the space is given back.
OWNED_WITHOUT_PUSH = ("pull", "delete")
CATALOG_SCOPE = ("registry", "catalog", "*")

CONTROL_PLANE_SUBJECT = "controlplane"
REFRESH_TOKEN_USE = "refresh"  # noqa: S105 - a claim value, not a secret


@dataclass(frozen=True)
class Scope:
    """One requested ``type:name:actions``, e.g. ``repository:acme/0123456789ab/base:pull,push``."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, raw: str) -> Scope | None:
        """The type is up to the first ":", the actions after the last, the name in between.
        Returns None for anything that does not have all three."""
        type_, _, rest = raw.partition(":")
        name, separator, actions = rest.rpartition(":")
        if not type_ or not name or not separator:
            return None
        return cls(type_, name, tuple(dict.fromkeys(a for a in actions.split(",") if a)))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """``scope`` parameters as clients send them: repeated, and each may hold several scopes
    separated by spaces (the OAuth2 form). Unparseable ones are dropped."""
    return [
        scope
        for value in values
        for scope in (
            _parse_value(value) if len(value) <= CACHED_VALUE_LENGTH else _parse_uncached(value)
        )
    ]


#: ``scope`` values up to this long are parsed once per process (``_parse_value``); clients send
#: the same few again and again (an image's repository, a blob mount's source).
CACHED_VALUE_LENGTH = 512
#: How many parsed ``scope`` values and grants each process keeps (least recently used first out).
CACHE_ENTRIES = 256


def _parse_uncached(value: str) -> tuple[Scope, ...]:
    scopes = (Scope.parse(item) for item in value.split())
    return tuple(scope for scope in scopes if scope is not None)


_parse_value = functools.lru_cache(maxsize=CACHE_ENTRIES)(_parse_uncached)


@dataclass(frozen=True)
class Principal:
    """Who is asking, and where they may act.

    ``namespace`` is the one repository namespace the principal may pull, push and delete in
    (the repository named after it and everything under it); None for nowhere. Only the control
    plane itself may list the catalog.
    """

    subject: str
    namespace: str | None = None
    catalog: bool = False
    #: The cluster agent token behind the principal, for refresh tokens.
    agent_token_id: uuid.UUID | None = None
    #: The job credential the principal authenticated with, if any: its refresh tokens name it,
    #: so that they end with it (``registries.services.job_credentials``).
    job_credential_id: uuid.UUID | None = None
    #: The ``service`` of the backend its namespace lives on (None: ``REGISTRY_TOKEN_SERVICE``):
    #: the token endpoint grants the namespace only in tokens for that service.
    service: str | None = None
    #: When the credential behind the principal stops working (the earliest of its agent token's
    #: and its job credential's ``expires_at``); no token issued to it outlives that moment.
    expires_at: dt.datetime | None = None
    #: Why no push is granted in ``namespace`` ("" when it is): the registry's quota
    #: (``Registry.push_refused``, read with the namespace).
    push_refused: str = ""
    #: Until when its namespace's backend refuses pushes: a garbage collection's maintenance
    #: window (``RegistryBackend.pushes_refused_until``, read with the namespace).
    pushes_refused_until: dt.datetime | None = None

    @functools.cached_property
    def expires_at_timestamp(self) -> int:
        """``expires_at`` in whole seconds since the epoch (the principal is kept and asked
        again by every token while it is cached); 0 without one."""
        return 0 if self.expires_at is None else int(self.expires_at.timestamp())

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(subject="")

    @classmethod
    def control_plane(cls, namespace: str) -> Principal:
        return cls(subject=CONTROL_PLANE_SUBJECT, namespace=namespace, catalog=True)

    def owns(self, repository: str) -> bool:
        if self.namespace is None or len(repository) > REPOSITORY_NAME_MAX_LENGTH:
            return False
        if not REPOSITORY_NAME.fullmatch(repository):
            return False
        return repository == self.namespace or repository.startswith(f"{self.namespace}/")


def grant(principal: Principal, scopes: Iterable[Scope]) -> list[dict[str, Any]]:
    """The ``access`` claim: for each requested scope, what ``principal`` may do there.

    A repository of the principal's namespace asked for with any known action gets all of
    ``OWNED_REPOSITORY_ACTIONS`` (and ``*`` too when asked, as ``skopeo delete`` does), since
    clients that ask for ``pull`` may push with the same token. Scopes for the same resource are
    merged; a scope left with no action (outside the namespace, unknown actions only, or the
    catalog for anyone but the control plane) is left out.
    """
    return _grant(principal, scopes, widen=True)


def push_refusal(principal: Principal, scopes: Iterable[Scope]) -> str:
    """Why ``principal`` may not have what it asks (its registry refuses pushes and it asks to
    push in its namespace), or "" when it may. A request for ``*`` (``skopeo delete``) is not
    refused: it gets pull and delete, so that tags can still be deleted to free space."""
    if not principal.push_refused:
        return ""
    for scope in scopes:
        if scope.type == "repository" and "push" in scope.actions and principal.owns(scope.name):
            return principal.push_refused
    return ""


@dataclass(frozen=True)
class Grant:
    """What ``token_issue`` works out from a principal and the scopes it asked for: the
    ``access`` claim (``grant``), whether what was asked can only read (the token's lifetime,
    ``lifetime_for``), and the audit log's ``requested`` and ``granted`` fields."""

    access: tuple[dict[str, Any], ...]
    read_only: bool
    requested: str
    granted: str


#: Grants with at most this many scopes are remembered (``grant_for``); clients ask for one to
#: three.
CACHED_GRANT_SCOPES = 4


def grant_for(principal: Principal, scopes: Iterable[Scope]) -> Grant:
    """The ``Grant`` of ``scopes`` to ``principal``; remembered per process for the last
    ``CACHE_ENTRIES`` (principal, scopes) pairs (a grant depends on nothing else: a principal
    that changes, a narrower namespace or a later expiry, is another key)."""
    asked = tuple(scopes)
    if len(asked) <= CACHED_GRANT_SCOPES:
        return _cached_grant(principal, asked)
    return _grant_for(principal, asked)


def _grant_for(principal: Principal, scopes: tuple[Scope, ...]) -> Grant:
    access = grant(principal, scopes)
    asked = _grant(principal, scopes, widen=False)
    return Grant(
        access=tuple(access),
        read_only=all(set(entry["actions"]) <= {"pull"} for entry in asked),
        requested=" ".join(str(scope) for scope in scopes),
        granted=" ".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access),
    )


_cached_grant = functools.lru_cache(maxsize=CACHE_ENTRIES)(_grant_for)


def _grant(principal: Principal, scopes: Iterable[Scope], *, widen: bool) -> list[dict[str, Any]]:
    """``grant``; with ``widen=False``, only the actions asked for (what the token's lifetime
    follows)."""
    granted: dict[tuple[str, str], list[str]] = {}
    refused = bool(principal.push_refused)
    for scope in scopes:
        if scope.type == "repository" and principal.owns(scope.name):
            actions = [a for a in scope.actions if a in REPOSITORY_ACTIONS]
            if actions and widen:
                actions = [*OWNED_REPOSITORY_ACTIONS, *(a for a in actions if a == "*")]
            if refused:  # neither "push" nor "*" (which is every action, push included)
                actions = [a for a in actions if a in OWNED_WITHOUT_PUSH]
        elif (scope.type, scope.name) == CATALOG_SCOPE[:2] and principal.catalog:
            actions = [a for a in scope.actions if a == CATALOG_SCOPE[2]]
        else:
            continue
        if actions:
            merged = granted.setdefault((scope.type, scope.name), [])
            merged.extend(a for a in actions if a not in merged)
    return [
        {"type": type_, "name": name, "actions": actions}
        for (type_, name), actions in granted.items()
    ]


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: dt.datetime
    #: What the access was worked out from (the audit log's fields too).
    grant: Grant
    access: list[dict[str, Any]] = field(default_factory=list)

    def as_response(self) -> dict[str, Any]:
        """The token endpoint's answer; ``access_token`` is the OAuth2 name of the same token."""
        return {
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": self._issued_at_text(),
        }

    def as_json(self) -> bytes:
        """``as_response()`` as the REST framework's ``JSONRenderer`` writes it (compact), without
        an encoder: the token holds base64url segments and dots only, ``issued_at`` digits and
        ``-:.TZ``, so nothing in either needs JSON escaping. Encoding it is a scan of every
        character of the token, twice (``tests/registries/test_token_render.py``)."""
        token = self.token
        return (
            f'{{"token":"{token}","access_token":"{token}","expires_in":{self.expires_in:d},'
            f'"issued_at":"{self._issued_at_text()}"}}'
        ).encode()

    def _issued_at_text(self) -> str:
        return self.issued_at.isoformat().replace("+00:00", "Z")


def lifetime_for(access: list[dict[str, Any]]) -> int:
    """Short for a grant that can only read; long enough for a big push otherwise.

    ``token_issue`` passes the actions asked for, not the widened grant: a client that asked only
    to pull gets the short lifetime even though its token may push, so that a leaked pull token
    is not good for an hour.
    """
    return _lifetime(read_only=all(set(entry["actions"]) <= {"pull"} for entry in access))


def _lifetime(*, read_only: bool) -> int:
    found = token_settings()
    return found.pull_ttl if read_only else found.push_ttl


@dataclass(frozen=True)
class TokenSettings:
    """The settings every access token reads: ``REGISTRY_TOKEN_ISSUER``, ``_SERVICE``,
    ``_PULL_TTL_SECONDS`` and ``_PUSH_TTL_SECONDS``."""

    issuer: str
    service: str
    pull_ttl: int
    push_ttl: int


@functools.cache
def token_settings() -> TokenSettings:
    """``TokenSettings``, read once per process rather than four times a token (each read of
    ``django.conf.settings`` is a few Python calls); read again after a setting changes
    (``setting_changed``: tests)."""
    return TokenSettings(
        issuer=settings.REGISTRY_TOKEN_ISSUER,
        service=settings.REGISTRY_TOKEN_SERVICE,
        pull_ttl=int(settings.REGISTRY_TOKEN_PULL_TTL_SECONDS),
        push_ttl=int(settings.REGISTRY_TOKEN_PUSH_TTL_SECONDS),
    )


def _setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("REGISTRY_TOKEN_"):
        token_settings.cache_clear()


setting_changed.connect(_setting_changed, dispatch_uid="registries.tokens.token_settings")


def _expiry(principal: Principal, now: int, lifetime: int) -> int:
    """``now + lifetime``, but never after the principal's credential expires. A revoked
    credential cannot recall a token already issued: that token works until its ``exp``."""
    exp = now + lifetime
    if principal.expires_at is not None:
        exp = min(exp, principal.expires_at_timestamp)
    return max(exp, now)


def token_issue(
    principal: Principal, scopes: Iterable[Scope], *, service: str | None = None
) -> IssuedToken:
    """A registry token for ``principal`` granting what it may of ``scopes``, for the registry
    backend whose ``service`` (its audience) is given (``REGISTRY_TOKEN_SERVICE`` without one).

    Raises ``registries.keys.SigningKeyMissing`` when there is no key to sign with.
    """
    granted = grant_for(principal, scopes)
    access = [{**entry, "actions": list(entry["actions"])} for entry in granted.access]
    now = utc_now()
    timestamp = int(now.timestamp())
    exp = _expiry(principal, timestamp, _lifetime(read_only=granted.read_only))
    found = token_settings()
    claims = {
        "iss": found.issuer,
        "sub": principal.subject,
        "aud": service or found.service,  # a string: Distribution rejects a list
        "exp": exp,
        "nbf": timestamp,
        "iat": timestamp,
        "jti": new_jti(),
        "access": access,
    }
    return IssuedToken(
        token=sign(claims),
        expires_in=exp - timestamp,
        issued_at=now,
        access=access,
        grant=granted,
    )


def refresh_token_issue(principal: Principal) -> str:
    """A refresh token (OAuth2 ``offline`` access) for an agent-token principal.

    It names the agent token (and the job credential, for a job's principal), not a secret;
    using it checks again that they are still valid, and it expires with them at the latest.
    Its audience is the issuer itself, so the registry never accepts it, and an access token is
    never accepted as a refresh token.
    """
    if principal.agent_token_id is None:
        raise ValueError("Only an agent token's principal gets a refresh token.")
    now = int(utc_now().timestamp())
    return sign(
        {
            "iss": settings.REGISTRY_TOKEN_ISSUER,
            "sub": principal.subject,
            "aud": settings.REGISTRY_TOKEN_ISSUER,
            "exp": _expiry(principal, now, settings.REGISTRY_REFRESH_TOKEN_TTL_SECONDS),
            "nbf": now,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "use": REFRESH_TOKEN_USE,
            "agent_token": str(principal.agent_token_id),
            **(
                {"job_credential": str(principal.job_credential_id)}
                if principal.job_credential_id is not None
                else {}
            ),
        }
    )


class InvalidRefreshToken(Exception):
    pass


@dataclass(frozen=True)
class RefreshSubject:
    """Whom a refresh token was issued to: an agent token, and the job credential if any."""

    agent_token_id: uuid.UUID
    job_credential_id: uuid.UUID | None = None


def refresh_token_subject(refresh_token: str) -> RefreshSubject:
    """The agent token (and job credential) a refresh token of ours names. Raises
    ``InvalidRefreshToken``.

    Accepts the current signing key and each older one within its window (the longest token
    lifetime after the next key was issued); a key id this process does not know is looked up
    in the database (``KeyStore.public_key``: another replica rotated).
    """
    try:
        header = jwt.get_unverified_header(refresh_token)
    except jwt.InvalidTokenError as exc:
        raise InvalidRefreshToken("The refresh token is malformed.") from exc
    public_key = key_store().public_key(header.get("kid"))
    if public_key is None:
        raise InvalidRefreshToken("The refresh token was not signed by a key we accept.")
    try:
        claims = jwt.decode(
            refresh_token,
            public_key,
            algorithms=["ES256"],
            audience=settings.REGISTRY_TOKEN_ISSUER,
            issuer=settings.REGISTRY_TOKEN_ISSUER,
            options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss"]},
        )
    except jwt.InvalidTokenError as exc:
        raise InvalidRefreshToken(f"The refresh token is not valid: {exc}.") from exc
    if claims.get("use") != REFRESH_TOKEN_USE:
        raise InvalidRefreshToken("This is not a refresh token.")
    try:
        agent_token_id = uuid.UUID(str(claims.get("agent_token")))
    except ValueError as exc:
        raise InvalidRefreshToken("The refresh token names no agent token.") from exc
    if "job_credential" not in claims:
        return RefreshSubject(agent_token_id)
    try:
        return RefreshSubject(agent_token_id, uuid.UUID(str(claims["job_credential"])))
    except ValueError as exc:
        raise InvalidRefreshToken("The refresh token names no job credential.") from exc
