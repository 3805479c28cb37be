"""Shared pytest setup: quiet TensorFlow, deterministic seeds, two logical CPUs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
