"""pytorch-metric-learning's side of the `pml` benchmark section; runs in a side environment.

Usage: python pml_side.py LOSS BATCH DIM REPEATS (in an environment with torch
and pytorch-metric-learning 2.9; never imported by the project). Times
forward + backward of one PML loss on the batch `batch_inputs` makes (the
same numbers the project's side uses), one thread, and prints one JSON line:
{"ms": median milliseconds, "runs": repeats, "peak_mib": peak RSS growth
over the process before the first call, "version": PML's version}.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def batch_inputs(batch: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings [B, d] (float32, seed 0) and labels: B / 4 classes of 4 images."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, dim)).astype(np.float32)
    labels = np.repeat(np.arange(batch // 4), 4).astype(np.int64)
    return x, labels


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**10
    return float("nan")


def _pml_loss(name: str, classes: int, dim: int):
    from pytorch_metric_learning import losses, miners

    made = {
        "contrastive": lambda: (losses.ContrastiveLoss(), None),
        "multi_similarity": lambda: (losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5),
                                     miners.MultiSimilarityMiner(epsilon=0.1)),
        "triplet_semihard": lambda: (losses.TripletMarginLoss(margin=1.0),
                                     miners.TripletMarginMiner(margin=1.0,
                                                               type_of_triplets="semihard")),
        "triplet_hard": lambda: (losses.TripletMarginLoss(margin=1.0), miners.BatchHardMiner()),
        "lifted_struct": lambda: (losses.LiftedStructureLoss(neg_margin=1.0), None),
        "npairs": lambda: (losses.NPairsLoss(), None),
        "proxy_anchor": lambda: (losses.ProxyAnchorLoss(num_classes=classes, embedding_size=dim,
                                                        margin=0.1, alpha=32), None),
        "circle": lambda: (losses.CircleLoss(m=0.4, gamma=80), None),
        "supcon": lambda: (losses.SupConLoss(temperature=0.1), None),
        "ntxent": lambda: (losses.NTXentLoss(temperature=0.07), None),
        "arcface": lambda: (losses.ArcFaceLoss(num_classes=classes, embedding_size=dim,
                                               margin=28.6, scale=64), None),
        "cosface": lambda: (losses.CosFaceLoss(num_classes=classes, embedding_size=dim,
                                               margin=0.35, scale=64), None),
        "subcenter_arcface": lambda: (losses.SubCenterArcFaceLoss(
            num_classes=classes, embedding_size=dim, margin=28.6, scale=64, sub_centers=3),
            None),
    }
    return made[name]()


def main() -> None:
    import pytorch_metric_learning
    import torch

    torch.set_num_threads(1)
    name, batch, dim, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    x_np, labels_np = batch_inputs(batch, dim)
    loss_fn, miner = _pml_loss(name, batch // 4, dim)
    x = torch.tensor(x_np, requires_grad=True)
    labels = torch.tensor(labels_np)

    def step():
        x.grad = None
        for p in loss_fn.parameters():
            p.grad = None
        pairs = miner(x, labels) if miner is not None else None
        loss = loss_fn(x, labels, pairs) if pairs is not None else loss_fn(x, labels)
        loss.backward()
        return float(loss.detach())

    base = _peak_mib()
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"ms": 1e3 * statistics.median(times), "runs": repeats,
                      "peak_mib": _peak_mib() - base,
                      "version": pytorch_metric_learning.__version__}))


if __name__ == "__main__":
    main()
