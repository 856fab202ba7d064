"""CNCF Distribution (``docker-registry`` 2.8, ``registry:2``/``registry:3``), shared by clusters.

Distribution has no call to create a namespace: a repository exists once something is pushed to
it, and the namespace becomes usable through the tokens we grant for it. Provisioning therefore
checks that the registry demands our tokens (``/v2/`` answers 401 with a challenge naming our
token endpoint) and accepts them (``/v2/`` with a token of ours answers 200). A check that
passed is reused for ``REGISTRY_CHECK_CACHE_SECONDS`` by the process that made it
(``recent_checks``), and every request goes through its thread's keep-alive session
(``shared_session``).

There is no call to delete a repository either: deprovisioning deletes every manifest of every
repository in the namespace by digest, following the catalog and tag lists page by page. The
blobs are reclaimed later by the registry's offline garbage collector.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin

import requests
from django.conf import settings

from registries.backends import Backend
from registries.drivers.base import DriverError, RegistryUnavailable
from registries.drivers.manifests import ManifestDeletion
from registries.drivers.manifests import control_plane_token as _control_plane_token
from registries.tokens import CATALOG_SCOPE, CONTROL_PLANE_SUBJECT, Principal, Scope

API_VERSION_HEADER = "Docker-Distribution-API-Version"
#: Besides 5xx, answers that say "not now" rather than "not this": a timeout, a rate limit.
TRANSIENT_STATUSES = frozenset({408, 429})
#: Every manifest type, so that a HEAD by tag answers the digest of what was pushed as it is.
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ]
)
_CHALLENGE_PARAMETER = re.compile(r'(\w+)="([^"]*)"')
#: The repository in every namespace that the health canary writes to (and cleans up after).
CANARY_REPOSITORY = "controlplane-canary"
#: What tenants read when the registry is not set up for us (the detail is the operators').
NOT_A_REGISTRY = "The registry address does not answer as a registry; an operator must fix it"
NOT_OUR_TOKENS = "The registry does not accept this service's tokens; an operator must fix it"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., "service": ...})``."""
    scheme, _, parameters = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAMETER.findall(parameters))


_sessions = threading.local()


def shared_session() -> requests.Session:
    """This thread's HTTP session to the registries: every request of the thread reuses its
    keep-alive connections instead of opening one per check. One per thread, since ``requests``
    does not promise that a session is thread-safe (the threads pool runs tasks side by side);
    a forked child (a prefork worker) makes its own rather than use its parent's sockets."""
    session: requests.Session | None = getattr(_sessions, "session", None)
    if session is None or _sessions.pid != os.getpid():
        session = requests.Session()
        _sessions.session, _sessions.pid = session, os.getpid()
    return session


@dataclass(frozen=True)
class _Check:
    """A check that passed: what it was made against, what it saw, until when it stands."""

    against: tuple[str, ...]
    seen: str
    until: float  # time.monotonic()


