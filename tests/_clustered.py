"""Clustered test embeddings shared by the k-means and NMI tests."""

import numpy as np


def gaussian_classes(n=600, classes=100, d=32, noise=0.9, seed=0):
    """Overlapping Gaussian classes (every class >= 2 points), so NMI is below 1.

    Returns:
      (x float32 [n, d], labels int [n]).
    """
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.repeat(np.arange(classes), 2),
                        rng.integers(0, classes, n - 2 * classes)])
    centres = rng.normal(size=(classes, d)) / np.sqrt(d)
    x = centres[y] + noise * rng.normal(size=(n, d)) / np.sqrt(d)
    return x.astype(np.float32), y
