"""Every loss of the project as a `keras.losses.Loss` for `model.fit`.

`model.fit` hands a loss only `(y_true, y_pred)`. The sampling data source
(`sst_tf.fit.data`) therefore packs everything a loss needs into one int32
tensor per batch, `y = [labels | mask | targets]` of shape [B, 2 + k]:

  y[:, 0]   class labels (-1 on padding rows)
  y[:, 1]   1 on real rows, 0 on padding rows (the plan's mask)
  y[:, 2:]  batch-local target neighbours, -1 where none (k columns)

`pack_targets` / `unpack_targets` convert. `MetricLoss(name)` is the loss
named as the trainer's `--loss` (`LOSSES`), computed by the pure functions of
`sst_tf.losses` in float32 whatever the model's dtype policy. Those functions
take `(embeddings, labels, targets, mask)`; the classes here keep Keras'
`(y_true, y_pred)` and pass `y_pred` as the embeddings, the unpacked `y_true`
as the rest.

Under a `tf.distribute` strategy each replica computes the loss of its own
batch. Keras sums the replicas' gradients, so, like Keras' own losses, the
value is divided by the number of replicas in sync (Keras multiplies the
logged loss back): the update then equals one device's update on the mean of
the replicas' batch losses.

Proxy-Anchor has trainable proxies, and ArcFace, CosFace and Sub-center
ArcFace trainable class weights, which a `Loss` cannot own (`fit` only trains
the model's variables): `ProxyAnchorModel` and `MarginSoftmaxModel` wrap the
embedding model, own those weights and compute the loss themselves (compile
them without `loss`); their `embedding_model` is what to save for inference.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from sst_tf import loss_registry, losses, negatives
from sst_tf.config import LOSSES as TRAINER_LOSSES
from sst_tf.config import TARGET_LOSSES  # noqa: F401 - re-exported: need target tables
from sst_tf.losses.common import class_rows

# The trainer's --loss names but those that own weights (`ProxyAnchorModel`,
# `MarginSoftmaxModel`).
LOSSES = tuple(name for name in TRAINER_LOSSES if name not in loss_registry.WEIGHTED_LOSSES)


def pack_targets(labels, targets, mask) -> tf.Tensor:
    """Packs one batch's (labels [B], targets [B, k], mask [B]) into int32 [B, 2 + k]."""
    labels = tf.cast(tf.reshape(labels, [-1, 1]), tf.int32)
    mask = tf.cast(tf.reshape(mask, [-1, 1]), tf.int32)
    return tf.concat([labels, mask, tf.cast(targets, tf.int32)], axis=1)


def unpack_targets(y) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Inverse of `pack_targets`: (labels int32 [B], targets int32 [B, k], mask bool [B])."""
    y = tf.convert_to_tensor(y)
    if y.shape.rank is not None and (y.shape.rank != 2 or (
            y.shape[1] is not None and y.shape[1] < 2)):
        raise ValueError(
            f"y must be int [B, 2 + k] (labels, mask, targets; see pack_targets), got shape "
            f"{y.shape}")
    y = tf.cast(y, tf.int32)
    return y[:, 0], y[:, 2:], y[:, 1] > 0


def loss_function(name: str, margin: float | None = None,
                  params: dict | None = None,
                  normalize: bool | None = None) -> Callable[..., tf.Tensor]:
    """fn(embeddings, labels, targets, mask) -> scalar of a loss name (see `LOSSES`).

    The trainer's function (`sst_tf.losses.make_loss`) with the same defaults,
    read from `sst_tf.loss_registry`: at defaults `MetricLoss(name)` computes
    what `--loss=name` trains.

    Args:
      name: the loss, as the trainer's `--loss`.
      margin: the loss's margin; None: its default.
      params: fixed parameters replacing the registry's (e.g. SST's
        `{"scale": 32.0}`, the trainer's --sst_scale); None: the registry's.
      normalize: whether the model's embeddings are L2-normalised (as
        `sst_tf.model.build_model(normalize=...)`); None: the loss's default
        geometry (`LossSpec.normalize`), which the model must then have.

    Raises:
      ValueError: unknown name, or a loss that owns weights (use
        `ProxyAnchorModel` or `MarginSoftmaxModel`).
    """
    if name == "proxy_anchor":
        raise ValueError(
            "proxy_anchor has trainable proxies, which a keras Loss cannot own: wrap the model "
            "in sst_tf.fit.ProxyAnchorModel and compile it without a loss.")
    if name in loss_registry.MARGIN_LOSSES:
        raise ValueError(
            f"{name} has trainable class weights, which a keras Loss cannot own: wrap the model "
            f"in sst_tf.fit.MarginSoftmaxModel(model, {name!r}, class_ids) and compile it "
            "without a loss.")
    return losses.make_loss(name, margin, params=params, normalize=normalize)


class _NamedLoss:
    """What `MetricLoss` and `LossValue` share: a loss by name, applied to Keras' arguments."""

    def _set_loss(self, loss: str, margin: float | None, params: dict | None,
                  normalize: bool | None, global_negatives: bool = False) -> None:
        self.loss = loss
        self.margin = margin
        self.params = ({k: v if isinstance(v, str) else float(v) for k, v in params.items()}
                       if params else None)
        self.normalize = normalize
        self.global_negatives = bool(global_negatives)
        self._fn = loss_function(loss, margin, self.params, normalize)
        if self.global_negatives:
            self._fn = negatives.global_negatives(self._fn)

    def _batch_loss(self, y_true, y_pred) -> tf.Tensor:
        """The loss of one batch: Keras' (y_true, y_pred) as (embeddings, labels, targets, mask)."""
        labels, targets, mask = unpack_targets(y_true)
        return self._fn(tf.cast(y_pred, tf.float32), labels, targets, mask)

    def get_config(self) -> dict:  # noqa: D102
        return {"loss": self.loss, "margin": self.margin, "name": self.name,
                "params": self.params, "normalize": self.normalize,
                "global_negatives": self.global_negatives}


