"""URL map: /api/... (JSON only), /admin/, /healthz, /readyz, /metrics, /api/schema/, /api/docs/,
and the web site at / (backend/site)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backend.accounts.admin_login import admin_login
from backend.health import views as health

handler400 = "backend.common.views.bad_request"
handler403 = "backend.common.views.permission_denied"
# JSON, unless a browser asks for a page (backend/site/negotiation.py)
handler404 = "backend.site.negotiation.not_found"
handler500 = "backend.common.views.server_error"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.prometheus, name="metrics"),
    # the admin's own login view, behind the login guard (same path: it wins by coming first)
    path("admin/login/", admin_login, name="admin-login-guarded"),
    path("admin/", admin.site.urls),
    path("api/auth/", include("backend.accounts.urls")),
    path("api/tours/", include("backend.tours.urls")),
    path("api/tours/<uuid:tour_id>/reviews/", include("backend.reviews.urls")),
    path("api/bookings/", include("backend.bookings.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("backend.site.urls")),
]

if settings.SERVE_MEDIA:
    # local photo files; in production a front proxy (or S3) serves them instead
    prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns.append(
        re_path(rf"^{prefix}(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT})
    )
