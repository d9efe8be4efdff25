"""Running the platform locally: the one-command stack, throwaway servers, benchmarks."""
