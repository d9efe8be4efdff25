"""Benchmarks that print figures: `python -m ops.bench lb|admission|bookings`."""
