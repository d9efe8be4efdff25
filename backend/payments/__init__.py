"""Payments: the gateway seam and the payment records of bookings."""
