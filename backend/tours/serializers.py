"""Input/output shapes of the tours API."""

from __future__ import annotations

from django.core.files.storage import default_storage
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backend.common import fields
from backend.tours.models import Tour, TourPhoto
from backend.tours.selectors import ORDERING_CHOICES


def photo_url(photo: TourPhoto) -> str:
    return default_storage.url(photo.file.name)


class TourOutput(serializers.ModelSerializer):
    photo_urls = serializers.SerializerMethodField()

    class Meta:
        model = Tour
        fields = [
            "id",
            "name",
            "description",
            "price",
            "start_date",
            "end_date",
            "capacity",
            "seats_available",
            "rating",
            "rating_count",
            "photo_urls",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_photo_urls(self, tour: Tour) -> list[str]:
        return [photo_url(p) for p in tour.photos.all()]


class TourInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(
        allow_blank=True, required=False, default="", max_length=10_000
    )
    price = fields.DecimalField(max_digits=10, decimal_places=2, min_value=0)
    start_date = fields.DateField()
    end_date = fields.DateField()
    capacity = fields.IntegerField(min_value=1, max_value=1_000_000)

    def validate(self, attrs: dict) -> dict:
        start, end = attrs.get("start_date"), attrs.get("end_date")
        if start and end and end < start:
            raise serializers.ValidationError(
                {"end_date": ["end_date must not be before start_date."]}
            )
        return attrs


class TourFilterInput(serializers.Serializer):
    search = serializers.CharField(required=False, allow_blank=True, max_length=100)
    date_from = fields.DateField(required=False, help_text="start_date on or after")
    date_to = fields.DateField(required=False, help_text="start_date on or before")
    price_min = fields.DecimalField(max_digits=10, decimal_places=2, required=False)
    price_max = fields.DecimalField(max_digits=10, decimal_places=2, required=False)
    ordering = serializers.ChoiceField(
        choices=ORDERING_CHOICES, required=False, default="start_date"
    )
    page = fields.IntegerField(min_value=1, max_value=10_000, required=False, default=1)
    page_size = fields.IntegerField(min_value=1, required=False, default=20)


class PhotoInput(serializers.Serializer):
    file = serializers.FileField(help_text="A JPEG, PNG, GIF or WebP image")


class PhotoOutput(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.SerializerMethodField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()

    @extend_schema_field(OpenApiTypes.STR)
    def get_url(self, photo: TourPhoto) -> str:
        return photo_url(photo)
