"""The small digits subset the trainer tests and their subprocess scripts share.

Importable both from pytest tests and from the `tests/_*.py` scripts that tests
run in subprocesses (the script's folder is on `sys.path` in both cases).
"""

from sst_tf import data


def tiny_digits() -> data.Dataset:
    """Digits at 16 x 16: 200 training and 112 test images (every 4th / 8th)."""
    ds = data.load_dataset("digits", upscale=2)
    return data.Dataset("digits", data.subset(ds.train, range(0, 800, 4)),
                        data.subset(ds.test, range(0, 800, 8)))
