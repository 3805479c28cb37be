r"""Pretrains a backbone by plain softmax classification and saves its weights.

The stand-in for ImageNet pretraining (no weights can be downloaded): the
embedding model of `sst_tf.model.build_model` plus a softmax classifier (over
cosine similarities, see `pretrain`) over the training classes of a folder
data set, trained with cross-entropy; then
the backbone's weights are written to a file that `sst_tf.train
--backbone_weights=FILE` (and `build_model(backbone_weights=FILE)` in a
`fit` script) starts from.

  python study/make_suite.py --output_dir=data/suite --benchmarks=pretrain
  taskset -c 1 python study/pretrain.py --data_dir=data/suite/pretrain \
      --output=data/suite/small_cnn_han.weights.h5

The source must share no class with the test sets the weights are used on:
data/suite/pretrain holds CJK ideographs, which no benchmark of the suite
tests on (study/docs/devbench.md). After training, the embedding (pooled backbone
features through the head) is evaluated on the source's test classes and
written with the settings to FILE.json. An existing FILE is replaced only if
its FILE.json says this script wrote it.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROG = "pretrain.py"
MARKER = "sst_tf pretrain"
FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (only when run as a program)."""
    flags.DEFINE_string("data_dir", None, "Folder data set (train/ and test/) to classify.")
    flags.DEFINE_string("output", None, "Weights file to write (must end in .weights.h5).")
    flags.DEFINE_string("backbone", "small_cnn", "Backbone (sst_tf.model.BACKBONES).")
    flags.DEFINE_integer("image_size", 32, "Side of the model input.")
    flags.DEFINE_integer("resize_size", 36, "Side images are resized to before the random crop.")
    flags.DEFINE_integer("embedding_dim", 64, "Size of the head the classifier sits on.")
    flags.DEFINE_integer("epochs", 14, "Epochs of classification (study/docs/devbench.md: 8 stops "
                         "before the take-off from chance is done).")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    flags.DEFINE_float("lr", 1e-3, "Adam learning rate (cosine decay to 0 over the epochs).")
    flags.DEFINE_integer("seed", 0, "Seed of initialisation and batch order.")


def _cosine_classifier_class():
    import keras

    class CosineClassifier(keras.layers.Layer):
        """Logits scale * cos(embedding, class weight) (normalised softmax)."""

        def __init__(self, units: int, scale: float, **kwargs):
            super().__init__(**kwargs)
            self.units, self.scale = units, scale

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], self.units),
                                     initializer="glorot_uniform", name="kernel")

        def call(self, z):
            return self.scale * keras.ops.matmul(z, keras.ops.normalize(self.w, axis=0))

    return CosineClassifier


class PretrainError(Exception):
    """Bad flags or files; exit status 2."""


def _check_output(path: str) -> None:
    if not path.endswith(".weights.h5"):
        raise PretrainError(f"--output={path} must end in .weights.h5 (a Keras weights file).")
    if os.path.exists(path):
        try:
            with open(f"{path}.json") as f:
                ours = json.load(f).get("written_by") == MARKER
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise PretrainError(f"--output={path} exists and was not written by {PROG}; "
                                "choose a new path.")


