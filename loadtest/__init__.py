"""Black-Friday load tests (Locust) and the data-invariant audit that follows them."""
