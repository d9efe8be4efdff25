"""Routes under /api/auth/."""

from django.urls import path

from backend.accounts.apis import LogoutApi, MeApi, RegisterApi, TokenObtainApi, TokenRefreshApi

urlpatterns = [
    path("register/", RegisterApi.as_view(), name="auth-register"),
    path("token/", TokenObtainApi.as_view(), name="auth-token"),
    path("token/refresh/", TokenRefreshApi.as_view(), name="auth-token-refresh"),
    path("logout/", LogoutApi.as_view(), name="auth-logout"),
    path("me/", MeApi.as_view(), name="auth-me"),
]
