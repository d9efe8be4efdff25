"""The booking backend: a Django + DRF project whose tour data is sharded by tour id."""
