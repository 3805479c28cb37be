"""Golden values of tensorflow-addons' metric-learning losses, for parity tests.

Run ONCE in a side environment that still has tensorflow-addons (it needs
TensorFlow < 2.16, so it cannot live next to this project's TF 2.21):

    python3.11 -m venv /tmp/venv-tfa
    /tmp/venv-tfa/bin/pip install tensorflow-cpu==2.15.1 tensorflow-addons==0.23.0 "numpy<2"
    /tmp/venv-tfa/bin/python scripts/make_tfa_fixtures.py --out tests/data/tfa_fixtures.npz

It draws seeded random inputs (several batch shapes, class layouts, margins,
distance metrics, `soft`), evaluates `tfa.losses.triplet_semihard_loss`,
`triplet_hard_loss`, `lifted_struct_loss`, `npairs_loss` and `contrastive_loss`
on them, records the gradient of each loss with respect to its float input
(`tf.GradientTape`), and writes everything to one compressed `.npz`.

Layout of the file: for case `cNNN` the keys `cNNN/loss` (str), `cNNN/labels`,
`cNNN/x` (embeddings, similarity matrix or distances), `cNNN/margin`,
`cNNN/metric` (str; "" when not applicable), `cNNN/soft`, `cNNN/value`,
`cNNN/grad` (d value / d x; for `contrastive_loss`, which returns one value per
pair, d sum(values) / d x). `meta/*` keys record the versions used.
"""

import argparse

import numpy as np
import tensorflow as tf
import tensorflow_addons as tfa


def dot_similarity(x):
    """The callable `distance_metric` of tfa's docstring example (recorded as "dot")."""
    return tf.linalg.matmul(x, x, transpose_b=True)


METRICS = {"L2": "L2", "squared-L2": "squared-L2", "angular": "angular", "dot": dot_similarity}


