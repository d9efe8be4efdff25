"""Review: one rating (1-5) per user and tour, on the tour's shard."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Review(models.Model):
    tour = models.ForeignKey("tours.Tour", on_delete=models.CASCADE, related_name="reviews")
    user_id = models.BigIntegerField()
    # users live on the default database; the name is copied for display
    author = models.CharField(max_length=150)
    rating = models.PositiveSmallIntegerField()
    comment = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=["tour", "user_id"], name="review_one_per_user_tour"),
            models.CheckConstraint(
                condition=Q(rating__gte=1) & Q(rating__lte=5), name="review_rating_1_to_5"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rating}/5 by {self.author}"
