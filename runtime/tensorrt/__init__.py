"""atfr.runtime.tensorrt: everything that touches TensorRT, in one package.

Imports go one way only (checked by tests/test_import_graph.py)::

    compat (pure Python version logic)   cuda (cuda-python)   api (the tensorrt module, logger)
          \\                                  |                 /
           plugin (SGS library loading) -----+----------------
                \\
                 builder ('atfr build')        backend (engines as GraphRunners, uses runtime.pipeline)

Nothing here is imported by :mod:`atfr.runtime.pipeline`: the pipeline reaches the backend through
the lazy registry in :mod:`atfr.runtime.backends` ('tensorrt' -> 'atfr.runtime.tensorrt.backend:
load_trt_pipeline'). Importing this package does not import tensorrt or cuda-python; the functions
that need them import them on first use and turn a missing or mismatched package into one line.
"""
