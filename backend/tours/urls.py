"""Routes under /api/tours/."""

from django.urls import path

from backend.tours.apis import TourDetailApi, TourListApi, TourPhotoApi

urlpatterns = [
    path("", TourListApi.as_view(), name="tour-list"),
    path("<uuid:tour_id>/", TourDetailApi.as_view(), name="tour-detail"),
    path("<uuid:tour_id>/photos/", TourPhotoApi.as_view(), name="tour-photos"),
]
