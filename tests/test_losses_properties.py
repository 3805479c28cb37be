"""Numerical properties of every loss in sst_tf.losses at embedding scales 1e-3 .. 1e3.

For each loss, on a small batch with a single-member class and two padding rows:
  (a) value and gradient are finite;
  (b) the value equals an independent float64 NumPy loop written here from the
      loss's definition (not from losses.py);
  (c) the gradient equals the central finite difference of that float64 loop;
  (d) padding rows get exactly zero gradient and do not change the value.
Plus regression cases where an exp that was masked after evaluation overflowed
and turned a finite loss into NaN gradients.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from sst_tf import losses

SCALES = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]
N_VALID, N_PAD, DIM, N_CLASSES = 8, 2, 6, 4


# ---------------------------------------------------------------------------
# float64 references, straight from the definitions
# ---------------------------------------------------------------------------


def sq_dist(x):
    """Squared Euclidean distances from explicit differences (no Gram matrix)."""
    diff = x[:, None, :] - x[None, :, :]
    return np.sum(diff * diff, axis=-1)


def lse(values):
    """log(sum(exp(values))) of a non-empty list, shifted by its max."""
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def softplus(z):
    return float(np.logaddexp(0.0, z))


def unit_rows(x):
    """Rows divided by their norm (an all-zero padding row stays zero)."""
    norms = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
    return x / np.where(norms > 0, norms, 1.0)


def tfa_distance(x, metric):
    if metric == "squared-L2":
        return sq_dist(x)
    if metric == "L2":
        return np.sqrt(sq_dist(x))
    u = unit_rows(x)
    return np.maximum(1.0 - u @ u.T, 0.0)


def rows(mask):
    return [i for i in range(len(mask)) if mask[i]]


def target_ok(a, t, labels, mask):
    return 0 <= t < len(labels) and t != a and mask[t] and labels[t] == labels[a]


def ref_sst(x, labels, mask, targets):
    d = sq_dist(x)
    terms = []
    for a in rows(mask):
        for t in targets[a]:
            if not target_ok(a, t, labels, mask):
                continue
            for i in rows(mask):
                if labels[i] != labels[a]:
                    terms.append(softplus(d[a, t] - (d[a, i] + d[t, i]) / 2))
    return float(np.mean(terms)) if terms else 0.0


def ref_triplet(x, labels, mask, targets, margin=0.2):
    d = sq_dist(x)
    terms = []
    for a in rows(mask):
        for t in targets[a]:
            if not target_ok(a, t, labels, mask):
                continue
            for i in rows(mask):
                if labels[i] != labels[a]:
                    terms.append(max(0.0, d[a, t] + margin - d[a, i]))
    return float(np.mean(terms)) if terms else 0.0


def ref_contrastive(x, labels, mask, margin=0.5):
    d = sq_dist(x)
    valid = rows(mask)
    total = 0.0
    for p in valid:
        for q in valid:
            total += d[p, q] if labels[p] == labels[q] else max(0.0, margin - d[p, q])
    return total / len(valid)


def ref_semihard(x, labels, mask, metric, margin=1.0):
    d = tfa_distance(x, metric)
    valid = rows(mask)
    terms = []
    for a in valid:
        negs = [d[a, n] for n in valid if labels[n] != labels[a]]
        for p in valid:
            if p == a or labels[p] != labels[a]:
                continue
            farther = [v for v in negs if v > d[a, p]]
            d_an = min(farther) if farther else max(negs)
            terms.append(max(margin + d[a, p] - d_an, 0.0))
    return float(np.mean(terms)) if terms else 0.0


def ref_hard(x, labels, mask, metric, soft, margin=1.0):
    d = tfa_distance(x, metric)
    valid = rows(mask)
    terms = []
    for a in valid:
        row = [d[a, j] for j in valid]
        pos = [d[a, p] for p in valid if p != a and labels[p] == labels[a]]
        neg = [d[a, n] for n in valid if labels[n] != labels[a]]
        hp = max(pos) if pos else min(row)
        hn = min(neg) if neg else max(row)
        terms.append(softplus(hp - hn) if soft else max(hp - hn + margin, 0.0))
    return float(np.mean(terms))


def ref_lifted(x, labels, mask, margin=1.0):
    d = np.sqrt(sq_dist(x))
    valid = rows(mask)
    total, pairs = 0.0, 0
    for i in valid:
        for j in valid:
            if j <= i or labels[i] != labels[j]:
                continue
            pairs += 1
            vals = [margin - d[i, k] for k in valid if labels[k] != labels[i]]
            vals += [margin - d[j, k] for k in valid if labels[k] != labels[j]]
            total += max(lse(vals) + d[i, j], 0.0) ** 2
    return total / (2 * pairs) if pairs else 0.0


def ref_npairs(labels, s):
    total = 0.0
    for i in range(len(labels)):
        same = [j for j in range(len(labels)) if labels[j] == labels[i]]
        z = lse(list(s[i]))
        total += -sum(s[i, j] - z for j in same) / len(same)
    return total / len(labels)


def ref_batch_npairs(x, labels, mask, scale=1.0):
    valid = rows(mask)
    terms = []
    for i in valid:
        others = [j for j in valid if j != i]
        pos = [j for j in others if labels[j] == labels[i]]
        if not pos:
            continue
        logits = {j: scale * float(x[i] @ x[j]) for j in others}
        terms.append(lse([logits[j] for j in others]) - np.mean([logits[j] for j in pos]))
    return float(np.mean(terms)) if terms else 0.0


def ref_pair_contrastive(y, dist, margin=1.0):
    return np.array([yy * dd**2 + (1 - yy) * max(margin - dd, 0.0) ** 2
                     for yy, dd in zip(y, dist, strict=True)])


def ref_batch_pair_contrastive(x, labels, mask, margin=1.0):
    d = np.sqrt(sq_dist(x))
    valid = rows(mask)
    terms = []
    for i in valid:
        for j in valid:
            if j > i:
                y = float(labels[i] == labels[j])
                terms.append(y * d[i, j] ** 2 + (1 - y) * max(margin - d[i, j], 0.0) ** 2)
    return float(np.mean(terms))


def ref_multi_similarity(x, labels, mask, alpha=2.0, beta=50.0, base=0.5, eps=0.1):
    s = unit_rows(x) @ unit_rows(x).T
    valid = rows(mask)
    total = 0.0
    for i in valid:
        pos = [s[i, j] for j in valid if j != i and labels[j] == labels[i]]
        neg = [s[i, k] for k in valid if labels[k] != labels[i]]
        if not pos or not neg:
            continue
        mined_pos = [v for v in pos if v - eps < max(neg)]
        mined_neg = [v for v in neg if v + eps > min(pos)]
        if not mined_pos or not mined_neg:
            continue
        total += lse([0.0] + [-alpha * (v - base) for v in mined_pos]) / alpha
        total += lse([0.0] + [beta * (v - base) for v in mined_neg]) / beta
    return total / len(valid)


def ref_proxy_anchor(x, labels, mask, proxies, alpha=32.0, delta=0.1):
    s = unit_rows(x) @ unit_rows(proxies).T
    valid = rows(mask)
    pos_sum, with_pos, neg_sum = 0.0, 0, 0.0
    for c in range(len(proxies)):
        members = [i for i in valid if labels[i] == c]
        others = [i for i in valid if labels[i] != c]
        if members:
            with_pos += 1
            pos_sum += lse([0.0] + [-alpha * (s[i, c] - delta) for i in members])
        neg_sum += lse([0.0] + [alpha * (s[i, c] + delta) for i in others])
    return pos_sum / with_pos + neg_sum / len(proxies)


# ---------------------------------------------------------------------------
# Batches, checks
# ---------------------------------------------------------------------------


def make_batch(seed, scale):
    """N_VALID real rows (class 2 has one member) and N_PAD padding rows.

    The padding rows carry labels that would pair with real rows; the last one
    is all zeros. `scale="l2"` gives L2-normalised real rows.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.array([0, 0, 0, 1, 1, 2, 3, 3]))
    x = rng.normal(size=(N_VALID + N_PAD, DIM))
    if scale == "l2":
        x[:N_VALID] = unit_rows(x[:N_VALID])
    else:
        x *= scale
    x[-1] = 0.0
    labels = np.concatenate([labels, labels[:N_PAD]]).astype(np.int32)
    mask = np.arange(N_VALID + N_PAD) < N_VALID
    return x.astype(np.float32), labels, mask


