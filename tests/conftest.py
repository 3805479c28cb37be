"""Shared pytest setup: quiet TensorFlow, deterministic seeds, two logical CPUs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Under xdist every worker (and every process it starts) takes one core's worth
# of threads: two workers each running TensorFlow on every core only contend.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")


import pytest  # noqa: E402
from _tiny_data import tiny_digits  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    """The small digits subset of `_tiny_data.tiny_digits` (one load per test module)."""
    return tiny_digits()


def pytest_collection_modifyitems(config, items):
    """The long grouped modules first, so no worker starts one when the others are done."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)
