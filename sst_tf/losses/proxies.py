"""Proxy and classification-margin losses: Proxy-Anchor, ArcFace, CosFace, Sub-center ArcFace.

Each owns trainable weights per training class (proxies; class weights, K per
class with sub-centers), so its Keras form is a layer (`ProxyAnchor`,
`MarginSoftmax`): the weights go to the training checkpoint, not to the
embedding export, and are trained with their own learning rate. Labels map
to weight rows by `class_index` (`common.class_rows`); a label without a row
counts for nothing (Proxy-Anchor: it only acts as a negative).

Proxy-Anchor (Kim et al. 2020). The margin losses' logits are scaled cosines
between the L2-normalised embeddings and the normalised class weights, with
an additive margin on the target class: an angular one for ArcFace (Deng et
al. 2019), a cosine one for CosFace (Wang et al. 2018). Their loss is the
cross-entropy of those logits averaged over the batch's real rows, as
pytorch-metric-learning (PML) computes it (its parameter names and defaults:
ArcFace margin 28.6 degrees and scale 64, CosFace margin 0.35 and scale 64,
3 sub-centers); `MarginSoftmax.logits()` makes the same head a classifier.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from sst_tf import loss_registry
from sst_tf.losses import reductions
from sst_tf.losses.common import _check_inputs, class_rows


def proxy_anchor_loss(
    embeddings,
    labels,
    proxies,
    alpha: float = 32.0,
    delta: float = 0.1,
    sample_mask=None,
) -> tf.Tensor:
    """Proxy-Anchor loss (Kim et al., CVPR 2020).

    With s(x, p) the cosine similarity of embedding x and proxy p (one proxy per
    class), P+ the proxies with at least one positive in the batch and C the
    number of classes:
      L = 1/|P+| sum_{p in P+} log(1 + sum_{x of class p} exp(-alpha (s(x, p) - delta)))
        + 1/C    sum_{p}       log(1 + sum_{x not of class p} exp(alpha (s(x, p) + delta))).

    Args:
      embeddings: float [B, d].
      labels: int [B] class labels in [0, C).
      proxies: float [C, d] proxies (a trainable variable, see `ProxyAnchor`).
      alpha: scaling factor.
      delta: margin.
      sample_mask: optional bool [B]; False rows are padding.

    Returns:
      Scalar float32 loss.
    """
    x, labels, mask, _ = _check_inputs(embeddings, labels, sample_mask)
    p = tf.convert_to_tensor(proxies)
    if p.shape.rank is not None and p.shape.rank != 2:
        raise ValueError(f"proxies must have rank 2 [C, d], got shape {p.shape}")
    if p.shape[1] is not None and x.shape[1] is not None and p.shape[1] != x.shape[1]:
        raise ValueError(
            f"proxies have dimension {p.shape[1]} but embeddings have {x.shape[1]}"
        )
    p = tf.cast(p, tf.float32)
    num_classes = tf.shape(p)[0]
    labels = tf.cast(labels, tf.int32)
    cos = tf.matmul(tf.math.l2_normalize(x, axis=1), tf.math.l2_normalize(p, axis=1),
                    transpose_b=True)  # [B, C]
    onehot = tf.one_hot(labels, num_classes, on_value=True, off_value=False, dtype=tf.bool)
    pos = onehot & mask[:, None]
    neg = ~onehot & mask[:, None]
    pos_lse = reductions.masked_logsumexp(-alpha * (cos - delta), pos, 0)  # [C]
    neg_lse = reductions.masked_logsumexp(alpha * (cos + delta), neg, 0)
    with_pos = tf.reduce_any(pos, axis=0)
    pos_term = tf.reduce_sum(tf.where(with_pos, tf.nn.softplus(pos_lse), 0.0))
    pos_term = reductions.safe_divide(pos_term, tf.reduce_sum(tf.cast(with_pos, tf.float32)))
    neg_term = tf.reduce_sum(tf.nn.softplus(neg_lse)) / tf.cast(num_classes, tf.float32)
    return pos_term + neg_term


@keras.saving.register_keras_serializable(package="sst_tf")
class ProxyAnchor(keras.layers.Layer):
    """Owns the Proxy-Anchor proxies (one trainable [d] vector per class).

    Create it under the distribution strategy's scope, give its
    `trainable_variables` to an optimizer and put the layer into the
    checkpoint; `layer(embeddings, class_indices, sample_mask)` returns the
    loss. Classes are either `0..num_classes-1` or the given `class_ids`
    (e.g. the training split's labels); `class_index(labels)` maps labels to
    proxy rows (-1 for a label that has no proxy: such a row only acts as a
    negative). The authors trained the proxies with 100x the backbone
    learning rate (`lr_multiplier`, for the trainer to use).
    """

    def __init__(self, num_classes: int | None = None, embedding_dim: int = 512,
                 alpha: float | None = None, delta: float | None = None,
                 lr_multiplier: float = loss_registry.PROXY_LR_MULTIPLIER,
                 seed: int | None = None, class_ids=None, **kwargs):
        super().__init__(**kwargs)
        if class_ids is not None:
            class_ids = sorted({int(c) for c in np.asarray(class_ids).reshape(-1)})
            if num_classes is not None and num_classes != len(class_ids):
                raise ValueError(
                    f"num_classes ({num_classes}) != number of class_ids ({len(class_ids)})")
            num_classes = len(class_ids)
        if num_classes is None or num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.num_classes = int(num_classes)
        self.class_ids = class_ids
        self.embedding_dim = int(embedding_dim)
        defaults = loss_registry.loss_params("proxy_anchor")
        alpha = defaults["alpha"] if alpha is None else alpha
        delta = defaults["delta"] if delta is None else delta
        self.alpha = float(alpha)
        self.delta = float(delta)
        self.lr_multiplier = float(lr_multiplier)
        self.seed = seed
        # Kaiming-normal init (fan_out), as the authors' PyTorch code.
        self.proxies = self.add_weight(
            name="proxies",
            shape=(self.num_classes, self.embedding_dim),
            initializer=keras.initializers.RandomNormal(
                stddev=(2.0 / self.num_classes) ** 0.5, seed=seed),
            trainable=True,
            dtype="float32",
        )

    def class_index(self, labels) -> tf.Tensor:
        """Proxy row of each label: int32 [B], -1 where the label has no proxy."""
        labels = tf.cast(labels, tf.int64)
        if self.class_ids is None:
            inside = (labels >= 0) & (labels < self.num_classes)
            return tf.where(inside, tf.cast(labels, tf.int32), -1)
        return class_rows(tf.constant(self.class_ids, tf.int64), labels)

    def call(self, embeddings, class_indices, sample_mask=None):  # noqa: D102
        return proxy_anchor_loss(embeddings, class_indices, self.proxies, self.alpha,
                                 self.delta, sample_mask=sample_mask)

    def get_config(self):  # noqa: D102
        config = super().get_config()
        config.update(num_classes=self.num_classes, embedding_dim=self.embedding_dim,
                      alpha=self.alpha, delta=self.delta, lr_multiplier=self.lr_multiplier,
                      seed=self.seed, class_ids=self.class_ids)
        return config


# Largest |cosine| whose angle keeps a finite gradient through the margin terms.
_SQRT_FLOOR = 1e-12


def cosine_logits(embeddings, weights, sub_centers: int = 1) -> tf.Tensor:
    """Cosines between the rows of `embeddings` [B, d] and class weights [C * K, d] -> [B, C].

    With `sub_centers` K > 1, row c * K + k of `weights` is sub-center k of
    class c, and a class's cosine is its largest sub-center's (PML's layout).
    """
    x = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
    w = tf.math.l2_normalize(tf.cast(weights, tf.float32), axis=1)
    cos = tf.matmul(x, w, transpose_b=True)
    if sub_centers > 1:
        cos = tf.reduce_max(tf.reshape(cos, [tf.shape(cos)[0], -1, sub_centers]), axis=2)
    return cos


def _margin_softmax(embeddings, class_indices, weights, target_fn, scale: float,
                    sub_centers: int, sample_mask) -> tf.Tensor:
    """Mean cross-entropy of scaled cosine logits whose target entry `target_fn` changes."""
    x, labels, mask, _ = _check_inputs(embeddings, class_indices, sample_mask)
    w = tf.convert_to_tensor(weights)
    if w.shape.rank is not None and w.shape.rank != 2:
        raise ValueError(f"weights must have rank 2 [C, d], got shape {w.shape}")
    cos = cosine_logits(x, w, sub_centers)
    num_classes = tf.shape(cos)[1]
    labels = tf.cast(labels, tf.int32)
    valid = mask & (labels >= 0) & (labels < num_classes)
    target = tf.one_hot(tf.where(valid, labels, 0), num_classes, dtype=tf.float32)
    cos_t = tf.reduce_sum(cos * target, axis=1)
    logits = scale * (cos + target * (target_fn(cos_t) - cos_t)[:, None])
    ce = tf.reduce_logsumexp(logits, axis=1) - tf.reduce_sum(logits * target, axis=1)
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return tf.math.divide_no_nan(tf.reduce_sum(tf.where(valid, ce, 0.0)), count)


def _arc_margin(margin_degrees: float):
    m = math.radians(margin_degrees)
    cos_m, sin_m = math.cos(m), math.sin(m)

    def target(c):
        # cos(theta + m) without acos (whose gradient is infinite at |c| = 1).
        sin = tf.sqrt(tf.maximum(1.0 - c * c, _SQRT_FLOOR))
        plus = c * cos_m - sin * sin_m
        # Beyond theta = pi - m, PML keeps the logit decreasing: cos(theta) - m sin(m).
        return tf.where(c >= -cos_m, plus, c - m * sin_m)

    return target


def arcface_loss(embeddings, class_indices, weights, margin: float = 28.6,
                 scale: float = 64.0, sample_mask=None) -> tf.Tensor:
    """ArcFace (additive angular margin) loss, as PML's `ArcFaceLoss`.

    Args:
      embeddings: [B, d] embeddings (normalised here).
      class_indices: [B] int row of each label in `weights`; -1: no class
        (the row is left out).
      weights: [C, d] class weights (normalised here).
      margin: the angular margin in degrees (PML: 28.6, 0.5 rad).
      scale: the logits' scale s.
      sample_mask: optional [B] bool, False on padding rows.

    Returns:
      Scalar float32: the mean cross-entropy over the real rows (0 with none).
    """
    return _margin_softmax(embeddings, class_indices, weights, _arc_margin(margin), scale, 1,
                           sample_mask)


def cosface_loss(embeddings, class_indices, weights, margin: float = 0.35,
                 scale: float = 64.0, sample_mask=None) -> tf.Tensor:
    """CosFace (additive cosine margin) loss, as PML's `CosFaceLoss`.

    Arguments as `arcface_loss`; `margin` is subtracted from the target cosine.
    """
    return _margin_softmax(embeddings, class_indices, weights, lambda c: c - margin, scale, 1,
                           sample_mask)


def subcenter_arcface_loss(embeddings, class_indices, weights, margin: float = 28.6,
                           scale: float = 64.0, sub_centers: int = 3,
                           sample_mask=None) -> tf.Tensor:
    """Sub-center ArcFace, as PML's `SubCenterArcFaceLoss`.

    `weights` is [C * K, d] for K = `sub_centers`: row c * K + k is sub-center
    k of class c; each class's cosine is its nearest sub-center's. Other
    arguments as `arcface_loss`.
    """
    if sub_centers < 1:
        raise ValueError(f"sub_centers must be >= 1, got {sub_centers}")
    return _margin_softmax(embeddings, class_indices, weights, _arc_margin(margin), scale,
                           int(sub_centers), sample_mask)


# The losses by name (their argument defaults are their papers' and PML's,
# as in `sst_tf.loss_registry`).
MARGIN_FUNCTIONS = {
    "arcface": arcface_loss,
    "cosface": cosface_loss,
    "subcenter_arcface": subcenter_arcface_loss,
}


@keras.saving.register_keras_serializable(package="sst_tf")
class MarginSoftmax(keras.layers.Layer):
    """The class weights of ArcFace, CosFace or Sub-center ArcFace, and the loss.

    `layer(embeddings, labels, sample_mask)` is the loss of the batch (labels
    are the data set's class ids, mapped to weight rows by `class_index`; a
    label without a row counts for nothing); `logits(embeddings)` the scaled
    cosines [B, C], a classifier over the training classes.
    """

    def __init__(self, loss: str = "arcface", class_ids=None, embedding_dim: int = 512,
                 margin: float | None = None, scale: float | None = None,
                 sub_centers: int | None = None, seed: int | None = None,
                 weight_multiplier: float = 1.0, **kwargs):
        """Creates the layer (inside the strategy's scope under a strategy).

        Args:
          loss: "arcface", "cosface" or "subcenter_arcface".
          class_ids: the training labels (or their unique values): one row (K
            rows with sub-centers) of weights per class.
          embedding_dim: d.
          margin: the margin; None: the loss's (`sst_tf.loss_registry`: 28.6
            degrees for ArcFace, 0.35 for CosFace).
          scale: the logits' scale; None: the loss's (64).
          sub_centers: K, for "subcenter_arcface"; None: the loss's (3).
          seed: seed of the weights' initialisation (normal, as PML's).
          weight_multiplier: the weights are stored divided by this and used
            times it. With an Adam-family optimizer (whose step does not
            depend on the gradient's scale) they then learn this many times
            faster than the model under one optimizer (`model.fit`); the
            trainer gives them an optimizer of their own and keeps 1.
          **kwargs: `keras.layers.Layer` arguments.
        """
        super().__init__(**kwargs)
        if loss not in MARGIN_FUNCTIONS:
            raise ValueError(f"loss must be one of {'|'.join(MARGIN_FUNCTIONS)}, got {loss!r}")
        if weight_multiplier <= 0:
            raise ValueError(f"weight_multiplier must be > 0, got {weight_multiplier}.")
        self.loss = loss
        self.class_ids = sorted({int(c) for c in np.asarray(class_ids).reshape(-1)})
        if not self.class_ids:
            raise ValueError("class_ids is empty: a margin softmax needs at least one class.")
        self.embedding_dim = int(embedding_dim)
        spec = loss_registry.spec(loss)
        defaults = loss_registry.loss_params(loss)
        self.margin = float(spec.margin if margin is None else margin)
        self.scale = float(defaults["scale"] if scale is None else scale)
        self.sub_centers = (int(defaults["sub_centers"] if sub_centers is None else sub_centers)
                            if loss == "subcenter_arcface" else 1)
        if self.sub_centers < 1:
            raise ValueError(f"sub_centers must be >= 1, got {self.sub_centers}")
        self.seed = seed
        self.weight_multiplier = float(weight_multiplier)
        self.stored_weights = self.add_weight(
            name="class_weights", shape=(len(self.class_ids) * self.sub_centers,
                                         self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / self.weight_multiplier,
                                                        seed=seed),
            trainable=True, dtype="float32")
        self._ids = tf.constant(self.class_ids, tf.int64)
        self.built = True  # its one weight exists: nothing to build from the inputs

    @property
    def class_weights(self) -> tf.Tensor:
        """The class weights [C * K, d] (row c * K + k: sub-center k of class c)."""
        if self.weight_multiplier == 1.0:
            return self.stored_weights
        return self.stored_weights * self.weight_multiplier

    def class_index(self, labels) -> tf.Tensor:
        """Weight row (class) of each label: int32 [B], -1 where the label has none."""
        return class_rows(self._ids, labels)

    def logits(self, embeddings) -> tf.Tensor:
        """Scaled cosines to every class [B, C] (no margin): the classifier's logits."""
        return self.scale * cosine_logits(embeddings, self.class_weights, self.sub_centers)

    def call(self, embeddings, labels, sample_mask=None):  # noqa: D102
        index = self.class_index(labels)
        kwargs = {"margin": self.margin, "scale": self.scale, "sample_mask": sample_mask}
        if self.loss == "subcenter_arcface":
            kwargs["sub_centers"] = self.sub_centers
        return MARGIN_FUNCTIONS[self.loss](embeddings, index, self.class_weights, **kwargs)

    def get_config(self) -> dict:  # noqa: D102
        config = super().get_config()
        config.update(loss=self.loss, class_ids=self.class_ids,
                      embedding_dim=self.embedding_dim, margin=self.margin, scale=self.scale,
                      sub_centers=self.sub_centers, seed=self.seed,
                      weight_multiplier=self.weight_multiplier)
        return config