def make_targets(labels, mask):
    """Per anchor: its same-label real rows, then a padding row, -1, and itself."""
    b = len(labels)
    table = np.full((b, 5), -1, np.int32)
    for a in range(b):
        same = [j for j in rows(mask) if j != a and labels[j] == labels[a]][:2]
        table[a, : len(same)] = same
        table[a, 2] = N_VALID  # a padding row: never a target
        table[a, 4] = a  # itself: never a target
    return table


def numeric_grad(f, x):
    x = x.astype(np.float64)
    h = 1e-5 * max(float(np.max(np.abs(x))), 1e-30)
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def value_and_grad(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        v = tf.reduce_sum(fn(x))
    return float(v.numpy()), tape.gradient(v, x).numpy()


def check_against_reference(fn, ref, x, unit):
    """(a) finite, (b) value vs float64 reference, (c) gradient vs its central differences."""
    v, g = value_and_grad(fn, x)
    assert np.isfinite(v) and np.all(np.isfinite(g)), (v, g)
    x64 = x.astype(np.float64)
    want = ref(x64)
    assert abs(v - want) <= 1e-4 * (abs(want) + unit), (v, want)
    g_ref = numeric_grad(ref, x64)
    tol = 1e-3 * float(np.max(np.abs(g_ref))) + 1e-6 * unit / max(float(np.max(np.abs(x))), 1e-30)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=tol)
    return v, g


