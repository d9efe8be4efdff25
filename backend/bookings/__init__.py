"""Bookings: seat holds on a tour's shard, their lifecycle, idempotency and hold expiry."""
