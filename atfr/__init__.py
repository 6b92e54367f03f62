"""atfr-deploy: ATFR video models from PyTorch checkpoint to verified engines."""

__version__ = "0.1.0"