def pretrain(data_dir: str, output: str, backbone: str = "small_cnn", image_size: int = 32,
             resize_size: int = 36, embedding_dim: int = 64, epochs: int = 6,
             batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
             scale: float = 16.0) -> dict:
    """Trains backbone + head + classifier on `data_dir`'s training classes; saves the backbone.

    The classifier is a softmax over cosine similarities (scale x cos(z, w_c),
    the embedding L2-normalised): with the small CNN (no batch normalisation)
    a plain linear softmax over 600 Han classes stayed at chance (loss ln 600
    for 2 epochs, lr 1e-3 and 2e-3), the cosine one learns.

    Returns:
      The record written to `output`.json: settings, training accuracy per
      epoch, seconds, and the retrieval metrics of the embedding on the test
      classes (before and after pretraining).

    Raises:
      PretrainError: bad flags, a foreign output file, or an unreadable data set.
    """
    import keras
    import tensorflow as tf

    from sst_tf import evaluation, pipeline
    from sst_tf import model as model_lib
    from sst_tf.datasets import folder

    CosineClassifier = _cosine_classifier_class()  # noqa: N806
    _check_output(output)
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise PretrainError("--epochs >= 1, --batch_size >= 2 and --lr > 0 are needed.")
    try:
        ds = folder.load(data_dir, check_images=False)
    except (OSError, ValueError) as e:
        raise PretrainError(f"--data_dir={data_dir}: {e}") from e
    keras.utils.set_random_seed(seed)
    options = pipeline.ImageOptions(image_size, resize_size, random_flip=False)
    num_classes = int(ds.train.labels.max()) + 1
    embed_model = model_lib.build_model(backbone, weights=None, embedding_dim=embedding_dim,
                                        image_size=image_size, normalize=True)
    logits = CosineClassifier(num_classes, scale, name="classifier")(embed_model.output)
    classifier = keras.Model(embed_model.input, logits)

    def embeddings(split):
        out = embed_model.predict(pipeline.eval_dataset(split, options).map(lambda x, y: x),
                                  verbose=0)
        return evaluation.evaluate(out, split.labels, seed=seed)

    before = embeddings(ds.test)
    load = pipeline.image_loader(ds.train)
    n = len(ds.train)
    steps = epochs * (n // batch_size)
    base = tf.constant([seed, 0], tf.int32)

    def train_data(epoch):
        order = np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)
        data = tf.data.Dataset.from_tensor_slices((order, ds.train.labels[order].astype(np.int32)))
        data = data.map(lambda i, y: (pipeline.train_preprocess(
            load(i), tf.random.experimental.stateless_fold_in(base, tf.cast(i, tf.int32) + epoch
                                                              * n), options), y),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return data.batch(batch_size, drop_remainder=True).prefetch(2)

    schedule = keras.optimizers.schedules.CosineDecay(lr, max(steps, 1))
    classifier.compile(optimizer=keras.optimizers.Adam(schedule),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    start = time.perf_counter()
    history = []
    for epoch in range(epochs):
        h = classifier.fit(train_data(epoch), epochs=1, verbose=0)
        history.append({"epoch": epoch + 1, "loss": float(h.history["loss"][-1]),
                        "accuracy": float(h.history["accuracy"][-1]),
                        "seconds": time.perf_counter() - start})
        logging.info("epoch %d: %s", epoch + 1, history[-1])
    after = embeddings(ds.test)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = f"{output}.tmp.{os.getpid()}.weights.h5"
    model_lib.save_backbone_weights(embed_model, tmp)
    os.replace(tmp, output)
    record = {"written_by": MARKER, "data_dir": os.path.abspath(data_dir),
              "backbone": backbone, "image_size": image_size, "resize_size": resize_size,
              "embedding_dim": embedding_dim, "epochs": epochs, "batch_size": batch_size,
              "lr": lr, "seed": seed, "scale": scale, "num_classes": num_classes, "num_images": n,
              "history": history, "test_before": before, "test_after": after}
    with open(f"{output}.json.tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(f"{output}.json.tmp", f"{output}.json")
    return record


def main(argv):
    if len(argv) > 1:
        print(f"{PROG}: error: unexpected arguments {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    for name in ("data_dir", "output"):
        if not FLAGS[name].value:
            print(f"{PROG}: error: --{name} is required.", file=sys.stderr)
            sys.exit(2)
    try:
        record = pretrain(FLAGS.data_dir, FLAGS.output, FLAGS.backbone, FLAGS.image_size,
                          FLAGS.resize_size, FLAGS.embedding_dim, FLAGS.epochs,
                          FLAGS.batch_size, FLAGS.lr, FLAGS.seed)
    except PretrainError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"train accuracy {record['history'][-1]['accuracy']:.3f}; test MAP@R "
          f"{record['test_before']['map@r']:.4f} -> {record['test_after']['map@r']:.4f}; "
          f"wrote {FLAGS.output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