def scale_value(scale):
    return 1.0 if scale == "l2" else scale


# Each case: name -> (loss(x, labels, mask_or_None, targets), reference(x, labels, mask,
# targets), size of the loss's natural unit for a given scale s).
def _sq(s):
    return s * s


def _lin(s):
    return s


def _one(s):
    return 1.0


PROXIES = np.random.default_rng(99).normal(size=(N_CLASSES, DIM)).astype(np.float32)

CASES = {
    "sst_loss": (
        lambda x, lab, m, t: losses.sst_loss(x, lab, t, sample_mask=m),
        lambda x, lab, m, t: ref_sst(x, lab, m, t), _sq),
    "triplet_loss": (
        lambda x, lab, m, t: losses.triplet_loss(x, lab, t, sample_mask=m),
        lambda x, lab, m, t: ref_triplet(x, lab, m, t), _sq),
    "contrastive_loss": (
        lambda x, lab, m, t: losses.contrastive_loss(x, lab, sample_mask=m),
        lambda x, lab, m, t: ref_contrastive(x, lab, m), _sq),
    "lifted_struct_loss": (
        lambda x, lab, m, t: losses.lifted_struct_loss(x, lab, sample_mask=m),
        lambda x, lab, m, t: ref_lifted(x, lab, m), _lin),
    "batch_npairs_loss": (
        lambda x, lab, m, t: losses.batch_npairs_loss(x, lab, sample_mask=m),
        lambda x, lab, m, t: ref_batch_npairs(x, lab, m), _sq),
    # A temperature of 1/16 (--npairs_scale=16) on the same batches.
    "batch_npairs_loss[scale=16]": (
        lambda x, lab, m, t: losses.batch_npairs_loss(x, lab, sample_mask=m, scale=16.0),
        lambda x, lab, m, t: ref_batch_npairs(x, lab, m, scale=16.0), lambda s: 16 * s * s),
    "batch_pairwise_contrastive_loss": (
        lambda x, lab, m, t: losses.batch_pairwise_contrastive_loss(x, lab, sample_mask=m),
        lambda x, lab, m, t: ref_batch_pair_contrastive(x, lab, m), _sq),
    "multi_similarity_loss": (
        lambda x, lab, m, t: losses.multi_similarity_loss(x, lab, sample_mask=m),
        lambda x, lab, m, t: ref_multi_similarity(x, lab, m), _one),
    "proxy_anchor_loss": (
        lambda x, lab, m, t: losses.proxy_anchor_loss(x, lab, PROXIES, sample_mask=m),
        lambda x, lab, m, t: ref_proxy_anchor(x, lab, m, PROXIES.astype(np.float64)), _one),
}
METRIC_UNIT = {"L2": _lin, "squared-L2": _sq, "angular": _one}
for _metric in ("L2", "squared-L2", "angular"):
    CASES[f"triplet_semihard_loss[{_metric}]"] = (
        lambda x, lab, m, t, mt=_metric: losses.triplet_semihard_loss(
            x, lab, distance_metric=mt, sample_mask=m),
        lambda x, lab, m, t, mt=_metric: ref_semihard(x, lab, m, mt), METRIC_UNIT[_metric])
    for _soft in (False, True):
        CASES[f"triplet_hard_loss[{_metric},soft={_soft}]"] = (
            lambda x, lab, m, t, mt=_metric, sf=_soft: losses.triplet_hard_loss(
                x, lab, soft=sf, distance_metric=mt, sample_mask=m),
            lambda x, lab, m, t, mt=_metric, sf=_soft: ref_hard(x, lab, m, mt, sf),
            METRIC_UNIT[_metric])