def class_layout(rng, kind, batch):
    """Integer labels of one batch for a named class layout."""
    if kind == "balanced":  # P classes x K images
        k = 4 if batch % 4 == 0 else 2
        labels = np.repeat(np.arange(batch // k), k)
    elif kind == "uneven":  # uneven class sizes with singleton classes
        sizes, left = [], batch
        while left > 0:
            s = int(min(left, rng.choice([1, 1, 2, 3, 5, 7])))
            sizes.append(s)
            left -= s
        labels = np.repeat(np.arange(len(sizes)), sizes)
    elif kind == "two":
        labels = (rng.random(batch) < 0.4).astype(np.int64)
        labels[:2] = [0, 1]
    elif kind == "single":  # one class only: no negatives
        labels = np.zeros(batch, np.int64)
    elif kind == "distinct":  # all classes distinct: no positive pair
        labels = np.arange(batch)
    else:
        raise ValueError(kind)
    labels = rng.permutation(labels) * 3 + 7  # non-contiguous label values
    return labels.astype(np.int32)


def embeddings(rng, batch, dim, normalized, scale):
    x = rng.normal(size=(batch, dim)).astype(np.float32) * scale
    if normalized:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def value_and_grad(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        v = fn(x)
        total = tf.reduce_sum(v)
    g = tape.gradient(total, x)
    return v.numpy(), g.numpy()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="tests/data/tfa_fixtures.npz")
    p.add_argument("--seed", type=int, default=20200101)
    args = p.parse_args()

    rng = np.random.default_rng(args.seed)
    out = {
        "meta/tensorflow": np.array(tf.__version__),
        "meta/tensorflow_addons": np.array(tfa.__version__),
        "meta/seed": np.array(args.seed),
    }
    cases = []

    def add(loss, labels, x, value, grad, margin=np.nan, metric="", soft=False):
        name = f"c{len(cases):03d}"
        cases.append(name)
        out[f"{name}/loss"] = np.array(loss)
        out[f"{name}/labels"] = np.asarray(labels)
        out[f"{name}/x"] = np.asarray(x, np.float32)
        out[f"{name}/margin"] = np.array(margin, np.float32)
        out[f"{name}/metric"] = np.array(metric)
        out[f"{name}/soft"] = np.array(bool(soft))
        out[f"{name}/value"] = np.asarray(value, np.float32)
        out[f"{name}/grad"] = np.asarray(grad, np.float32)

    shapes = [(8, 4), (16, 8), (24, 16), (32, 6)]
    layouts = ["balanced", "uneven", "two"]
    margins = [0.2, 0.5, 1.0, 2.0]

    # Triplet semi-hard and hard: every metric x layout, cycling shapes/margins.
    i = 0
    for metric in ["L2", "squared-L2", "angular", "dot"]:
        for layout in layouts:
            b, d = shapes[i % len(shapes)]
            m = margins[i % len(margins)]
            normalized = metric != "squared-L2" or i % 2 == 0
            x = embeddings(rng, b, d, normalized, scale=1.0 if normalized else 0.7)
            y = class_layout(rng, layout, b)
            fn_m = METRICS[metric]
            v, g = value_and_grad(
                lambda e, y=y, m=m, f=fn_m: tfa.losses.triplet_semihard_loss(y, e, m, f), x
            )
            add("triplet_semihard_loss", y, x, v, g, m, metric)
            for soft in (False, True):
                v, g = value_and_grad(
                    lambda e, y=y, m=m, f=fn_m, s=soft: tfa.losses.triplet_hard_loss(
                        y, e, m, s, f
                    ),
                    x,
                )
                add("triplet_hard_loss", y, x, v, g, m, metric, soft)
            i += 1

    # Edge layouts: one class only, all classes distinct (tfa may return NaN).
    for layout in ["single", "distinct"]:
        x = embeddings(rng, 8, 4, True, 1.0)
        y = class_layout(rng, layout, 8)
        v, g = value_and_grad(lambda e, y=y: tfa.losses.triplet_semihard_loss(y, e, 1.0), x)
        add("triplet_semihard_loss", y, x, v, g, 1.0, "L2")
        v, g = value_and_grad(lambda e, y=y: tfa.losses.triplet_hard_loss(y, e, 1.0), x)
        add("triplet_hard_loss", y, x, v, g, 1.0, "L2", False)
        v, g = value_and_grad(lambda e, y=y: tfa.losses.lifted_struct_loss(y, e, 1.0), x)
        add("lifted_struct_loss", y, x, v, g, 1.0)

    # Lifted structured loss: raw (not normalised) embeddings, several margins.
    for j, layout in enumerate(layouts * 2):
        b, d = shapes[j % len(shapes)]
        m = margins[j % len(margins)]
        x = embeddings(rng, b, d, False, scale=0.5 + 0.25 * j)
        y = class_layout(rng, layout, b)
        v, g = value_and_grad(
            lambda e, y=y, m=m: tfa.losses.lifted_struct_loss(y, e, m), x
        )
        add("lifted_struct_loss", y, x, v, g, m)

    # N-pairs: similarity matrix of anchors vs positives, distinct and repeated labels.
    for b, repeated in [(6, False), (12, False), (12, True), (20, True)]:
        a = embeddings(rng, b, 8, False, 0.5)
        pos = a + 0.3 * embeddings(rng, b, 8, False, 1.0)
        sim = (a @ pos.T).astype(np.float32)
        y = (rng.integers(0, b // 3, size=b) if repeated else rng.permutation(b)).astype(np.int32)
        v, g = value_and_grad(lambda s, y=y: tfa.losses.npairs_loss(y, s), sim)
        add("npairs_loss", y, sim, v, g)

    # Contrastive (pairwise form): binary pair labels and distances, some beyond margin.
    for j, m in enumerate([0.5, 1.0, 2.0]):
        n = 10 + 5 * j
        dist = (rng.random(n) * 1.5 * m).astype(np.float32)
        y = (rng.random(n) < 0.5).astype(np.int32)
        v, g = value_and_grad(lambda t, y=y, m=m: tfa.losses.contrastive_loss(y, t, m), dist)
        add("contrastive_loss", y, dist, v, g, m)

    out["meta/cases"] = np.array(cases)
    np.savez_compressed(args.out, **out)
    nan = [c for c in cases if not np.all(np.isfinite(out[f"{c}/value"]))]
    print(f"wrote {len(cases)} cases to {args.out}; non-finite tfa values in {nan}")


if __name__ == "__main__":
    main()
