"""atfr.runtime.video: frames in and out. Sources (files, cameras, URLs, GStreamer) and
camera presets, which frames make a clip, the test-time transform, clip files (.npy), and the
overlay and video writer of ``atfr run``. Torch-free; nothing here imports the pipeline."""
