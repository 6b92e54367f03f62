"""atfr.runtime."""
