"""Django admin for payments (registered once the shard-aware admin base is in place)."""
