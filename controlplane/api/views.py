from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET


@require_GET
def root(request: HttpRequest) -> JsonResponse:
    """Unauthenticated liveness answer, shaped like Buildkite's ``GET /``."""
    return JsonResponse({"message": "🛠", "timestamp": int(timezone.now().timestamp())})
