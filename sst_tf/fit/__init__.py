"""Training with `keras.Model.fit`: sampling data source, losses, callbacks.

* `data`: `SamplerDataset` (the samplers' epoch plans as a tf.data source)
  and `SamplerRefresh` (refreshes the sampler with the model's embeddings).
* `losses`: `MetricLoss` (every loss of the project as a Keras loss),
  `LossValue` (the loss as a metric, without regularisation),
  `ProxyAnchorModel` and `MarginSoftmaxModel` (Proxy-Anchor; ArcFace,
  CosFace and Sub-center ArcFace: losses whose weights the model must own).
* `callbacks`: `RetrievalEvaluation` (Recall@K, MAP@R, ... into the logs).
* `optimizer_for_loss` (from `sst_tf.optim`): the trainer's optimizer for a
  loss (its learning-rate factor, coupled L2 weight decay).

See docs/fit.md.
"""

from sst_tf.fit.callbacks import RetrievalEvaluation, metric_names
from sst_tf.fit.data import SamplerDataset, SamplerRefresh
from sst_tf.fit.losses import (
    LOSSES,
    TARGET_LOSSES,
    LossValue,
    MarginSoftmaxModel,
    MetricLoss,
    ProxyAnchorModel,
    loss_function,
    pack_targets,
    unpack_targets,
)
from sst_tf.optim import optimizer_for_loss

__all__ = [
    "LOSSES", "TARGET_LOSSES", "LossValue", "MarginSoftmaxModel", "MetricLoss",
    "ProxyAnchorModel", "RetrievalEvaluation",
    "SamplerDataset", "SamplerRefresh", "loss_function", "metric_names", "optimizer_for_loss",
    "pack_targets", "unpack_targets",
]
