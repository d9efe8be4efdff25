"""Where a booking lives: the tour's shard for new ones, the id's logical shard for existing ones."""

from __future__ import annotations

import uuid

from backend import sharding

from .ids import logical_shard_of, new_booking_id


def alias_for_tour(tour_id: uuid.UUID) -> str:
    return sharding.shard_for(tour_id)


def alias_for_booking(booking_id: uuid.UUID) -> str:
    return sharding.alias_for_logical(logical_shard_of(booking_id))


def booking_id_for_tour(tour_id: uuid.UUID) -> uuid.UUID:
    """A new booking id that routes to the same shard as `tour_id`."""
    return new_booking_id(sharding.logical_shard(tour_id))
