"""Django admin for bookings (registered once the shard-aware admin base is in place)."""
