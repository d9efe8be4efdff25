"""GET /healthz (liveness, touches nothing), GET /readyz (every database + Redis), GET /metrics.

/readyz also shows each database's circuit (backend.sharding.circuit): a shard that is down
stays named in `failed` while requests for it fail fast.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from backend import metrics
from backend.health.checks import readiness
from backend.sharding.circuit import circuits

RETRY_AFTER_SECONDS = 5


@csrf_exempt
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@csrf_exempt
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results = readiness()
    failed = sorted(name for name, error in results.items() if error)
    checks = {name: (error or "ok") for name, error in results.items()}
    if failed:
        response = JsonResponse(
            {
                "detail": f"not ready: {', '.join(failed)} unavailable",
                "code": "not_ready",
                "failed": failed,
                "checks": checks,
                "circuits": circuits.state(),
            },
            status=503,
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return JsonResponse({"status": "ready", "checks": checks, "circuits": circuits.state()})


@csrf_exempt
@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
