"""Django admin for reviews (registered once the shard-aware admin base is in place)."""
