"""The upstream pool: backends, balancing, health checks, outlier ejection, breaker, retries."""
