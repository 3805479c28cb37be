"""Classification-margin losses: ArcFace, CosFace and Sub-center ArcFace.

Each class has a weight vector (several for Sub-center ArcFace); the logits
are scaled cosines between the L2-normalised embeddings and the normalised
class weights, with an additive margin on the target class: an angular one
for ArcFace (Deng et al. 2019), a cosine one for CosFace (Wang et al. 2018).
The loss is the cross-entropy of those logits, averaged over the batch's
real rows, as pytorch-metric-learning (PML) computes it (its parameter names
and defaults: ArcFace margin 28.6 degrees and scale 64, CosFace margin 0.35
and scale 64, 3 sub-centers).

The weights are trainable variables the loss owns, so the Keras form is a
layer (`MarginSoftmax`), like `sst_tf.losses.ProxyAnchor`: its weights go to
the training checkpoint, not to the embedding export, and `logits()` makes
the same head a classifier.
"""

from __future__ import annotations

import inspect
import math

import keras
import numpy as np
import tensorflow as tf

from sst_tf.losses.common import _check_inputs, class_rows

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


# The losses by name (their argument defaults are their papers' and PML's).
MARGIN_LOSSES = {
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
                 margin: float | None = None, scale: float = 64.0, sub_centers: int = 3,
                 seed: int | None = None, **kwargs):
        """Creates the layer (inside the strategy's scope under a strategy).

        Args:
          loss: "arcface", "cosface" or "subcenter_arcface".
          class_ids: the training labels (or their unique values): one row (K
            rows with sub-centers) of weights per class.
          embedding_dim: d.
          margin: the margin (None: the loss's, 28.6 degrees or 0.35).
          scale: the logits' scale.
          sub_centers: K, for "subcenter_arcface".
          seed: seed of the weights' initialisation (normal, as PML's).
          **kwargs: `keras.layers.Layer` arguments.
        """
        super().__init__(**kwargs)
        if loss not in MARGIN_LOSSES:
            raise ValueError(f"loss must be one of {'|'.join(MARGIN_LOSSES)}, got {loss!r}")
        self.loss = loss
        self.class_ids = sorted({int(c) for c in np.asarray(class_ids).reshape(-1)})
        if not self.class_ids:
            raise ValueError("class_ids is empty: a margin softmax needs at least one class.")
        self.embedding_dim = int(embedding_dim)
        default = inspect.signature(MARGIN_LOSSES[loss]).parameters["margin"].default
        self.margin = float(default if margin is None else margin)
        self.scale = float(scale)
        self.sub_centers = int(sub_centers) if loss == "subcenter_arcface" else 1
        self.seed = seed
        self.class_weights = self.add_weight(
            name="class_weights", shape=(len(self.class_ids) * self.sub_centers,
                                         self.embedding_dim),
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=seed),
            trainable=True, dtype="float32")
        self._ids = tf.constant(self.class_ids, tf.int64)

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
        return MARGIN_LOSSES[self.loss](embeddings, index, self.class_weights, **kwargs)

    def get_config(self) -> dict:  # noqa: D102
        config = super().get_config()
        config.update(loss=self.loss, class_ids=self.class_ids,
                      embedding_dim=self.embedding_dim, margin=self.margin, scale=self.scale,
                      sub_centers=self.sub_centers, seed=self.seed)
        return config
