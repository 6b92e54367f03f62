"""atfr.runtime.serving: an export behind Triton. The request service (Triton-free), PyTriton
(``atfr serve``), the Python-backend models and the repository writer of ``atfr triton-repo``, and
the bundled server's environment. Torch-free."""
