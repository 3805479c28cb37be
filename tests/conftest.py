"""Shared pytest setup: quiet TensorFlow, deterministic seeds, two logical CPUs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import pytest  # noqa: E402
from _tiny_data import tiny_digits  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    """The small digits subset of `_tiny_data.tiny_digits` (one load per test module)."""
    return tiny_digits()
