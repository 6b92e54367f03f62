"""atfr.calibration."""
