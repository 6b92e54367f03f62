"""atfr.export."""
