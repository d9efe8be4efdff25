"""The platform's public entry point: an admission-controlled HTTP reverse proxy."""
