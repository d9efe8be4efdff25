"""The lb's micro-cache: GET/HEAD answers from memory, request coalescing, stale answers."""
