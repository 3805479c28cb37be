"""Retrieval evaluation on a held-out split during `model.fit`.

`RetrievalEvaluation` embeds a split every N epochs (inference mode, no
augmentation) and computes Recall@K, MAP@R, R-Precision and optionally NMI
with `sst_tf.evaluation`. The numbers go into the epoch's Keras logs, so
`History`, `EarlyStopping`, `ModelCheckpoint` and `TensorBoard` placed after it
in the callback list see them, under names Keras handles everywhere
(format strings, summary names):

  val_recall_at_1, val_recall_at_2, ..., val_map_at_r, val_r_precision, val_nmi

(`prefix` replaces `val_`). Keras' `TensorBoard` callback writes `val_*` keys
to its validation run; `log_dir` also writes them to a summary folder of
their own. On epochs without an evaluation the keys are absent: Keras'
EarlyStopping / ModelCheckpoint then skip the epoch (with a warning), so
their patience counts evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from sst_tf import evaluation, pipeline
from sst_tf.datasets.splits import Split


def metric_names(metrics: dict, prefix: str = "val_") -> dict[str, float]:
    """`evaluation.evaluate` keys as log keys: recall@1 -> val_recall_at_1, map@r -> val_map_at_r.

    Counts (`num_queries`, ...) are left out.
    """
    out = {}
    for key, value in metrics.items():
        if key.startswith("num_"):
            continue
        out[prefix + key.replace("@", "_at_")] = float(value)
    return out


class RetrievalEvaluation(keras.callbacks.Callback):
    """Evaluates retrieval on a split every `every` epochs and logs it (see module doc)."""

    def __init__(
        self,
        split: Split,
        image_options: pipeline.ImageOptions,
        every: int = 1,
        ks: Sequence[int] = (1, 2, 4, 8),
        with_nmi: bool = False,
        batch_size: int = 256,
        prefix: str = "val_",
        log_dir: str | None = None,
        seed: int = 0,
    ):
        """Creates the callback.

        Args:
          split: the held-out split (its labels are the retrieval classes).
          image_options: image sizes (evaluation view: resize + centre crop).
          every: evaluate after every `every` epochs (and after the last one
            when `fit` reaches `epochs`).
          ks: the K of Recall@K.
          with_nmi: also compute NMI (k-means; slow on large splits).
          batch_size: batch size of the embedding pass.
          prefix: prefix of the log keys.
          log_dir: optional folder for TensorBoard summaries of these metrics.
          seed: k-means seed of NMI.
        """
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        if len(split) < 2:
            raise ValueError("the evaluation split needs at least 2 images.")
        self.split = split
        self.image_options = image_options
        self.every = int(every)
        self.ks = tuple(int(k) for k in ks)
        self.with_nmi = with_nmi
        self.batch_size = int(batch_size)
        self.prefix = prefix
        self.log_dir = log_dir
        self.seed = seed
        self.history: dict[int, dict[str, float]] = {}
        self._writer = None

    def embed(self) -> np.ndarray:
        """The model's embeddings of the split, float32 [N, d]."""
        ds = pipeline.eval_dataset(self.split, self.image_options, self.batch_size)
        return np.asarray(self.model.predict(ds.map(lambda x, y: x), verbose=0), np.float32)

    def evaluate(self) -> dict[str, float]:
        """Retrieval metrics of the current model as log keys (`metric_names`)."""
        metrics = evaluation.evaluate(self.embed(), self.split.labels, self.ks, seed=self.seed,
                                      with_nmi=self.with_nmi)
        return metric_names(metrics, self.prefix)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:  # noqa: D102
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and epoch + 1 != last:
            return
        result = self.evaluate()
        self.history[epoch + 1] = result
        if logs is not None:
            logs.update(result)
        logging.info("Epoch %d retrieval: %s", epoch + 1,
                     ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
        if self.log_dir:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default(step=epoch + 1):
                for key, value in result.items():
                    tf.summary.scalar(key, value)
            self._writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:  # noqa: D102
        if self._writer is not None:
            self._writer.close()
            self._writer = None
