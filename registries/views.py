"""The registry's token endpoint (``REGISTRY_TOKEN_REALM``), as Docker clients call it.

``GET /registry/token?service=...&scope=...&account=...`` with HTTP Basic credentials, whose
password is a cluster agent token or a job's registry credential (``bkrc_...``, which the agent
hook writes into the job's auth file; ``registries.agent``), with any user name; or ``POST`` an
OAuth2 form with ``grant_type=password`` (``username``, ``password``) or
``grant_type=refresh_token`` (``refresh_token``). Both answer ``{token, access_token,
expires_in, issued_at}``, plus a ``refresh_token`` when offline access was asked for
(``offline_token=true`` or ``access_type=offline``), which is what ``docker login`` stores
instead of the password.

No credentials get a token with an empty grant, as the protocol expects. Wrong, expired or
revoked credentials get 401. Errors carry our ``message`` and Distribution's ``errors`` list, so
that docker, skopeo and buildah print the reason.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from django.utils import timezone
from prometheus_client import Counter, Histogram
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.interface import agent_token_check_address
from controlplane import metrics
from controlplane.api.authentication import basic_password
from controlplane.api.caching import no_store
from controlplane.api.fast_path import FastPathAPIView, plain_request
from registries.backends import backend_services
from registries.keys import SigningKeyMissing
from registries.models import JOB_CREDENTIAL_PREFIX
from registries.selectors import (
    RegistryCredential,
    registry_credential_for_refresh,
    registry_credential_for_secret,
)
from registries.tokens import (
    CACHE_ENTRIES,
    InvalidRefreshToken,
    IssuedToken,
    Principal,
    Scope,
    parse_scopes,
    push_refusal,
    refresh_token_issue,
    refresh_token_subject,
    token_issue,
    token_settings,
)

if TYPE_CHECKING:
    from django.http.request import _ImmutableQueryDict

logger = logging.getLogger(__name__)

BAD_CREDENTIALS = "Invalid, expired or revoked agent token."
BAD_JOB_CREDENTIAL = "Invalid, expired or revoked job credential (or its agent token was revoked)."
NOT_BASIC = "Send HTTP Basic credentials: any user name, and a cluster agent token as password."
MALFORMED_BASIC = "Malformed HTTP Basic credentials."
NO_SIGNING_KEY = (
    "The registry token service has no signing key: an operator must run "
    "`python manage.py registry_keys init`."
)
#: Clients ask for one to three scopes (the image, and a source to mount blobs from); a request
#: for many more is refused rather than signed into an oversized token.
MAX_SCOPES = 50
#: Distribution's error codes, for clients that read its ``errors`` list.
ERROR_CODES = {400: "DENIED", 401: "UNAUTHORIZED", 403: "DENIED", 503: "UNAVAILABLE"}
_JSON = JSONRenderer()
_JSON_ENCODER = json.JSONEncoder(
    ensure_ascii=_JSON.ensure_ascii,
    allow_nan=not _JSON.strict,
    separators=(",", ":") if _JSON.compact else (", ", ": "),
)
#: Each outcome's request counter and latency histogram (``labels`` looked up once).
_COUNTED: dict[str, tuple[Counter, Histogram]] = {}


def _render(answer: dict[str, Any]) -> bytes:
    """What ``JSONRenderer().render(answer)`` makes of an answer of strings and numbers, with
    one encoder built once."""
    text = _JSON_ENCODER.encode(answer)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


#: Query strings up to this long are parsed once per process (``_query``): a client asks for the
#: same scopes again and again (its image's repository), so the same query string comes back.
CACHED_QUERY_LENGTH = 1024


@functools.lru_cache(maxsize=CACHE_ENTRIES)
def _query(raw: str, encoding: str, max_fields: int | None) -> _ImmutableQueryDict:
    """What ``WSGIRequest.GET`` makes of ``QUERY_STRING`` (``raw``, as the server passed it):
    the same immutable ``QueryDict``, shared by the requests that send the same string (nothing
    on the token endpoint's paths changes one). The settings it depends on are in the key.
    ``TooManyFieldsSent`` is raised, not remembered."""
    return QueryDict(raw.encode("iso-8859-1"), encoding=encoding)


@functools.cache
def _query_settings() -> tuple[str, int | None]:
    """``DEFAULT_CHARSET`` and ``DATA_UPLOAD_MAX_NUMBER_FIELDS``, read once per process (again
    after a setting changes: tests), as ``token_settings``."""
    return settings.DEFAULT_CHARSET, settings.DATA_UPLOAD_MAX_NUMBER_FIELDS


def _query_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in ("DEFAULT_CHARSET", "DATA_UPLOAD_MAX_NUMBER_FIELDS"):
        _query_settings.cache_clear()


setting_changed.connect(_query_setting_changed, dispatch_uid="registries.views.query_settings")


def _share_query(request: HttpRequest) -> None:
    """Give a ``WSGIRequest`` that has not parsed its query string yet the ``QueryDict`` of an
    earlier request with the same one (``_query``); a request that has, or whose query string is
    long or has too many fields, parses its own (``request.GET``, as ``plain_request`` reads it).
    """
    raw = request.META.get("QUERY_STRING", "")
    if "GET" in request.__dict__ or not isinstance(raw, str) or len(raw) > CACHED_QUERY_LENGTH:
        return
    charset, max_fields = _query_settings()
    try:
        request.GET = _query(raw, request.encoding or charset, max_fields)
    except TooManyFieldsSent:
        return


@dataclass(frozen=True)
class _Answer:
    """What the endpoint answers: the token, and a refresh token when offline access was asked."""

    issued: IssuedToken
    refresh_token: str | None = None

    def data(self) -> dict[str, Any]:
        body = self.issued.as_response()
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body

    def json(self) -> bytes:
        """``JSONRenderer().render(self.data())``."""
        if self.refresh_token is None:
            return self.issued.as_json()
        return _render(self.data())


class TokenServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class PushRefused(exceptions.APIException):
    """A push asked for in a namespace whose registry holds its quota's hard limit. 401, not
    403: skopeo, buildah and podman print a token server's error message for a 401 only (for a
    403 they print the status alone; docs/quotas.md has both outputs). Its code is Distribution's
    ``DENIED``: the credentials were fine."""

    status_code = status.HTTP_401_UNAUTHORIZED
    registry_code = "DENIED"

    def __init__(self, detail: str, *, wait: int | None = None) -> None:
        super().__init__(detail)
        #: Seconds to retry after (the ``Retry-After`` header): a maintenance window's end.
        self.wait = wait


#: What a push during a backend's maintenance window is told (docs/retention.md#garbage-collection).
MAINTENANCE_REFUSAL = (
    "Registry maintenance: garbage collection on this registry's backend; pushes are refused "
    "until it ends. Retry after {seconds} seconds."
)


def maintenance_refusal(principal: Principal, scopes: Iterable[Scope]) -> PushRefused | None:
    """The refusal of a request that asks to push (or ``*``) in ``principal``'s namespace while
    a garbage collection holds its backend's window; None otherwise. The window's end is read
    with the namespace (one query, then the credentials' hot cache): no query of its own."""
    until = principal.pushes_refused_until
    if until is None:
        return None
    if not any(
        scope.type == "repository"
        and ("push" in scope.actions or "*" in scope.actions)
        and principal.owns(scope.name)
        for scope in scopes
    ):
        return None
    seconds = math.ceil((until - timezone.now()).total_seconds())
    if seconds <= 0:
        return None
    return PushRefused(MAINTENANCE_REFUSAL.format(seconds=seconds), wait=seconds)


class RegistryTokenView(FastPathAPIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    parser_classes = [FormParser]

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """Counts every answer by outcome, with its latency (two memory writes, no query)."""
        elapsed = metrics.stopwatch()
        response = super().dispatch(request, *args, **kwargs)
        outcome = metrics.http_outcome(response.status_code)
        counted = _COUNTED.get(outcome)
        if counted is None:
            counted = _COUNTED[outcome] = (
                metrics.TOKEN_REQUESTS.labels(outcome),
                metrics.TOKEN_SECONDS.labels(outcome),
            )
        counted[0].inc()
        counted[1].observe(elapsed())
        return response

    def fast(self, request: HttpRequest) -> HttpResponse | None:
        """A ``GET`` for the JSON answer (what every client sends) without the REST framework;
        content negotiation and the other methods go through it."""
        if request.method == "GET":
            _share_query(request)
        plain = plain_request(request, "GET")
        if plain is None:
            return None
        params, _ = plain
        body = self._get(request, params).json()
        return no_store(HttpResponse(body, content_type=_JSON.media_type))

    def get(self, request: Request) -> Response:
        return no_store(Response(self._get(request, request.query_params).data()))

    def _get(self, request: Request | HttpRequest, params: QueryDict) -> _Answer:
        service = self._check_service(params.get("service"))
        password = basic_password(request, not_basic=NOT_BASIC, malformed=MALFORMED_BASIC)
        principal = Principal.anonymous() if password is None else self._authenticate(password)
        # "in" first: a missing key costs QueryDict.get two exceptions.
        offline = "offline_token" in params and params.get("offline_token", "").lower() == "true"
        return self._issue(principal, params.getlist("scope"), offline=offline, service=service)

    def post(self, request: Request) -> Response:
        form = cast(QueryDict, request.data)  # the only parser is FormParser
        service = self._check_service(form.get("service"))
        grant_type = form.get("grant_type")
        if grant_type == "password":
            principal = self._authenticate(form.get("password", ""))
        elif grant_type == "refresh_token":
            principal = self._refresh(form.get("refresh_token", ""))
        else:
            raise exceptions.ParseError(
                "grant_type must be 'password' or 'refresh_token'; "
                "or GET this endpoint with HTTP Basic credentials."
            )
        offline = form.get("access_type") == "offline" or grant_type == "refresh_token"
        answer = self._issue(principal, form.getlist("scope"), offline=offline, service=service)
        return no_store(Response(answer.data()))

    def _check_service(self, service: str | None) -> str:
        """The ``service`` asked for, if it is a registry backend's: the settings' one at once,
        another from the process's copy of the backends (``registries.backends``)."""
        if not service:
            raise exceptions.ParseError("service is required (the registry's challenge names it).")
        expected = token_settings().service
        if service != expected and service not in backend_services(service):
            raise exceptions.ParseError(
                f"This endpoint issues tokens for the service {expected!r} and the other "
                f"registry backends' services, not {service!r}."
            )
        return service

    def _authenticate(self, secret: str) -> Principal:
        credential = registry_credential_for_secret(secret)
        if credential is None:
            job = secret.startswith(JOB_CREDENTIAL_PREFIX)
            raise exceptions.AuthenticationFailed(BAD_JOB_CREDENTIAL if job else BAD_CREDENTIALS)
        return self._principal(credential)

    def _principal(self, credential: RegistryCredential) -> Principal:
        """The credential's principal, if the agent token behind it may be used from here (its
        IP allow-list; 403 otherwise)."""
        agent_token_check_address(credential.agent_token, self.request)
        return credential.principal

    def _refresh(self, refresh_token: str) -> Principal:
        try:
            subject = refresh_token_subject(refresh_token)
        except InvalidRefreshToken as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        credential = registry_credential_for_refresh(
            subject.agent_token_id, subject.job_credential_id
        )
        if credential is None:
            job = subject.job_credential_id is not None
            raise exceptions.AuthenticationFailed(BAD_JOB_CREDENTIAL if job else BAD_CREDENTIALS)
        return self._principal(credential)

    def _issue(
        self, principal: Principal, scope_values: list[str], *, offline: bool, service: str
    ) -> _Answer:
        """The answer: a token for ``service`` granting ``principal`` what it may of the scopes:
        nothing in its namespace unless that lives on the backend of ``service``."""
        if (
            principal.namespace is not None
            and (principal.service or token_settings().service) != service
        ):
            principal = replace(principal, namespace=None)
        scopes = parse_scopes(scope_values)
        if len(scopes) > MAX_SCOPES:
            raise exceptions.ParseError(
                f"Ask for at most {MAX_SCOPES} scopes at once; this request has {len(scopes)}."
            )
        refused = push_refusal(principal, scopes)
        if refused:
            logger.info(
                "registry.token.push_refused",
                extra={"subject": principal.subject, "namespace": principal.namespace},
            )
            raise PushRefused(refused)
        window = maintenance_refusal(principal, scopes)
        if window is not None:
            logger.info(
                "registry.token.maintenance_refused",
                extra={"subject": principal.subject, "service": service},
            )
            raise window
        try:
            issued = token_issue(principal, scopes, service=service)
            refresh_token = (
                refresh_token_issue(principal)
                if offline and principal.agent_token_id is not None
                else None
            )
        except SigningKeyMissing as exc:
            # The log has the folder; the caller only needs to know who must act.
            logger.error("registry.token.no_signing_key", extra={"error": str(exc)})
            raise TokenServiceUnavailable(NO_SIGNING_KEY) from exc
        granted = issued.grant
        logger.info(
            "registry.token.issued",
            extra={
                "subject": principal.subject or "anonymous",
                "requested": granted.requested,
                "granted": granted.granted,
            },
        )
        return _Answer(issued, refresh_token)

    def get_authenticate_header(self, request: Request) -> str:
        return 'Basic realm="registry token"'

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        if isinstance(response.data, dict) and "message" in response.data:
            code = getattr(exc, "registry_code", None) or ERROR_CODES.get(
                response.status_code, "UNKNOWN"
            )
            response.data.setdefault(
                "errors", [{"code": code, "message": response.data["message"]}]
            )
        return response
