"""pytest setup of the study's tests: the library's test helpers and the study's scripts."""

import os
import sys

STUDY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(STUDY)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The library's test helpers (tiny data, fixtures) and the study's modules (clock).
sys.path[:0] = [os.path.join(REPO, "tests"), STUDY]

import pytest  # noqa: E402
from _tiny_data import tiny_digits  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    """The small digits subset of `_tiny_data.tiny_digits` (one load per test module)."""
    return tiny_digits()
