"""Review request and response shapes."""

from __future__ import annotations

from rest_framework import serializers

from backend.common import fields

from .models import Review


class ReviewCreateSerializer(serializers.Serializer):
    rating = fields.IntegerField(min_value=1, max_value=5)
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ReviewSerializer(serializers.ModelSerializer):
    tour = serializers.UUIDField(source="tour_id", read_only=True)
    user = serializers.IntegerField(source="user_id", read_only=True)

    class Meta:
        model = Review
        fields = ("id", "tour", "user", "author", "rating", "comment", "created_at")
        read_only_fields = fields
