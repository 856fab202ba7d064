"""The bare baseline every HTTP measure is a ratio to: a plain Django view, through the same
middleware, answering a small JSON document without touching the database."""

from django.http import HttpRequest, JsonResponse

#: What the bare view answers: about the size of a small agent environment.
BARE_BODY = {"env": {"BUILDKITE_COMPUTE_TYPE": "hosted", "BUILDKITE_CLUSTER_NAME": "bench"}}


def bare(request: HttpRequest) -> JsonResponse:
    return JsonResponse(BARE_BODY)
