"""atfr.runtime: run an export without torch (ONNX Runtime or TensorRT), on clips, videos and cameras.

The core sits at this level: the manifest, the clip pipeline (``pipeline``: front -> SGS -> back)
with its backends, ONNX Runtime providers, numpy SGS, run-time bins/budget and BLAS threads, the
streaming run loop, the doctor and pack/unpack. A second model family's runner (for example an
online per-frame runner) belongs here too, beside ``pipeline``. Subpackages by job:
``video`` (frames in and out), ``serving`` (Triton), ``tensorrt`` (everything that touches TensorRT).
"""
