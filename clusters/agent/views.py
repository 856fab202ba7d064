"""The agent API: what a job on a cluster's agents receives.

Every job start asks for its environment, so a ``GET`` in JSON or shell form skips the REST
framework (``controlplane.api.fast_path``: the same bytes) and is answered from a per-process
cache when warm, without a query (``controlplane.hotcache``; the bound on staleness and what
invalidates an entry: docs/agents.md, "The cache"). The REST framework still answers the rest as
before: other methods (``OPTIONS``, ``HEAD``, a ``POST``'s 405), formats chosen by content
negotiation, too many query parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from clusters.agent.authentication import (
    BAD_TOKEN,
    MALFORMED,
    SCHEMES,
    ClusterAgentTokenAuthentication,
    agent_token_check_address,
)
from clusters.agent.renderers import ShellExportRenderer
from clusters.job_environment import job_environment
from clusters.models import Cluster, ClusterAgentToken
from clusters.selectors import (
    HOSTED_ENVIRONMENT_REQUIRED,
    AgentQueueLookup,
    AgentTokenFacts,
    agent_queue_lookup,
)
from controlplane import hotcache, metrics
from controlplane.api.authentication import authorization_header
from controlplane.api.fast_path import JSON_ACCEPT, FastPathAPIView, plain_request
from controlplane.credentials import secret_hash


class QueueRequired(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Name the agent's queue with ?queue=<key>; this cluster has no default queue."


_JSON = JSONRenderer()
_SHELL = ShellExportRenderer()
#: The formats answered without the REST framework: ``?format=`` or a plain ``Accept`` header.
_RENDERERS = {"json": _JSON, "shell": _SHELL}
_ACCEPTED = {**JSON_ACCEPT, _SHELL.media_type: "shell"}


@dataclass(frozen=True)
class Answer:
    """A rendered environment and the token it was made for (its allow-list is checked on
    every request, cached or not)."""

    token: AgentTokenFacts
    body: bytes
    content_type: str


#: Rendered answers by (hash of the agent token, queue key, format).
_ANSWERS: hotcache.HotCache[Answer] = hotcache.HotCache("agent-environment")


def environment_answer(lookup: AgentQueueLookup, queue_key: str) -> tuple[dict[str, Any], bool]:
    """The environment a job on the queue the agent asked for receives (``lookup``), as the JSON
    shape both paths render, and whether it may be cached. Raises the endpoint's 400 and 404."""
    queue = lookup.queue
    if queue is None:
        if queue_key:
            raise exceptions.NotFound(
                f"No queue {queue_key!r} found in this agent token's cluster."
            )
        raise QueueRequired()
    environment = job_environment(queue)
    # A hosted queue whose registry is not ready yet gets what there is, but is asked again.
    complete = not queue.hosted or environment.env.keys() >= HOSTED_ENVIRONMENT_REQUIRED
    return {"cluster_id": str(lookup.token.cluster_id), **environment.as_dict()}, complete


class AgentEnvironmentView(FastPathAPIView):
    """``GET /v3/agent/environment?queue=<key>``: the environment of a job on that queue.

    JSON by default; ``?format=shell`` (or ``Accept: text/x-shellscript``) gives ``export`` lines
    for ``deploy/agent/hooks/environment``. The queue must belong to the token's cluster; with no
    ``queue`` the cluster's default queue is used, as agents without a queue tag join it.
    """

    authentication_classes = [ClusterAgentTokenAuthentication]
    renderer_classes = [JSONRenderer, ShellExportRenderer]

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = super().dispatch(request, *args, **kwargs)
        metrics.AGENT_ENVIRONMENT_REQUESTS.labels(metrics.http_outcome(response.status_code)).inc()
        return response

    def fast(self, request: HttpRequest) -> HttpResponse | None:
        """A ``GET`` for JSON or shell lines, from the cache when warm (no query)."""
        plain = plain_request(request, "GET", accept=_ACCEPTED, overrides=_RENDERERS)
        if plain is None:
            return None
        params, fmt = plain
        answer = _answer(request, params.get("queue", ""), fmt)
        return HttpResponse(answer.body, content_type=answer.content_type)

    def get(self, request: Request) -> Response:
        """The REST framework's way, for formats chosen by content negotiation."""
        token = cast(ClusterAgentToken, request.auth)  # the only authentication class
        key = request.query_params.get("queue", "")
        lookup = agent_queue_lookup(token_hash=token.token_hash, queue_key=key)
        if lookup is None:  # revoked since it authenticated
            raise exceptions.AuthenticationFailed(BAD_TOKEN)
        data, _ = environment_answer(lookup, key)
        return Response(data)

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are always JSON: an error rendered as shell lines could be eval'd by a hook.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


def _answer(request: HttpRequest, queue_key: str, fmt: str) -> Answer:
    """The answer for the agent token ``request`` presents: cached, or read (one query) and
    rendered. Raises what ``ClusterAgentTokenAuthentication`` and the view would."""
    header = authorization_header(request)
    if header is None:
        raise exceptions.NotAuthenticated()
    scheme, secret = header
    secret = secret.strip()
    if scheme not in SCHEMES or not secret:
        raise exceptions.AuthenticationFailed(MALFORMED)
    token_hash = secret_hash(secret)
    key = (token_hash, queue_key, fmt)
    answer = _ANSWERS.get(key)
    if answer is not None:
        agent_token_check_address(answer.token, request)
        return answer
    since = hotcache.fill_started()
    lookup = agent_queue_lookup(token_hash=token_hash, queue_key=queue_key)
    if lookup is None:
        raise exceptions.AuthenticationFailed(BAD_TOKEN)
    token = lookup.token
    agent_token_check_address(token, request)
    data, complete = environment_answer(lookup, queue_key)
    renderer = _RENDERERS[fmt]
    content_type = renderer.media_type
    if renderer.charset:
        content_type += f"; charset={renderer.charset}"
    body = renderer.render(data)
    answer = Answer(token, body.encode() if isinstance(body, str) else body, content_type)
    if complete:
        _ANSWERS.put(
            key,
            answer,
            since=since,
            tags=(
                hotcache.row_tag(ClusterAgentToken, token.pk),
                hotcache.row_tag(Cluster, token.cluster_id),
                hotcache.secret_tag(token_hash),
            ),
            expires_at=token.expires_at,
        )
    return answer
