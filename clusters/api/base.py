"""The base of every REST API view: authentication, the organization in the URL, scopes and
rate limits, in that order, in one place that views cannot bypass.

- No token, or a bad one: 401.
- A token of another organization: 404, for anything under the organization in the URL,
  whether it exists or not (a token never learns what another organization holds).
- A token without the scope the method needs: 403.
- Over the organization's or the token's rate limit: 429.

Views reach clusters only through ``get_cluster``, ``paginated_clusters`` and
``paginated_queues``, which filter by the token's organization.

The base fails closed. A view names the scope of every method it answers (there is no default
scope to inherit by forgetting), and it cannot override the hooks that do the above
(``SCOPING_HOOKS``; PostHog's ``TeamAndOrgViewSetMixin`` refuses such subclasses the same way):
both are refused when the class is created, and again by ``manage.py check``
(``clusters.checks``), which also sees a handler or hook set on a class afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar, cast

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Field, Model, QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from rest_framework import exceptions, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from clusters.api.authentication import BEARER_TOKEN_REQUIRED, ApiTokenAuthentication
from clusters.models import ApiScope, ApiToken, Cluster, Organization, Queue
from clusters.selectors import api_token_authenticate
from controlplane.api.authentication import authorization_secret
from controlplane.api.fast_path import FastPathAPIView, plain_request
from controlplane.api.memo import render_items
from controlplane.api.pages import CompiledPage
from controlplane.api.pagination import LinkHeaderPagination
from controlplane.api.ratelimit import Budget, RateLimited, Usage, consume
from controlplane.api.renderers import JSONRenderer, PlainJSON
from controlplane.api.serializers import renders_plain_json
from controlplane.compiled import CompiledSelect

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
M = TypeVar("M", bound=Model)
R = TypeVar("R", bound=HttpResponseBase)
_RENDERER = JSONRenderer()

_CHECKS = (
    "authentication, the organization in the URL and the scope are checked there, for every view"
)
_LOOKUPS = (
    "views reach clusters only through it: start from get_cluster(cluster_id) and the "
    "cluster's related managers"
)
#: What scopes a request to the token's organization, and why a subclass may not replace it:
#: one view that did would answer for another organization. There is no escape hatch.
SCOPING_HOOKS = {
    "dispatch": _CHECKS,
    "fast": _CHECKS,
    "_admit": _CHECKS,
    "initial": _CHECKS,
    "perform_authentication": _CHECKS,
    "get_authenticators": _CHECKS,
    "authentication_classes": _CHECKS,
    "check_permissions": _CHECKS,
    "get_permissions": _CHECKS,
    "permission_classes": _CHECKS,
    "permission_denied": _CHECKS,
    "clusters": _LOOKUPS,
    "get_cluster": _LOOKUPS,
    "paginated_clusters": _LOOKUPS,
    "paginated_queues": _LOOKUPS,
}


#: ``OrganizationAPIView.get_cluster``'s query: the cluster by organization and primary key
#: (unordered: there is one).
_organization_cluster = CompiledSelect(
    Cluster,
    lambda organization_id, pk: Cluster.objects.filter(
        organization_id=organization_id, pk=pk
    ).order_by(),
    "organization",
    "id",
)


#: A view's choice of what a list shows: the order, and the relations its responses show.
Shown = Callable[[QuerySet[M]], QuerySet[M]]


@dataclass(frozen=True)
class _Scope(Generic[M]):
    """What a list holds before ``Shown``: ``filter(*values)``, the values prepared as
    ``fields`` (of ``model`` or across its relations) prepare them."""

    model: type[M]
    filter: Callable[..., QuerySet[M]]
    fields: tuple[Field[Any, Any], ...]


#: The organization's clusters.
_CLUSTERS = _Scope(
    Cluster,
    lambda organization_id: Cluster.objects.filter(organization_id=organization_id),
    (Cluster._meta.get_field("organization"),),
)
#: The queues of a cluster if it is the organization's: a semi-join, which PostgreSQL runs as
#: one lookup of the cluster whatever the tables' statistics say (a join on the cluster's
#: organization was planned, on tables not yet analyzed, as a scan of the organization's
#: clusters for each queue: 1.7 against 0.2 ms for 100 queues).
_CLUSTER_QUEUES = _Scope(
    Queue,
    lambda cluster_id, organization_id: Queue.objects.filter(
        cluster__in=Cluster.objects.filter(pk=cluster_id).filter(organization_id=organization_id)
    ),
    (Cluster._meta.get_field("id"), Cluster._meta.get_field("organization")),
)
_compiled_pages: dict[tuple[_Scope[Any], Callable[..., Any]], CompiledPage[Any]] = {}


def _compiled_page(scope: _Scope[M], shown: Shown[M]) -> CompiledPage[M]:
    """The ``CompiledPage`` of ``shown(scope.filter(*values))``: one for each list, made at its
    first request."""
    key = (scope, shown)
    page = _compiled_pages.get(key)
    if page is None:
        page = _compiled_pages[key] = CompiledPage(
            scope.model, lambda *values: shown(scope.filter(*values)), *scope.fields
        )
    return page


class ApiTokenRequired(IsAuthenticated):
    """401 without a valid API token (and, in the schema, no anonymous access)."""

    message = BEARER_TOKEN_REQUIRED


def rate_limit(request: Request | HttpRequest, token: ApiToken) -> None:
    """Count the request against the token's organization's budget and the token's own (429
    over either); ``with_rate_limit_headers`` then reports both on the response."""
    organization_budget = Budget(
        "rest", "RateLimit", str(token.organization_id), settings.API_RATE_LIMIT_ORGANIZATION
    )
    token_budget = Budget(
        "rest_user", "RateLimit-User", str(token.pk), settings.API_RATE_LIMIT_TOKEN
    )
    usages = consume(organization_budget, token_budget)
    request._rate_limit_usages = usages  # type: ignore[union-attr]
    for usage in usages:
        if usage.exceeded:
            raise RateLimited(usage)


def with_rate_limit_headers(request: Request | HttpRequest, response: R) -> R:
    usages: list[Usage] = getattr(request, "_rate_limit_usages", [])
    for usage in usages:
        for name, value in usage.headers().items():
            response[name] = value
    return response


class ApiTokenAPIView(FastPathAPIView):
    """What every view an API token calls shares: the token authenticates (401 with how to
    send one otherwise), and each answer carries the rate-limit headers its request counted."""

    authentication_classes = [ApiTokenAuthentication]
    permission_classes = [ApiTokenRequired]

    token: ApiToken

    def permission_denied(
        self, request: Request, message: str | None = None, code: str | None = None
    ) -> NoReturn:
        if not request.successful_authenticator:  # DRF would say only "not provided"
            raise exceptions.NotAuthenticated(ApiTokenRequired.message)
        super().permission_denied(request, message, code)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        return with_rate_limit_headers(request, response)


class OrganizationAPIView(ApiTokenAPIView):
    permission_classes = [ApiTokenRequired]  # the rest in initial(), in the order above
    # No defaults: a view declares the scopes of the methods it answers (configuration_errors).
    read_scope: str
    write_scope: str

    organization: Organization

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        errors = configuration_errors(cls)
        if errors:
            raise ImproperlyConfigured(" ".join(errors))

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        token = cast(ApiToken, request.auth)  # ApiTokenRequired let only API tokens through
        if token.organization.slug != kwargs.get("org_slug"):
            raise exceptions.NotFound("No organization found")
        self._admit(request, token)

    def fast(self, request: HttpRequest) -> HttpResponseBase | None:
        """A plain ``GET`` (JSON, no format override) from a valid token of the organization
        in the URL, answered by the view's ``get`` without the REST framework's request,
        negotiation and permission walk: the same checks, in the same order, and the same bytes
        (``controlplane.api.fast_path``). Anything else, and the 401 and 404 of the token and
        the organization, the REST framework answers."""
        handler = getattr(self, "get", None)
        if not callable(handler) or plain_request(request, "GET") is None:
            return None
        try:
            secret = authorization_secret(
                request, schemes={"bearer"}, malformed=BEARER_TOKEN_REQUIRED
            )
        except exceptions.APIException:
            return None
        token = api_token_authenticate(secret) if secret else None
        if token is None or token.organization.slug != self.kwargs.get("org_slug"):
            return None
        self._admit(request, token)
        response: HttpResponseBase = handler(request, *self.args, **self.kwargs)
        if isinstance(response, Response):  # rendered as the REST framework renders it
            response.accepted_renderer = _RENDERER
            response.accepted_media_type = _RENDERER.media_type
            response.renderer_context = {}  # type: ignore[attr-defined]
        return with_rate_limit_headers(request, response)

    def _admit(self, request: Request | HttpRequest, token: ApiToken) -> None:
        """What follows the organization check on either path: the rate limits (429), then the
        scope of the method (405 without one, 403 without it)."""
        self.token, self.organization = token, token.organization
        rate_limit(request, self.token)
        reads = request.method in READ_METHODS
        scope: str | None = getattr(self, "read_scope" if reads else "write_scope", None)
        if scope is None:  # no scope declared for the method: the view has no handler for it
            raise exceptions.MethodNotAllowed(cast(str, request.method))
        if not token.has_scope(scope):
            raise exceptions.PermissionDenied(f"This API token needs the {scope} scope.")

    @property
    def user(self) -> User:
        """The owner of the API token: what the API records as ``created_by``."""
        return self.token.user

    # --- lookups, always within the token's organization ------------------------------------

    def clusters(self) -> QuerySet[Cluster]:
        return Cluster.objects.filter(organization=self.organization)

    def get_cluster(self, cluster_id: str) -> Cluster:
        """The organization's cluster ``cluster_id`` (404 otherwise): ``clusters()``' filter and
        the primary key, compiled once (``CompiledSelect``), since every view under a cluster
        starts here and compiling the query each time cost more than running it."""
        key = uuid_or_404(cluster_id, "No cluster found")
        for cluster in _organization_cluster(self.organization.pk, key):
            return cluster
        raise exceptions.NotFound("No cluster found")

    # --- pagination ---------------------------------------------------------------------------

    def paginated(self, queryset: QuerySet[Any], serializer_class: type) -> Response:
        paginator = LinkHeaderPagination()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        data = serializer_class(page, many=True, context=self.serializer_context()).data
        return paginator.get_paginated_response(data)

    def paginated_clusters(self, shown: Shown[Cluster], serializer_class: type) -> Response:
        """``paginated(shown(self.clusters()), serializer_class)``, its query compiled once
        (``controlplane.api.pages``): ``shown`` orders the clusters and joins what a response
        shows of them."""
        page = _compiled_page(_CLUSTERS, shown)
        return self._paginated_compiled(page, (self.organization.pk,), serializer_class)

    def paginated_queues(
        self, cluster_id: str, shown: Shown[Queue], serializer_class: type
    ) -> Response:
        """``paginated(shown(self.get_cluster(cluster_id).queues.all()), serializer_class)``,
        in one query: the page's, filtered by the cluster and the token's organization (see
        ``paginated_clusters``). A page with rows shows that the cluster is the organization's;
        only an empty one, or bad page parameters, look the cluster up, for its 404 (which
        comes before their 400, as on the cluster's other paths)."""
        key = uuid_or_404(cluster_id, "No cluster found")
        page = _compiled_page(_CLUSTER_QUEUES, shown)
        return self._paginated_compiled(
            page,
            (key, self.organization.pk),
            serializer_class,
            check=lambda: self.get_cluster(cluster_id),
        )

    def _paginated_compiled(
        self,
        compiled: CompiledPage[Any],
        values: tuple[Any, ...],
        serializer_class: type,
        *,
        check: Callable[[], object] | None = None,
    ) -> Response:
        """The page of ``compiled(*values)``; ``check`` (a 404 where the list's owner does not
        exist) runs before a 400 of the page parameters and for an empty list."""
        paginator = LinkHeaderPagination()
        try:
            page = paginator.paginate_compiled(compiled, values, self.request)
        except exceptions.ParseError:
            if check is not None:
                check()
            raise
        if check is not None and not paginator.count:
            check()
        context = self.serializer_context()
        if renders_plain_json(serializer_class):  # written by orjson, same bytes
            if not isinstance(self.request, Request):  # the fast path, written by _RENDERER:
                # each item's JSON memoized by its row's values (``controlplane.api.memo``).
                memoized = render_items(serializer_class, page, context)
                if memoized is not None:
                    return paginator.get_paginated_response(memoized)
            data = PlainJSON(serializer_class(page.views(), many=True, context=context).data)
        else:
            data = serializer_class(page.views(), many=True, context=context).data
        return paginator.get_paginated_response(data)

    def respond(
        self, serializer_class: type, obj: Any, code: int = status.HTTP_200_OK, **context: Any
    ) -> Response:
        """``obj`` as ``serializer_class`` renders it, with the view's context and ``context``."""
        data = serializer_class(obj, context=self.serializer_context(**context)).data
        return Response(data, status=code)

    def serializer_context(self, **extra: Any) -> dict[str, Any]:
        return {"request": self.request, "organization": self.organization, **extra}


class AccessTokenAPIView(ApiTokenAPIView):
    """The base of the views about the calling API token itself (``/v2/access-token``): the
    token authenticates (401 otherwise) and counts against its rate limits, as everywhere; no
    organization is in the URL, and no scope is needed (as on Buildkite). It reaches nothing
    but the token."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.token = cast(ApiToken, request.auth)
        rate_limit(request, self.token)


class OperatorAPIView(ApiTokenAPIView):
    """The base of the operators' endpoints (``/v2/operator/...``): about the platform, not an
    organization. The token authenticates (401) and counts against its rate limits; then its
    user must be staff and the token carry the method's scope (``read_scope`` or
    ``write_scope``, 403 otherwise). No organization is in the URL."""

    read_scope: str
    write_scope: str
    token: ApiToken

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.token = cast(ApiToken, request.auth)
        rate_limit(request, self.token)
        if not self.token.user.is_staff:
            raise exceptions.PermissionDenied(
                "This endpoint is for operators: use an API token of a staff user."
            )
        reads = request.method in READ_METHODS
        scope: str | None = getattr(self, "read_scope" if reads else "write_scope", None)
        if scope is None:
            raise exceptions.MethodNotAllowed(cast(str, request.method))
        if not self.token.has_scope(scope):
            raise exceptions.PermissionDenied(f"This API token needs the {scope} scope.")


def answered_methods(view_class: type[APIView]) -> list[str]:
    """The HTTP methods ``view_class`` answers: those it has a handler for, and HEAD with GET
    (Django answers HEAD with ``get``)."""
    handled = {m for m in view_class.http_method_names if callable(getattr(view_class, m, None))}
    if "get" in handled:
        handled.add("head")
    return [m.upper() for m in view_class.http_method_names if m in handled]


def configuration_errors(view_class: type[OrganizationAPIView]) -> list[str]:
    """Why ``view_class`` would not fail closed: a tenant-scoping hook it replaces, a scope it
    needs and does not declare (GET, HEAD and OPTIONS need ``read_scope``, every other method
    ``write_scope``), or one that is not an API scope. A class with no handler of its own (a
    base for views; OPTIONS alone is every APIView's) needs no scope yet."""
    name = f"{view_class.__module__}.{view_class.__qualname__}"
    errors = [
        f"{name} overrides {hook}, which OrganizationAPIView does not let a view replace: {why}."
        for hook, why in SCOPING_HOOKS.items()
        if getattr(view_class, hook) is not getattr(OrganizationAPIView, hook)
    ]
    methods = answered_methods(view_class)
    if methods == ["OPTIONS"]:
        return errors
    for attribute, needed_by in (
        ("read_scope", [m for m in methods if m in READ_METHODS]),
        ("write_scope", [m for m in methods if m not in READ_METHODS]),
    ):
        scope = getattr(view_class, attribute, None)
        if needed_by and scope is None:
            errors.append(
                f"{name} answers {', '.join(needed_by)} but declares no {attribute}: a view "
                "names the scope of each method it answers (there is no default)."
            )
        elif scope is not None and scope not in ApiScope.values:
            errors.append(
                f"{name}.{attribute} is {scope!r}, which is not an API scope "
                f"(one of {', '.join(ApiScope.values)})."
            )
    return errors


def uuid_or_404(pk: str, message: str) -> uuid.UUID:
    """``pk`` as a UUID, or 404 with ``message`` (no row has a primary key that is not one)."""
    try:
        return uuid.UUID(str(pk))
    except ValueError:
        raise exceptions.NotFound(message) from None


def get_or_404(queryset: QuerySet[M], pk: str, message: str) -> M:
    """The row of ``queryset`` with primary key ``pk`` (a UUID), or 404 with ``message``."""
    found = queryset.filter(pk=uuid_or_404(pk, message)).first()
    if found is None:
        raise exceptions.NotFound(message)
    return found


def validated(serializer_class: type, request: Request) -> dict[str, Any]:
    """The request body, validated (422 with the field errors otherwise)."""
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