@keras.saving.register_keras_serializable(package="sst_tf")
class MetricLoss(_NamedLoss, keras.losses.Loss):
    """A metric-learning loss of the project for `model.fit`.

    `y_true` is the packed int32 [B, 2 + k] of `pack_targets` (what
    `SamplerDataset` yields), `y_pred` the [B, d] embeddings (cast to float32).

    Example:
      model.compile(optimizer="adam", loss=MetricLoss("sst"))
    """

    def __init__(self, loss: str = "sst", margin: float | None = None,
                 name: str | None = None, params: dict | None = None,
                 normalize: bool | None = None, global_negatives: bool = False, **kwargs):
        """Creates the loss.

        Args:
          loss: a name of `LOSSES` (the trainer's `--loss` names).
          margin: the margin (None: the loss's default).
          name: Keras name (default: the loss name).
          params: fixed parameters replacing the registry's (`loss_function`).
          normalize: whether the model's embeddings are L2-normalised; None:
            the loss's default geometry (`loss_function`).
          global_negatives: under a strategy, every replica's loss is the loss
            of the all-gathered global batch (`sst_tf.negatives`; the trainer's
            --global_negatives); no effect on one replica.
          **kwargs: `reduction` / `dtype` of a serialised config (ignored:
            the value is always a per-replica scalar in float32).
        """
        super().__init__(name=name or loss, reduction="none", dtype="float32")
        self._set_loss(loss, margin, params, normalize, global_negatives)

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The batch loss divided by the replicas in sync (scalar float32)."""
        if sample_weight is not None:
            raise ValueError(f"{self.name}: sample weights are not supported; padding rows "
                             "are masked through y (see pack_targets).")
        with tf.name_scope(self.name):
            return losses.per_replica(self.call(y_true, y_pred))

    def call(self, y_true, y_pred):
        """The batch loss (not divided by the replicas)."""
        return self._batch_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="sst_tf")
class LossValue(_NamedLoss, keras.metrics.Mean):
    """The batch loss as a metric: its mean over the epoch's steps, without regularisation.

    Keras' logged `loss` includes the model's regularisation terms, if any;
    compile with `metrics=[LossValue("sst")]` to log the loss alone (key
    `sst_loss`), e.g. for `ReduceLROnPlateau(monitor="sst_loss")` as the
    trainer's plateau rule does. Under a strategy it averages over all
    replicas' batches.
    """

    def __init__(self, loss: str = "sst", margin: float | None = None,
                 name: str | None = None, params: dict | None = None,
                 normalize: bool | None = None, global_negatives: bool = False, **kwargs):
        """Creates the metric (arguments as `MetricLoss`; name default `<loss>_loss`)."""
        super().__init__(name=name or f"{loss}_loss", dtype="float32")
        self._set_loss(loss, margin, params, normalize, global_negatives)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds one batch's loss (sample weights are not supported)."""
        if sample_weight is not None:
            raise ValueError(f"{self.name}: sample weights are not supported.")
        return super().update_state(self._batch_loss(y_true, y_pred))


