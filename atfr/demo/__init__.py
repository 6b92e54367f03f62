"""Built-in demo: procedural action videos and a small trained ATFR model."""
