"""atfr.models."""
