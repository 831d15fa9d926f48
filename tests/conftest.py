"""Shared test configuration."""

import os

# Keep torch and onnxruntime from oversubscribing the 2 CPU cores that CI has.
os.environ.setdefault("OMP_NUM_THREADS", "2")
