"""atfr.bench."""