# The tensorflow-addons-style losses keep float64 input in float64.
ACCEPT_FLOAT64 = {n for n in CASES if n.startswith(("triplet_semihard", "triplet_hard", "lifted"))}
# Losses that normalise inside: "l2" inputs say nothing new.
SCALE_FREE = {"multi_similarity_loss", "proxy_anchor_loss"}
PARAMS = [(name, scale) for name in CASES for scale in SCALES + ["l2"]
          if not (scale == "l2" and name in SCALE_FREE)]


@pytest.mark.parametrize("name,scale", PARAMS)
def test_loss_value_and_gradient_match_float64_reference(name, scale):
    loss, ref, unit_of = CASES[name]
    x, labels, mask = make_batch(sum(map(ord, name)) % 1000, scale)
    targets = make_targets(labels, mask)
    unit = unit_of(scale_value(scale))
    v, g = check_against_reference(
        lambda e: loss(e, labels, mask, targets),
        lambda e: ref(e, labels, mask, targets),
        x, unit,
    )
    # (d) padding rows: zero gradient, and the value of the batch without them.
    assert np.all(g[N_VALID:] == 0.0)
    # (targets at the padding rows, ignored above, are no row of the shorter batch: -1)
    kept = np.where(targets[:N_VALID] < N_VALID, targets[:N_VALID], -1)
    v_unpadded, g_unpadded = value_and_grad(
        lambda e: loss(e, labels[:N_VALID], None, kept), x[:N_VALID])
    assert abs(v - v_unpadded) <= 1e-5 * (abs(v) + unit)
    np.testing.assert_allclose(g[:N_VALID], g_unpadded, rtol=1e-4,
                               atol=1e-5 * float(np.max(np.abs(g_unpadded))))
    if name in ACCEPT_FLOAT64:
        # The same loss through TF autodiff in float64: a second gradient reference.
        v64, g64 = value_and_grad(lambda e: loss(e, labels, mask, targets), x.astype(np.float64))
        assert abs(v - v64) <= 1e-4 * (abs(v64) + unit)
        np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-3 * float(np.max(np.abs(g64))))


@pytest.mark.parametrize("scale", SCALES + ["l2"])
def test_npairs_loss_matches_float64_reference(scale):
    # npairs_loss takes a similarity matrix: anchors . positives^T of one batch.
    x, labels, _ = make_batch(7, scale)
    x, labels = x[:N_VALID], labels[:N_VALID]
    check_against_reference(
        lambda e: losses.npairs_loss(tf.matmul(e, e, transpose_b=True), labels),
        lambda e: ref_npairs(labels, e @ e.T),
        x, scale_value(scale) ** 2,
    )


@pytest.mark.parametrize("scale", SCALES)
def test_pairwise_contrastive_loss_matches_float64_reference(scale):
    # Per-pair form: distances of pairs of embeddings at the given scale.
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(2, 12, DIM)) * scale
    dist = np.sqrt(np.sum((a - b) ** 2, axis=1)).astype(np.float32)
    dist[:3] *= 1e-3  # some pairs well inside the margin at every scale
    y = (rng.random(12) < 0.5).astype(np.float32)
    out = losses.pairwise_contrastive_loss(dist, y).numpy()
    want = ref_pair_contrastive(y, dist.astype(np.float64))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6 * max(scale * scale, 1.0))
    check_against_reference(
        lambda d: losses.pairwise_contrastive_loss(d, y),
        lambda d: float(np.sum(ref_pair_contrastive(y, d))),
        dist, max(scale * scale, 1.0),
    )


