"""Cross-cutting pieces: environment parsing, domain errors, the exception handler, pagination."""
