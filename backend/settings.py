"""Django settings, built once from the environment (see docs/backend.md for every variable).

A bad or missing value stops the process with one line: ImproperlyConfigured naming the
variable, the value and what was expected.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from backend.common.env import database_map, env_bool, env_float, env_int, env_list, env_str
from backend.sharding.circuit import with_circuits

ENV = os.environ
BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str(ENV, "BACKEND_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool(ENV, "DJANGO_DEBUG", False)

# No fallback, not even with DJANGO_DEBUG=1: a key written in the repository is a key anyone
# can sign tokens with (`ops up` generates one into var/secret_key).
SECRET_KEY = env_str(ENV, "DJANGO_SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is unset: required, also with DJANGO_DEBUG=1 (one shared random "
        "value for all replicas; it signs the JWTs), e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
    )

ALLOWED_HOSTS = env_list(ENV, "DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "storages",
    "backend.common.apps.CommonConfig",
    "backend.accounts.apps.AccountsConfig",
    "backend.tours.apps.ToursConfig",
    "backend.bookings.apps.BookingsConfig",
    "backend.payments.apps.PaymentsConfig",
    "backend.reviews.apps.ReviewsConfig",
]

MIDDLEWARE = [
    "backend.common.middleware.RequestLogMiddleware",
    "backend.common.middleware.JsonErrorMiddleware",
    "backend.common.cache_headers.CacheHeadersMiddleware",
    # before any middleware that validates the Host header
    "backend.health.middleware.ProbeMiddleware",
    "backend.common.middleware.BodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # sees the responses of the session and CSRF middlewares below: marks their cookies Secure
    "backend.common.middleware.SecureCookieMiddleware",
    # admin and API-docs assets, straight from the installed apps (no collectstatic needed)
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backend.urls"
WSGI_APPLICATION = "backend.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- databases: "default" (users, auth, token blacklist) + one alias per shard server ---
VAR_DIR.mkdir(parents=True, exist_ok=True)
# PostgreSQL connections go through the shard circuit (backend/sharding/circuit.py): a
# database found unreachable is failed fast for SHARD_CIRCUIT_SECONDS, then probed again
DATABASES = with_circuits(database_map(ENV, VAR_DIR))
SHARD_ALIASES = [alias for alias in DATABASES if alias != "default"]
SHARD_CIRCUIT_SECONDS = env_float(ENV, "SHARD_CIRCUIT_SECONDS", 2.0)
DATABASE_ROUTERS = ["backend.sharding.router.ShardRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache: Redis when REDIS_URL is set (shared by all replicas), else per process ---
REDIS_URL = env_str(ENV, "REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str(ENV, "CACHE_KEY_PREFIX", "backend"),
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
TOUR_LIST_CACHE_SECONDS = env_int(ENV, "TOUR_LIST_CACHE_SECONDS", 5)
# stale-if-error: while a shard is down, a whole page cached up to this long ago is served
# instead of a partial one (0: always answer partially)
TOUR_LIST_STALE_SECONDS = env_int(ENV, "TOUR_LIST_STALE_SECONDS", 30)

# --- the lb's micro-cache: how long public tour pages may be reused, purges on writes ---
# (backend.common.cache_headers sets the headers; backend.tours.cache publishes purges)
EDGE_CACHE_MAX_AGE = env_int(ENV, "EDGE_CACHE_MAX_AGE", 1, minimum=0)
EDGE_CACHE_STALE_WHILE_REVALIDATE = env_int(ENV, "EDGE_CACHE_STALE_WHILE_REVALIDATE", 5, minimum=0)
EDGE_CACHE_STALE_IF_ERROR = env_int(ENV, "EDGE_CACHE_STALE_IF_ERROR", 300, minimum=0)
EDGE_PURGE_CHANNEL = "tourbook:cache:purge"  # the lb subscribes to the same (lb/cache/purge.py)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False

# --- uploads: local files by default, S3 (django-storages) when a bucket is named ---
MEDIA_ROOT = Path(env_str(ENV, "MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = env_str(ENV, "MEDIA_URL", "/media/")
PHOTO_MAX_BYTES = env_int(ENV, "PHOTO_MAX_BYTES", 5 * 1024 * 1024, minimum=1)
AWS_STORAGE_BUCKET_NAME = env_str(ENV, "AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    AWS_S3_ENDPOINT_URL = env_str(ENV, "AWS_S3_ENDPOINT_URL") or None
    AWS_S3_REGION_NAME = env_str(ENV, "AWS_S3_REGION_NAME") or None
    AWS_S3_CUSTOM_DOMAIN = env_str(ENV, "AWS_S3_CUSTOM_DOMAIN") or None
    AWS_QUERYSTRING_AUTH = env_bool(ENV, "AWS_QUERYSTRING_AUTH", True)
    AWS_DEFAULT_ACL = None
    AWS_S3_FILE_OVERWRITE = False
    _DEFAULT_STORAGE = {"BACKEND": "storages.backends.s3.S3Storage"}
else:
    _DEFAULT_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _DEFAULT_STORAGE,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
SERVE_MEDIA = not AWS_STORAGE_BUCKET_NAME
# bodies other than file uploads (JSON) are small; bigger ones get 413
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int(ENV, "DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024, minimum=1)

EMAIL_BACKEND = env_str(ENV, "EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env_str(ENV, "EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env_str(ENV, "DEFAULT_FROM_EMAIL", "bookings@tourbook.localhost")

BOOKING_HOLD_SECONDS = env_int(ENV, "BOOKING_HOLD_SECONDS", 600, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "backend.accounts.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "backend.common.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "backend.common.pagination.StandardPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backend.common.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int(ENV, "JWT_ACCESS_SECONDS", 300, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(
        seconds=env_int(ENV, "JWT_REFRESH_SECONDS", 86400, minimum=1)
    ),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "TOKEN_OBTAIN_SERIALIZER": "backend.accounts.tokens.TokenObtainInput",
    "TOKEN_REFRESH_SERIALIZER": "backend.accounts.tokens.TokenRefreshInput",
}

# JSON bodies nested deeper than this are a 400 (backend/common/parsers.py)
JSON_MAX_DEPTH = env_int(ENV, "JSON_MAX_DEPTH", 32, minimum=1)

# failed logins back off exponentially per account and per address (backend/accounts/guard.py)
LOGIN_GUARD = {
    "ACCOUNT_FREE_FAILURES": env_int(ENV, "LOGIN_FREE_FAILURES", 5, minimum=1),
    "ADDRESS_FREE_FAILURES": env_int(ENV, "LOGIN_ADDRESS_FREE_FAILURES", 20, minimum=1),
    "BASE_SECONDS": env_int(ENV, "LOGIN_BACKOFF_BASE_SECONDS", 1, minimum=1),
    "MAX_SECONDS": env_int(ENV, "LOGIN_BACKOFF_MAX_SECONDS", 900, minimum=1),
    "WINDOW_SECONDS": env_int(ENV, "LOGIN_FAILURE_WINDOW_SECONDS", 3600, minimum=1),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tourbook API",
    "DESCRIPTION": "Tours, bookings, payments and reviews on a sharded backend.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from this app, not from a CDN
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOG_LEVEL = env_str(ENV, "BACKEND_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "backend.common.logs.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # one access line per request comes from RequestLogMiddleware; keep 5xx tracebacks
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
    },
}

SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
# A replica is reached through the lb, which always overwrites X-Forwarded-Proto (believing
# a TLS front's value only from LB_TRUSTED_PROXIES): so request.is_secure() tells whether the
# client spoke HTTPS. Set 0 for a replica exposed without the lb.
if env_bool(ENV, "DJANGO_TRUST_FORWARDED_PROTO", True):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Session and CSRF cookies: `auto` marks them Secure when the request came over TLS
# (SecureCookieMiddleware), `always` marks them Secure whatever the scheme.
SECURE_COOKIES = env_str(ENV, "DJANGO_SECURE_COOKIES", "auto").lower()
if SECURE_COOKIES not in ("auto", "always"):
    raise ImproperlyConfigured(f"DJANGO_SECURE_COOKIES={SECURE_COOKIES!r}: expected auto or always")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_COOKIES == "always"
CSRF_FAILURE_VIEW = "backend.common.views.csrf_failure"

# --- the web site (backend/site, mounted at /): sessions + CSRF for its forms; the API keeps JWT ---
INSTALLED_APPS.append("backend.site.apps.SiteConfig")
LOGIN_URL = "site:login"
LOGIN_REDIRECT_URL = "site:home"
# with a shared cache, sessions are read through it (a per-process cache would let a session
# logged out on one replica live on in another's)
if REDIS_URL:
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# (`Secure` on cookies set over TLS: backend.common.middleware.SecureCookieMiddleware above)
# a browser gets an HTML page for a rejected form; API clients keep the JSON body
CSRF_FAILURE_VIEW = "backend.site.negotiation.csrf_failure"
