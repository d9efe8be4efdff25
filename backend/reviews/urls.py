"""/api/tours/<tour_id>/reviews/ routes (included by backend/urls.py)."""

from django.urls import path

from .apis import ReviewListCreateApi

urlpatterns = [path("", ReviewListCreateApi.as_view(), name="tour-reviews")]
