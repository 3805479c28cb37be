r"""Step-by-step trace of a digits run: the evidence for the --normalize collapse.

  python study/sst_collapse_trace.py --normalize --sst_scale=1 --epochs=3

Trains the digits recipe (configs/digits.cfg values; the flags below override
them) and prints, before every step (all of the first 12, then every 5th):
the step's loss, the mean norm of the head's output before L2 normalisation
(|h|) and of its batch mean (|mean h|: a common component shared by all images),
the head bias norm, the spread of the embeddings (mean distance to their
centroid), the share of dead backbone channels (zero for every image of the
batch) and the mean norm of the pooled backbone features.
"""

from __future__ import annotations

import os
import sys

import keras
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sst_tf import pipeline  # noqa: E402
from sst_tf.config import TrainConfig  # noqa: E402

flags.DEFINE_bool("normalize", True, "L2-normalise the embeddings.")
flags.DEFINE_float("sst_scale", 1.0, "Scale s of the SST loss.")
flags.DEFINE_float("lr", 2e-3, "Learning rate.")
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay.")
flags.DEFINE_integer("epochs", 3, "Epochs.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("model_dir", "/tmp/sst_collapse_trace", "Scratch folder.")
FLAGS = flags.FLAGS


def main(argv):
    from sst_tf.trainer import Trainer

    cfg = TrainConfig(
        model_dir=FLAGS.model_dir, dataset="digits", backbone="small_cnn", pretrained=False,
        image_size=32, resize_size=36, random_flip=False, embedding_dim=64,
        normalize=FLAGS.normalize, loss="sst", sst_scale=FLAGS.sst_scale, sampler="local",
        batch_size=100, num_targets=5, epochs=FLAGS.epochs, lr=FLAGS.lr,
        head_lr_multiplier=1, weight_decay=FLAGS.weight_decay, seed=FLAGS.seed,
        progress=False, export=False, validation_share=0.0)  # every training image
    trainer = Trainer(cfg)
    model = trainer.model
    inner = keras.Model(model.inputs, [model.get_layer("pool").output,
                                       model.get_layer("head").output, model.output])
    bias = model.get_layer("head").bias
    step = 0
    for epoch in range(cfg.epochs):
        trainer.refresh_sampler(epoch)
        plan = trainer.sampler.plan(epoch)
        ds = pipeline.train_dataset(trainer.dataset.train, plan, trainer.image_options,
                                    seed=cfg.seed, epoch=epoch)
        for images, labels, targets, mask in ds:
            pooled, head, emb = (t.numpy() for t in inner(images, training=False))
            loss = float(trainer.step_fn((images, labels, targets, mask)))
            if step < 12 or step % 5 == 0:
                spread = np.linalg.norm(emb - emb.mean(0), axis=1).mean()
                print(f"epoch {epoch + 1} step {step:3d}: loss {loss:.4f}, "
                      f"|h| {np.linalg.norm(head, axis=1).mean():8.3f}, "
                      f"|mean h| {np.linalg.norm(head.mean(0)):8.3f}, "
                      f"|bias| {np.linalg.norm(bias.numpy()):.3f}, spread {spread:.4f}, "
                      f"dead {(np.abs(pooled).max(0) == 0).mean():.2f}, "
                      f"|pooled| {np.linalg.norm(pooled, axis=1).mean():.3f}", flush=True)
            step += 1


if __name__ == "__main__":
    app.run(main)