class RecentChecks:
    """The last passing ``check_api`` of each registry in this process, reused for
    ``REGISTRY_CHECK_CACHE_SECONDS``: provisioning a burst of registries checks the registry once,
    not once each. A check made against other settings (realm, service, issuer, keys) does not
    count, and any request to the registry that finds it unavailable forgets its check at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checks: dict[str, _Check] = {}

    def get(self, api_url: str, service: str | None = None) -> str | None:
        """What the check of ``api_url`` saw, if it passed recently against these settings."""
        check = self._checks.get(api_url)
        against = _check_settings(service)
        if check is None or check.against != against or check.until <= time.monotonic():
            return None
        return check.seen

    def put(self, api_url: str, seen: str, service: str | None = None) -> None:
        until = time.monotonic() + settings.REGISTRY_CHECK_CACHE_SECONDS
        with self._lock:
            self._checks[api_url] = _Check(_check_settings(service), seen, until)

    def forget(self, api_url: str | None = None) -> None:
        """Forget the check of ``api_url`` (every check, without one)."""
        with self._lock:
            if api_url is None:
                self._checks.clear()
            else:
                self._checks.pop(api_url, None)


def _check_settings(service: str | None = None) -> tuple[str, ...]:
    """What a check depends on besides the registry's address (and its backend's service)."""
    return (
        settings.REGISTRY_TOKEN_REALM,
        service or settings.REGISTRY_TOKEN_SERVICE,
        settings.REGISTRY_TOKEN_SERVICE,
        settings.REGISTRY_TOKEN_ISSUER,
        settings.REGISTRY_KEYS_DIR,
    )


#: This process's recent checks, shared by every driver instance.
recent_checks = RecentChecks()


@dataclass(frozen=True)
class DistributionDriver(ManifestDeletion):
    api_url: str
    public_host: str
    timeout: float
    name: str = "distribution"
    #: The ``service`` the registry names in its challenge and accepts as tokens' audience.
    service: str = ""
    #: Entries per page of the catalog and tag lists (Distribution's default is 100).
    page_size: int = 100
    session: requests.Session = field(default_factory=shared_session, compare=False)

    @classmethod
    def from_settings(cls) -> DistributionDriver:
        return cls(
            api_url=settings.REGISTRY_URL,
            public_host=settings.REGISTRY_PUBLIC_HOST,
            timeout=settings.REGISTRY_HTTP_TIMEOUT,
            service=settings.REGISTRY_TOKEN_SERVICE,
        )

    @classmethod
    def for_backend(cls, backend: Backend | None) -> DistributionDriver:
        """The driver of ``backend``'s registry (the settings' registry without one)."""
        if backend is None:
            return cls.from_settings()
        return cls(
            api_url=backend.api_url,
            public_host=backend.public_host,
            timeout=settings.REGISTRY_HTTP_TIMEOUT,
            service=backend.token_service,
        )

    @property
    def token_service(self) -> str:
        return self.service or settings.REGISTRY_TOKEN_SERVICE

    def provision(self, *, namespace: str) -> str:
        """The namespace needs nothing of the registry but the check (see the module): a check
        that passed within ``REGISTRY_CHECK_CACHE_SECONDS`` is not made again."""
        if recent_checks.get(self.api_url, self.token_service) is None:
            self.check_api()
        return self._namespace_url(namespace)

    def provision_cached(self, *, namespace: str) -> str | None:
        if recent_checks.get(self.api_url, self.token_service) is None:
            return None
        return self._namespace_url(namespace)

    def _namespace_url(self, namespace: str) -> str:
        return f"{self.public_host}/{namespace}"

    def check_api(self) -> str:
        """Check now that the registry demands our tokens and accepts them; return what was
        seen, and remember it for ``provision`` (``recent_checks``).

        Raises ``RegistryUnavailable`` when it does not answer (worth retrying), and
        ``DriverError`` when it answers but is not configured for us (retrying will not help).
        """
        recent_checks.forget(self.api_url)
        seen = self._check_api()
        recent_checks.put(self.api_url, seen, self.token_service)
        return seen

    def _check_api(self) -> str:
        endpoint = self._url("/v2/")
        response = self._request("GET", endpoint, expect=(200, 401))
        if response.headers.get(API_VERSION_HEADER) != "registry/2.0":
            raise DriverError(
                f"GET {endpoint} did not come from a registry (no '{API_VERSION_HEADER}: "
                "registry/2.0' header). Check REGISTRY_URL.",
                public=NOT_A_REGISTRY,
            )
        if response.status_code == 200:
            raise DriverError(
                f"GET {endpoint} answered 200 without a token: the registry lets anyone in. "
                "Configure its token authentication with `python manage.py registry_config`.",
                public=NOT_OUR_TOKENS,
            )
        scheme, challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        expected = {
            "realm": settings.REGISTRY_TOKEN_REALM,
            "service": self.token_service,
        }
        seen = {key: challenge.get(key) for key in expected}
        if scheme != "bearer" or seen != expected:
            raise DriverError(
                f"GET {endpoint} challenges with {scheme} {seen}, not our token endpoint "
                f"{expected}. Regenerate its configuration with `python manage.py "
                "registry_config` and restart it.",
                public=NOT_OUR_TOKENS,
            )
        token = _control_plane_token(
            Principal(subject=CONTROL_PLANE_SUBJECT), [], self.token_service
        )
        accepted = self._request(
            "GET", endpoint, token=token, expect=(200, 401), what="GET /v2/ with our token"
        )
        if accepted.status_code != 200:
            raise DriverError(
                f"The registry at {self.api_url} rejects tokens signed by our key "
                f"({accepted.headers.get('WWW-Authenticate', 'no challenge')}). Its "
                f"rootcertbundle must be our CA certificate ({settings.REGISTRY_KEYS_DIR}/ca.crt),"
                f" issuer {settings.REGISTRY_TOKEN_ISSUER!r} and service "
                f"{self.token_service!r}: regenerate its configuration with "
                "`python manage.py registry_config` and restart it.",
                public=NOT_OUR_TOKENS,
            )
        return f"GET {endpoint}: 401 with our token challenge, 200 with our token"

    def canary(self, *, namespace: str) -> str:
        """Push a small random blob to ``<namespace>/controlplane-canary``, read it back and
        delete it, with a control-plane token scoped to that repository; describe what was seen.

        A blob, not an image: no tag or manifest is ever written, so the canary is invisible to
        the namespace's jobs and to deprovisioning. Whatever step fails, the upload or the blob
        is deleted on the way out (best effort: the registry may be what failed).
        """
        repository = f"{namespace}/{CANARY_REPOSITORY}"
        token = _control_plane_token(
            Principal.control_plane(namespace),
            [Scope("repository", repository, ("pull", "push", "delete"))],
            self.token_service,
        )
        body = b"controlplane canary " + secrets.token_hex(16).encode()
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        blob = self._url(f"/v2/{repository}/blobs/{digest}")
        upload = self._request(
            "POST", self._url(f"/v2/{repository}/blobs/uploads/"), token=token, expect=(202,)
        )
        if not upload.headers.get("Location"):
            raise DriverError(
                f"POST {repository}/blobs/uploads/ answered no Location header.",
                public="The registry answered an upload without its location",
            )
        location = urljoin(f"{self.api_url}/", upload.headers["Location"])
        cleanup = location  # the upload until it is complete, then the blob
        try:
            separator = "&" if "?" in location else "?"
            self._request(
                "PUT",
                f"{location}{separator}digest={digest}",
                token=token,
                expect=(201,),
                headers={"Content-Type": "application/octet-stream"},
                data=body,
                what=f"PUT the canary blob to {repository}",
            )
            cleanup = blob
            read = self._request("GET", blob, token=token, expect=(200,))
            if read.content != body:
                raise DriverError(
                    f"GET {blob} answered other bytes than were pushed.",
                    public="The registry answered other bytes than were pushed",
                )
            self._request("DELETE", blob, token=token, expect=(202,))
            cleanup = ""
        finally:
            if cleanup:
                with contextlib.suppress(DriverError):
                    self._request("DELETE", cleanup, token=token, expect=(202, 204, 404))
        return f"pushed, read back and deleted {digest} in {repository}"

    def deprovision(self, *, namespace: str) -> int:
        """Delete every manifest in ``namespace``; return how many were deleted."""
        deleted = 0
        for repository in self.repositories(namespace=namespace):
            token = _control_plane_token(
                Principal.control_plane(namespace),
                [Scope("repository", repository, ("*",))],
                self.token_service,
            )
            for tag in self.tags(repository, token=token):
                digest = self._manifest_digest(repository, tag, token=token)
                if digest is None:
                    continue  # deleted with another tag of the same manifest
                response = self._request(
                    "DELETE",
                    self._url(f"/v2/{repository}/manifests/{digest}"),
                    token=token,
                    expect=(202, 404),  # 404: another sweep got there first
                )
                deleted += response.status_code == 202
        return deleted

    def repositories(self, *, namespace: str) -> Iterator[str]:
        """Repositories in ``namespace`` (the catalog, followed page by page)."""
        token = _control_plane_token(
            Principal.control_plane(namespace),
            [Scope(*CATALOG_SCOPE[:2], ("*",))],
            self.token_service,
        )
        path = f"/v2/_catalog?n={self.page_size}"
        for page in self._pages(path, token=token, gone=()):
            for repository in page.get("repositories") or []:
                if repository == namespace or repository.startswith(f"{namespace}/"):
                    yield repository

    def tags(self, repository: str, *, token: str) -> list[str]:
        """Every tag of ``repository``, all pages read before anything is deleted."""
        path = f"/v2/{repository}/tags/list?n={self.page_size}"
        # 404: the repository has no tag left (Distribution answers NAME_UNKNOWN).
        pages = self._pages(path, token=token, gone=(404,))
        return [tag for page in pages for tag in page.get("tags") or []]

    def _manifest_digest(self, repository: str, tag: str, *, token: str) -> str | None:
        response = self._request(
            "HEAD",
            self._url(f"/v2/{repository}/manifests/{quote(tag)}"),
            token=token,
            expect=(200, 404),
            headers={"Accept": MANIFEST_TYPES},
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise DriverError(
                f"HEAD {repository}:{tag} answered no Docker-Content-Digest.",
                public="The registry answered a manifest without its digest",
            )
        return digest

    def _pages(self, path: str, *, token: str, gone: tuple[int, ...]) -> Iterator[dict[str, Any]]:
        """The JSON pages of a list, following ``Link: <...>; rel="next"``. A status in ``gone``
        means an empty list."""
        url: str | None = self._url(path)
        while url is not None:
            response = self._request("GET", url, token=token, expect=(200, *gone))
            if response.status_code in gone:
                return
            yield response.json()
            next_page = response.links.get("next", {}).get("url")
            url = urljoin(self.api_url, next_page) if next_page else None

    def _url(self, path: str) -> str:
        return f"{self.api_url}{path}"

    def _request(
        self,
        method: str,
        url: str,
        *,
        expect: tuple[int, ...],
        token: str | None = None,
        headers: dict[str, str] | None = None,
        what: str | None = None,
        data: bytes | None = None,
    ) -> requests.Response:
        what = what or f"{method} {url}"
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self.session.request(
                method, url, headers=headers, data=data, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            recent_checks.forget(self.api_url)
            raise RegistryUnavailable(
                f"{what} failed: {exc}", public=f"The registry did not answer ({_why(exc)})"
            ) from exc
        status = response.status_code
        if status >= 500 or status in TRANSIENT_STATUSES:
            recent_checks.forget(self.api_url)
            raise RegistryUnavailable(
                f"{what} answered {status}", public=f"The registry answered {status}"
            )
        if status not in expect:
            raise DriverError(
                f"{what} answered {status}{_registry_error(response)}; expected "
                f"{' or '.join(map(str, expect))} from a registry. Check REGISTRY_URL.",
                public=f"The registry answered {status}, which a registry configured for this "
                "service does not; an operator must check it",
            )
        return response


def _registry_error(response: requests.Response) -> str:
    """`` (<code>: <message>)`` from a registry's JSON error body, or nothing."""
    try:
        error = response.json()["errors"][0]
        return f" ({error['code']}: {error['message']})"
    except (ValueError, LookupError, TypeError):
        return ""


def _why(exc: requests.RequestException) -> str:
    """What went wrong on the way to the registry, in words, without hosts or library text."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if "Connection refused" in text:
            return "connection refused"
        if "Name or service not known" in text or "Failed to resolve" in text:
            return "its name did not resolve"
        if "Connection reset" in text or "RemoteDisconnected" in text:
            return "connection closed"
        return "could not connect"
    return "the request failed"