class _EmbeddingWrapper(keras.Model):
    """An embedding model plus the weights its loss owns; `fit` trains both.

    What `ProxyAnchorModel` and `MarginSoftmaxModel` share: `call` is the
    wrapped model's embeddings, the loss adds the model's regularisation terms
    and is divided by the replicas in sync, and the config carries the
    wrapped model.
    """

    def call(self, inputs, training=False):  # noqa: D102
        return self.embedding_model(inputs, training=training)

    def _per_replica(self, loss: tf.Tensor) -> tf.Tensor:
        """`loss` plus any regularisation losses, divided by the replicas in sync."""
        for extra in self.losses:
            loss = loss + tf.cast(extra, tf.float32)
        return losses.per_replica(loss)

    @classmethod
    def from_config(cls, config: dict):  # noqa: D102
        config = dict(config)
        config["embedding_model"] = keras.saving.deserialize_keras_object(
            config["embedding_model"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="sst_tf")
class ProxyAnchorModel(_EmbeddingWrapper):
    """An embedding model plus Proxy-Anchor proxies, trained by `fit` on one loss.

    `call` returns the wrapped model's embeddings; `compute_loss` is the
    Proxy-Anchor loss of the batch (labels and mask from the packed `y`),
    plus any regularisation losses, divided by the replicas in sync. Compile
    it with an optimizer and no loss; save `model.embedding_model` for
    inference.

    The proxies are stored as `proxy_weights` and used as `lr_multiplier x
    proxy_weights`: with Adam-family optimizers (whose step does not depend on
    the gradient's scale) the proxies then move `lr_multiplier` times as fast
    as the model's weights, the usual separate proxy learning rate, under one
    optimizer. (With plain SGD the factor would be `lr_multiplier ** 2`.)
    """

    def __init__(self, embedding_model: keras.Model, class_ids, alpha: float | None = None,
                 delta: float | None = None,
                 lr_multiplier: float = loss_registry.PROXY_LR_MULTIPLIER,
                 seed: int | None = None, **kwargs):
        """Creates the wrapper (inside the strategy's scope under a strategy).

        Args:
          embedding_model: maps images to [B, d] embeddings.
          class_ids: the training labels (or their unique values): one proxy
            per class; a label without a proxy only acts as a negative.
          alpha: Proxy-Anchor scale; None: the registry's (`sst_tf.loss_registry`).
          delta: Proxy-Anchor margin; None: the registry's.
          lr_multiplier: how much faster than the model the proxies learn.
          seed: seed of the proxies' initialisation.
          **kwargs: `keras.Model` arguments (name, ...).
        """
        super().__init__(**kwargs)
        self.embedding_model = embedding_model
        self.class_ids = sorted({int(c) for c in np.asarray(class_ids).reshape(-1)})
        if not self.class_ids:
            raise ValueError("class_ids is empty: Proxy-Anchor needs at least one class.")
        if lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be > 0, got {lr_multiplier}.")
        defaults = loss_registry.loss_params("proxy_anchor")
        self.alpha = float(defaults["alpha"] if alpha is None else alpha)
        self.delta = float(defaults["delta"] if delta is None else delta)
        self.lr_multiplier, self.seed = float(lr_multiplier), seed
        dim = int(embedding_model.output_shape[-1])
        num_classes = len(self.class_ids)
        # Kaiming-normal (fan_out) proxies, as the authors' code; stored divided
        # by the multiplier.
        self.proxy_weights = self.add_weight(
            name="proxy_weights", shape=(num_classes, dim), dtype="float32", trainable=True,
            initializer=keras.initializers.RandomNormal(
                stddev=(2.0 / num_classes) ** 0.5 / self.lr_multiplier, seed=seed))
        self._ids = tf.constant(self.class_ids, tf.int64)

    @property
    def proxies(self) -> tf.Tensor:
        """The proxies [C, d] (one row per class id, in sorted id order)."""
        return self.proxy_weights * self.lr_multiplier

    def class_index(self, labels) -> tf.Tensor:
        """Proxy row of each label: int32 [B], -1 where the label has no proxy."""
        return class_rows(self._ids, labels)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Proxy-Anchor loss of the batch (+ regularisation), per replica."""
        del x, training
        if sample_weight is not None:
            raise ValueError("ProxyAnchorModel: sample weights are not supported.")
        labels, _, mask = unpack_targets(y)
        loss = losses.proxy_anchor_loss(
            tf.cast(y_pred, tf.float32), self.class_index(labels), self.proxies,
            self.alpha, self.delta, sample_mask=mask)
        return self._per_replica(loss)

    def get_config(self) -> dict:  # noqa: D102
        return {"embedding_model": keras.saving.serialize_keras_object(self.embedding_model),
                "class_ids": self.class_ids, "alpha": self.alpha, "delta": self.delta,
                "lr_multiplier": self.lr_multiplier, "seed": self.seed, "name": self.name}



@keras.saving.register_keras_serializable(package="sst_tf")
class MarginSoftmaxModel(_EmbeddingWrapper):
    """An embedding model plus the class weights of ArcFace, CosFace or Sub-center ArcFace.

    `call` returns the wrapped model's embeddings; `compute_loss` is the
    margin loss of the batch (labels and mask from the packed `y` of
    `SamplerDataset`, or plain int labels [B]), plus any regularisation
    losses, divided by the replicas in sync; `logits(images)` classifies
    into the training classes. Compile it with an optimizer and no loss;
    save `model.embedding_model` for inference.

    The class weights learn `lr_multiplier` times as fast as the model under
    one Adam-family optimizer (`sst_tf.losses.MarginSoftmax`'s
    `weight_multiplier`), as the trainer's `--proxy_lr_multiplier` does with
    an optimizer of their own.
    """

    def __init__(self, embedding_model: keras.Model, loss: str = "arcface", class_ids=None,
                 margin: float | None = None, scale: float | None = None,
                 sub_centers: int | None = None,
                 lr_multiplier: float = loss_registry.PROXY_LR_MULTIPLIER,
                 seed: int | None = None, **kwargs):
        """Creates the wrapper (inside the strategy's scope under a strategy).

        Args:
          embedding_model: maps images to [B, d] embeddings.
          loss: "arcface", "cosface" or "subcenter_arcface".
          class_ids: the training labels (or their unique values): one weight
            row (K with sub-centers) per class; a label without one counts
            for nothing.
          margin: the margin; None: the registry's (`sst_tf.loss_registry`).
          scale: the logits' scale; None: the registry's.
          sub_centers: K for subcenter_arcface; None: the registry's.
          lr_multiplier: how much faster than the model the class weights learn.
          seed: seed of the weights' initialisation.
          **kwargs: `keras.Model` arguments (name, ...).
        """
        super().__init__(**kwargs)
        if loss not in loss_registry.MARGIN_LOSSES:
            raise ValueError(f"loss must be one of {'|'.join(loss_registry.MARGIN_LOSSES)}, "
                             f"got {loss!r}.")
        if class_ids is None:
            raise ValueError("class_ids is required: the training labels (one weight row per "
                             "class).")
        if lr_multiplier <= 0:
            raise ValueError(f"lr_multiplier must be > 0, got {lr_multiplier}.")
        self.embedding_model = embedding_model
        self.lr_multiplier, self.seed = float(lr_multiplier), seed
        self.head = losses.MarginSoftmax(
            loss, class_ids=class_ids, embedding_dim=int(embedding_model.output_shape[-1]),
            margin=margin, scale=scale, sub_centers=sub_centers, seed=seed,
            weight_multiplier=self.lr_multiplier, dtype="float32")

    def logits(self, inputs) -> tf.Tensor:
        """Scaled cosines [B, C] of the images to the training classes (no margin)."""
        return self.head.logits(self.embedding_model(inputs, training=False))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The margin loss of the batch (+ regularisation), per replica."""
        del x, training
        if sample_weight is not None:
            raise ValueError("MarginSoftmaxModel: sample weights are not supported.")
        y = tf.convert_to_tensor(y)
        if y.shape.rank == 1:
            labels, mask = tf.cast(y, tf.int32), None
        else:
            labels, _, mask = unpack_targets(y)
        loss = self.head(tf.cast(y_pred, tf.float32), labels, mask)
        return self._per_replica(loss)

    def get_config(self) -> dict:  # noqa: D102
        head = self.head
        return {"embedding_model": keras.saving.serialize_keras_object(self.embedding_model),
                "loss": head.loss, "class_ids": head.class_ids, "margin": head.margin,
                "scale": head.scale, "sub_centers": head.sub_centers,
                "lr_multiplier": self.lr_multiplier, "seed": self.seed, "name": self.name}
