"""Records pytorch-metric-learning's values of the losses sst_tf shares with it.

Run once, in a side environment (PML is an oracle, never a dependency):

    python3 -m venv /tmp/venv-pml
    /tmp/venv-pml/bin/pip install torch pytorch-metric-learning==2.9.0 numpy
    /tmp/venv-pml/bin/python scripts/make_pml_fixtures.py --output=tests/data/pml_fixtures.npz

For every case it stores the inputs (embeddings, labels, class weights where
the loss has them), PML's loss value and its gradients with respect to the
embeddings (and the weights), computed in float64. `tests/test_losses_pml.py`
checks sst_tf's losses against them.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

try:
    import pytorch_metric_learning
    import torch
    from pytorch_metric_learning import losses as pml
    from pytorch_metric_learning.distances import DotProductSimilarity
except ImportError:  # pragma: no cover - only in the side environment
    sys.exit("make_pml_fixtures.py: error: needs torch and pytorch-metric-learning (see the "
             "module docstring): run it in a side environment")

# name -> (PML class, keyword arguments, has class weights)
LOSSES = {
    "arcface": (pml.ArcFaceLoss, {"margin": 28.6, "scale": 64}, True),
    "cosface": (pml.CosFaceLoss, {"margin": 0.35, "scale": 64}, True),
    "subcenter_arcface": (pml.SubCenterArcFaceLoss,
                          {"margin": 28.6, "scale": 64, "sub_centers": 3}, True),
    "circle": (pml.CircleLoss, {"m": 0.4, "gamma": 80}, False),
    "supcon": (pml.SupConLoss, {"temperature": 0.1}, False),
    "ntxent": (pml.NTXentLoss, {"temperature": 0.07}, False),
    # PML's N pairs (one anchor and one positive per label) on dot products of
    # normalised embeddings (its default) or of raw ones: sst_tf's
    # batch_npairs_loss(pairs="per_class", scale=1) on the same embeddings.
    "npairs": (lambda normalize: pml.NPairsLoss(
        distance=DotProductSimilarity(normalize_embeddings=normalize)),
        {"normalize": True}, False),
}
# Other parameters than the defaults, so a test sees that they reach the loss.
VARIANTS = {
    "arcface": {"margin": 10.0, "scale": 16},
    "cosface": {"margin": 0.2, "scale": 30},
    "subcenter_arcface": {"margin": 20.0, "scale": 32, "sub_centers": 2},
    "circle": {"m": 0.25, "gamma": 128},
    "supcon": {"temperature": 0.5},
    "ntxent": {"temperature": 0.2},
    "npairs": {"normalize": False},
}


def _case(rng: np.random.Generator, name: str, kwargs: dict, batch: int, dim: int,
          classes: int, labels_kind: str) -> dict:
    cls, _, weighted = LOSSES[name]
    if labels_kind == "balanced":
        labels = np.repeat(np.arange(classes), batch // classes)
    else:  # some classes once, some absent
        labels = rng.integers(0, classes, batch)
    rng.shuffle(labels)
    emb = rng.normal(size=(batch, dim))
    x = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(labels, dtype=torch.int64)
    out = {"embeddings": emb, "labels": labels.astype(np.int64)}
    if weighted:
        loss = cls(num_classes=classes, embedding_size=dim, **kwargs).double()
        w = rng.normal(size=tuple(loss.W.shape))
        with torch.no_grad():
            loss.W.copy_(torch.tensor(w))
        value = loss(x, y)
        value.backward()
        out.update(weights=w, grad_weights=loss.W.grad.numpy().copy())
    else:
        value = cls(**kwargs)(x, y)
        value.backward()
    out.update(value=np.float64(value.item()), grad_embeddings=x.grad.numpy().copy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="tests/data/pml_fixtures.npz")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for name, (_, defaults, _) in LOSSES.items():
        cases = [("defaults", defaults, 32, 16, 8, "balanced"),
                 ("defaults_uneven", defaults, 30, 16, 10, "uneven"),
                 ("variant", {**defaults, **VARIANTS[name]}, 24, 8, 6, "balanced")]
        for case, kwargs, batch, dim, classes, kind in cases:
            for key, value in _case(rng, name, kwargs, batch, dim, classes, kind).items():
                arrays[f"{name}/{case}/{key}"] = np.asarray(value)
            for key, value in kwargs.items():
                arrays[f"{name}/{case}/param/{key}"] = np.asarray(value)
    arrays["versions"] = np.asarray(
        f"torch {torch.__version__}, pytorch-metric-learning {pytorch_metric_learning.__version__}")
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {len(arrays)} arrays to {args.output}")


if __name__ == "__main__":
    main()
