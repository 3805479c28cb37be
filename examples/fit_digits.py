r"""Train the digits model with `keras.Model.fit`, SST loss and local sampling.

    python examples/fit_digits.py --model_dir=runs/fit_digits

The same model and hyper-parameters as configs/digits.cfg (small CNN from
scratch, 64-d embedding, batches of 100 from neighbouring classes with 5
target neighbours, refreshed every epoch, Adam 2e-3 with L2 1e-4, halved
after 5 epochs without a lower training loss, 40 epochs), but trained by
`model.fit` with the pieces of `sst_tf.fit` (docs/fit.md). Writes
MODEL_DIR/metrics.json ("before" and "after": retrieval on the test split,
the keys of the trainer's metrics.json), the trained model
(MODEL_DIR/embedding_model.keras) and TensorBoard logs (MODEL_DIR/logs). A
non-empty MODEL_DIR that this example did not write is refused (exit 2).
"""

from __future__ import annotations

import json
import os
import sys

import keras
from absl import app, flags, logging

# Run from a checkout without installing: the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sst_tf import data, evaluation, fit, pipeline, sampling  # noqa: E402
from sst_tf import model as model_lib  # noqa: E402
from sst_tf.trainer import seed_everything  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Output folder (empty, new, or written by this example).")
flags.DEFINE_integer("epochs", 40, "Training epochs.")
flags.DEFINE_integer("eval_every", 10, "Retrieval on the test split every N epochs (logs).")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the sampler and the augmentation.")

PROGRAM = "fit_digits.py"
MARKER = ".written_by_fit_digits"  # marks a folder this example may overwrite


def check_model_dir(path: str) -> None:
    """Creates `path`, or accepts it if empty or written by this example; else raises."""
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(
            os.path.join(path, MARKER)):
        raise ValueError(f"--model_dir={path} is not empty and was not written by {PROGRAM}: "
                         "choose a new or empty folder.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--model_dir={path} is a file, not a folder.")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, MARKER), "w") as f:
        f.write("examples/fit_digits.py\n")


def test_metrics(model: keras.Model, split: data.Split, options: pipeline.ImageOptions,
                 seed: int) -> dict:
    """The trainer's retrieval metrics of `split` (metrics.json "before" / "after")."""
    ds = pipeline.eval_dataset(split, options).map(lambda x, y: x)
    emb = model.predict(ds, verbose=0)
    out = evaluation.evaluate(emb, split.labels, (1, 2, 4, 8), seed=seed)
    return {k: float(v) if isinstance(v, float) else int(v) for k, v in out.items()}


def train(model_dir: str, epochs: int, eval_every: int, seed: int) -> dict:
    """Trains and evaluates; returns what metrics.json holds."""
    seed_everything(seed)
    digits = data.load_dataset("digits")
    options = pipeline.ImageOptions(image_size=32, resize_size=36, random_flip=False)
    # The trainer's SST defaults: L2-normalised embeddings, scale 32, softmax over
    # imposters, class neighbourhoods of 8 images per class (digits' 10 classes
    # then get 10 each).
    model = model_lib.build_model("small_cnn", weights=None, embedding_dim=64, image_size=32,
                                  normalize=True)
    # The trainer's optimizer for SST: its learning rate, coupled L2 weight decay.
    # MetricLoss("sst") is the trainer's SST (its defaults from the loss registry);
    # LossValue logs it as "sst_loss", which the plateau rule watches.
    model.compile(optimizer=fit.optimizer_for_loss("sst", 2e-3, weight_decay=1e-4),
                  loss=fit.MetricLoss("sst"), metrics=[fit.LossValue("sst")])

    sampler = sampling.make_sampler(
        "local", digits.train.labels, batch_size=100, num_targets=5, seed=seed,
        neighborhoods="classes", min_classes=4, members_per_class=8)
    source = fit.SamplerDataset(digits.train, sampler, options, seed=seed)
    before = test_metrics(model, digits.test, options, seed)
    history = model.fit(
        source.dataset(model), epochs=epochs, shuffle=False, verbose=2,
        callbacks=[
            source.refresh_callback(every=1),
            fit.RetrievalEvaluation(digits.test, options, every=eval_every),
            keras.callbacks.ReduceLROnPlateau(monitor="sst_loss", mode="min", factor=0.5,
                                              patience=5, min_delta=0.0),
            keras.callbacks.EarlyStopping(monitor="sst_loss", mode="min", patience=15,
                                          min_delta=0.0),
            keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
        ])
    after = test_metrics(model, digits.test, options, seed)
    model.save(os.path.join(model_dir, "embedding_model.keras"))
    losses = history.history["sst_loss"]
    return {
        "before": before,
        "after": after,
        "train": {"epochs_run": len(losses), "final_loss": float(losses[-1]),
                  "early_stopped": len(losses) < epochs},
        "history": {k: [float(x) for x in v] for k, v in history.history.items()},
    }


def main(argv) -> int:
    """Entry point: checks the flags and the folder, trains, writes metrics.json."""
    if len(argv) > 1:
        print(f"{PROGRAM} error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    if not FLAGS.model_dir:
        print(f"{PROGRAM} error: --model_dir is required", file=sys.stderr)
        return 2
    if FLAGS.epochs < 1 or FLAGS.eval_every < 1:
        print(f"{PROGRAM} error: --epochs and --eval_every must be >= 1", file=sys.stderr)
        return 2
    try:
        check_model_dir(FLAGS.model_dir)
    except (ValueError, OSError) as e:
        print(f"{PROGRAM} error: {e}", file=sys.stderr)
        return 2
    metrics = train(FLAGS.model_dir, FLAGS.epochs, FLAGS.eval_every, FLAGS.seed)
    path = os.path.join(FLAGS.model_dir, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
    os.replace(tmp, path)
    logging.info("before: recall@1 %.4f, map@r %.4f; after: recall@1 %.4f, map@r %.4f",
                 metrics["before"]["recall@1"], metrics["before"]["map@r"],
                 metrics["after"]["recall@1"], metrics["after"]["map@r"])
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