@pytest.mark.parametrize("scale", SCALES)
def test_keras_loss_classes_finite_and_match_reference(scale):
    x, labels, _ = make_batch(11, scale)
    x, labels = x[:N_VALID], labels[:N_VALID]
    x64 = x.astype(np.float64)
    all_rows = np.ones(N_VALID, bool)
    layer = losses.ProxyAnchor(num_classes=N_CLASSES, embedding_dim=DIM, seed=0)
    proxies = layer.proxies.numpy().astype(np.float64)
    pairs_y = (labels[:4] == labels[4:]).astype(np.float32)
    cases = [
        (losses.TfaTripletSemiHardLoss(), lambda e: e,
         ref_semihard(x64, labels, all_rows, "L2"), scale),
        (losses.TfaTripletHardLoss(soft=True, distance_metric="squared-L2"), lambda e: e,
         ref_hard(x64, labels, all_rows, "squared-L2", True), scale * scale),
        (losses.TfaLiftedStructLoss(), lambda e: e, ref_lifted(x64, labels, all_rows), scale),
        (losses.TfaNpairsLoss(), lambda e: tf.matmul(e, e, transpose_b=True),
         ref_npairs(labels, x64 @ x64.T), scale * scale),
    ]
    for loss, pred, want, unit in cases:
        v, g = value_and_grad(lambda e, loss=loss, pred=pred: loss(labels, pred(e)), x)
        assert np.isfinite(v) and np.all(np.isfinite(g)), loss.name
        assert abs(v - want) <= 1e-4 * (abs(want) + unit), (loss.name, v, want)
    contrastive = losses.TfaContrastiveLoss()
    v, g = value_and_grad(
        lambda e: contrastive(pairs_y, tf.norm(e[:4] - e[4:], axis=1)), x)
    dist = np.sqrt(np.sum((x64[:4] - x64[4:]) ** 2, axis=1))
    want = float(np.mean(ref_pair_contrastive(pairs_y, dist)))
    assert np.isfinite(v) and np.all(np.isfinite(g))
    assert abs(v - want) <= 1e-4 * (abs(want) + scale * scale)
    v, g = value_and_grad(lambda e: layer(e, labels), x)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    assert abs(v - ref_proxy_anchor(x64, labels, all_rows, proxies)) <= 1e-4 * (abs(v) + 1)


def test_masked_logsumexp_ignores_overflowing_masked_entries():
    # The shared helper every exponential goes through: entries outside the mask
    # may be huge (their exp overflows float32) or NaN-free garbage; rows with an
    # empty mask give a finite sentinel; all with finite gradients.
    x = tf.constant([[1e4, 0.0, 1.0], [-3.0, 2e3, 5.0], [7e3, 1.0, 2.0]])
    mask = tf.constant([[False, True, True], [True, False, True], [False, False, False]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = losses.reductions.masked_logsumexp(x, mask, 1)
        total = tf.reduce_sum(out[:2])
    g = tape.gradient(total, x).numpy()
    np.testing.assert_allclose(out[:2].numpy(), [np.logaddexp(0.0, 1.0), np.logaddexp(-3.0, 5.0)],
                               rtol=1e-6)
    assert out[2].numpy() < -1e29
    assert np.all(np.isfinite(g))
    assert np.all(g[~mask.numpy()] == 0.0)
    np.testing.assert_allclose(g.sum(axis=1), [1.0, 1.0, 0.0], rtol=1e-6)


# ---------------------------------------------------------------------------
# Regressions: exp evaluated on masked entries overflowed (finite value, NaN gradient)
# ---------------------------------------------------------------------------


def test_lifted_struct_with_overflowing_masked_exp():
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32) * 10
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    mask = np.ones(8, bool)
    check_against_reference(lambda e: losses.lifted_struct_loss(e, labels),
                            lambda e: ref_lifted(e, labels, mask), x, 10.0)


def test_batch_npairs_with_overflowing_masked_exp():
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32) * (10 / 8)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    mask = np.ones(8, bool)
    check_against_reference(lambda e: losses.batch_npairs_loss(e, labels),
                            lambda e: ref_batch_npairs(e, labels, mask), x, 1.0)


def test_multi_similarity_with_near_antipodal_negative():
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.1]], np.float32)
    labels = np.array([0, 0, 1])
    mask = np.ones(3, bool)
    check_against_reference(lambda e: losses.multi_similarity_loss(e, labels),
                            lambda e: ref_multi_similarity(e, labels, mask), x, 1.0)


def test_proxy_anchor_with_large_alpha():
    # alpha = 100: exp arguments span [-110, 110], beyond float32's exp range.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    proxies = rng.normal(size=(5, 4)).astype(np.float32)  # class 4 has no member
    mask = np.ones(8, bool)
    check_against_reference(
        lambda e: losses.proxy_anchor_loss(e, labels, proxies, alpha=100.0),
        lambda e: ref_proxy_anchor(e, labels, mask, proxies.astype(np.float64), alpha=100.0),
        x, 1.0)
