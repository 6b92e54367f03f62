"""atfr.runtime.streaming: the run loop of ``atfr run`` (runner: StreamRunner, its options,
signals and event log), its threads and clip window (stages), what each result writes (record), the
overlay drawing (draw), and the stream-model interface both families implement (models). Torch-free."""
