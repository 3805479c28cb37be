r"""Train and evaluate an embedding model.

  python -m sst_tf.train --flagfile=configs/digits.cfg --model_dir=runs/digits

Flags are read only here; they become a `TrainConfig` for `sst_tf.trainer`.
Writes checkpoints, TensorBoard events (train/, eval/), config.json and
metrics.json under --model_dir. Rerunning the same command resumes the run
(docs/reliability.md). Exit codes: 0 done; 1 trained and evaluated but the
export failed (retry with `python -m sst_tf.export`); 2 bad flags or data, or a resume
with incompatible flags; 3 too many non-finite steps in a row; 4 disk full;
5 an image could not be read during the run; 130/143 stopped by SIGINT/SIGTERM
after writing a checkpoint.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags, logging

from sst_tf import cli
from sst_tf.outputs import check_output_dir, write_marker
from sst_tf.run_state import RunFolder

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "digits", "Data set: digits (bundled), cub, cars196, sop, folder.")
flags.DEFINE_string("data_dir", None, "Folder holding the data set (not needed for digits).")
flags.DEFINE_enum("data_source", "files", ["files", "tfds"],
                  "Where cub/sop come from: files (official layout in --data_dir) or tfds "
                  "(TFDS builder; --data_dir is then TFDS's data dir, optional).")
flags.DEFINE_bool("check_counts", True,
                  "Check the official image/class counts of cub, cars196, sop "
                  "(--nocheck_counts: a deliberate subset).")
flags.DEFINE_bool("check_images", True,
                  "Decode every image once before training (cached) and skip, with a "
                  "warning and a count, those that fail.")
flags.DEFINE_bool("strict_images", False,
                  "Stop with an error naming the file on the first undecodable image.")
flags.DEFINE_bool("dry_run", False,
                  "Check the flags and load the data set (counts, files, image check), "
                  "print a summary and exit without training.")
flags.DEFINE_string("model_dir", None, "Output folder: checkpoints, events, metrics.json.")
flags.DEFINE_string("backbone", "inception_v3", "Backbone: inception_v3, mobilenet_v2, small_cnn.")
flags.DEFINE_bool("pretrained", True, "Start from ImageNet weights (--nopretrained: random).")
flags.DEFINE_integer("embedding_dim", 512, "Embedding size d.")
flags.DEFINE_bool("normalize", None,
                  "L2-normalise the embeddings (training and evaluation on unit vectors); "
                  "unset: the loss's default (docs/baselines.md).")
flags.DEFINE_integer("image_size", 224, "Side of the square model input (the crop).")
flags.DEFINE_integer("resize_size", None,
                     "Side images are resized to before cropping (default: image_size*256/224).")
flags.DEFINE_bool("random_flip", True, "Random horizontal flips in training.")
flags.DEFINE_string(
    "loss", "sst",
    "Loss: sst, triplet, contrastive (the paper's); triplet_semihard, triplet_hard, "
    "triplet_hard_soft, lifted_struct, npairs, pairwise_contrastive (tensorflow-addons'); "
    "multi_similarity, proxy_anchor.")
flags.DEFINE_float("margin", None,
                   "Margin of the losses that have one; unset: the loss's default "
                   "(triplet 0.2, contrastive 0.5, tensorflow-addons' losses 1.0).")
flags.DEFINE_float("sst_scale", None,
                   "SST: scale s of the margin variable, softplus(s * (D_at - (D_ai + D_ti)/2)). "
                   "Default: 1 (the paper's) without --normalize, 16 with it.")
flags.DEFINE_enum("sst_imposters", None, ["mean", "softmax"],
                  "SST: mean over all triplets (the paper's), or per (anchor, target) pair "
                  "log(1 + sum over imposters of exp(s z)) (hard imposters weigh more). "
                  "Default: mean without --normalize, softmax with it.")
flags.DEFINE_string("sampler", None,
                    "Batch sampler: local (neighbourhoods, see --neighborhoods), random, "
                    "class_balanced "
                    "(P classes x K images, each image at most once per epoch); unset: the "
                    "loss's default (local for sst/triplet/contrastive).")
flags.DEFINE_integer("samples_per_class", 4,
                     "K images per class in class_balanced batches (batch_size = P * K).")
flags.DEFINE_float("proxy_lr_multiplier", 100.0,
                   "Proxy-Anchor: the proxies' learning rate is lr times this.")
flags.DEFINE_float("loss_lr_multiplier", None,
                   "Every learning rate of the run is --lr times this; unset: the loss's "
                   "default (1, except 0.25 for the batch-hard triplet losses).")
flags.DEFINE_integer("batch_size", 200, "Batch size B (>= 2).")
flags.DEFINE_integer("num_targets", 5, "Target neighbours k per anchor (>= 1).")
flags.DEFINE_enum("neighborhoods", "classes", ["classes", "mixed", "original", "balanced"],
                  "Local sampler batches: neighbouring classes with random members each "
                  "(classes), a k-means neighbourhood + random images with a class guarantee "
                  "(mixed), one k-means cluster per batch, the paper's rule (original), or "
                  "k-means clusters split/packed into full batches using every image (balanced).")
flags.DEFINE_integer("members_per_class", None,
                     "--neighborhoods=classes: images per class in a batch; unset: the loss's "
                     "default (4 for sst, 10 otherwise).")
flags.DEFINE_float("local_share", 0.5,
                   "--neighborhoods=mixed: share of each batch taken from its neighbourhood.")
flags.DEFINE_integer("min_classes", 4,
                     "--neighborhoods=mixed: classes with >= 2 members guaranteed per batch.")
flags.DEFINE_integer("warmup_epochs", 0,
                     "Local sampler: random batches for this many epochs before the first "
                     "neighbourhood batches.")
flags.DEFINE_integer("refresh_every", 1, "Re-embed the train split and re-cluster every N epochs.")
flags.DEFINE_integer("epochs", 150, "Maximum number of epochs.")
flags.DEFINE_float("lr", 1e-4, "Adam learning rate of the backbone.")
flags.DEFINE_float("head_lr_multiplier", 10.0, "The head's learning rate is lr times this.")
flags.DEFINE_float("weight_decay", 1e-4, "Weight decay (L2 added to the gradients, as Adam's).")
flags.DEFINE_bool("decoupled_weight_decay", False, "Use AdamW's decoupled weight decay instead.")
flags.DEFINE_integer("lr_patience", 5, "Halve the learning rates after N epochs w/o improvement.")
flags.DEFINE_integer("early_stop_patience", 15, "Stop after N epochs without improvement.")
flags.DEFINE_integer("eval_every", 0, "Also evaluate every N epochs (0: before and after only).")
flags.DEFINE_integer("eval_batch_size", 256, "Batch size of embedding passes.")
flags.DEFINE_list("recall_ks", ["1", "2", "4", "8"], "K values of Recall@K.")
flags.DEFINE_integer("seed", 0, "Seed of weights, sampling, augmentation and k-means.")
flags.DEFINE_bool("deterministic", True, "Enable TF op determinism (same seed -> same result).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in model_dir/checkpoints.")
flags.DEFINE_bool("progress", True, "Show a progress bar per epoch.")
flags.DEFINE_bool("export", True, "After training, write MODEL_DIR/export (SavedModel) and "
                  "MODEL_DIR/projector (TensorBoard projector of the test embeddings).")
flags.DEFINE_integer("max_consecutive_nonfinite", 10,
                     "Stop after N steps in a row with a non-finite loss or gradient (each "
                     "such step is skipped); the last good checkpoint is kept.")
flags.DEFINE_bool("allow_flag_changes", False,
                  "Resume a run although optimisation flags (lr, loss, batch size, seed, ...) "
                  "differ from the ones it started with; model/data flags always must match.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                  "Distribution: one device, MirroredStrategy over the local GPUs, or "
                  "MultiWorkerMirroredStrategy configured by TF_CONFIG.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"],
                  "Mixed precision of the backbone (head and loss stay float32; float16 "
                  "uses loss scaling).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the forward + backward pass.")
flags.DEFINE_enum("refresh", "full", ["full", "memory"],
                  "Refresh embeddings by an inference pass (full) or reuse the previous epochs' "
                  "training forward passes (memory: no extra pass).")
flags.DEFINE_enum("kmeans", "sklearn", ["sklearn", "tf"],
                  "k-means of the refresh: scikit-learn (CPU) or TensorFlow (GPU when present).")


def config_from_flags():
    """Builds a `TrainConfig` from the parsed flags (raises ValueError on bad values)."""
    from sst_tf.config import TrainConfig

    try:
        ks = tuple(int(k) for k in FLAGS.recall_ks)
    except ValueError as e:
        raise ValueError(f"--recall_ks must be integers, got {FLAGS.recall_ks}.") from e
    resize = FLAGS.resize_size
    if resize is None:
        resize = max(FLAGS.image_size, round(FLAGS.image_size * 256 / 224))
    return TrainConfig(
        model_dir=FLAGS.model_dir,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        data_source=FLAGS.data_source,
        check_counts=FLAGS.check_counts,
        check_images=FLAGS.check_images,
        strict_images=FLAGS.strict_images,
        backbone=FLAGS.backbone,
        pretrained=FLAGS.pretrained,
        embedding_dim=FLAGS.embedding_dim,
        normalize=FLAGS.normalize,
        image_size=FLAGS.image_size,
        resize_size=resize,
        random_flip=FLAGS.random_flip,
        loss=FLAGS.loss,
        margin=FLAGS.margin,
        sst_scale=FLAGS.sst_scale,
        sst_imposters=FLAGS.sst_imposters,
        sampler=FLAGS.sampler,
        samples_per_class=FLAGS.samples_per_class,
        proxy_lr_multiplier=FLAGS.proxy_lr_multiplier,
        loss_lr_multiplier=FLAGS.loss_lr_multiplier,
        batch_size=FLAGS.batch_size,
        num_targets=FLAGS.num_targets,
        refresh_every=FLAGS.refresh_every,
        neighborhoods=FLAGS.neighborhoods,
        local_share=FLAGS.local_share,
        min_classes=FLAGS.min_classes,
        warmup_epochs=FLAGS.warmup_epochs,
        members_per_class=FLAGS.members_per_class,
        epochs=FLAGS.epochs,
        lr=FLAGS.lr,
        head_lr_multiplier=FLAGS.head_lr_multiplier,
        weight_decay=FLAGS.weight_decay,
        decoupled_weight_decay=FLAGS.decoupled_weight_decay,
        lr_patience=FLAGS.lr_patience,
        early_stop_patience=FLAGS.early_stop_patience,
        eval_every=FLAGS.eval_every,
        eval_batch_size=FLAGS.eval_batch_size,
        recall_ks=ks,
        seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        keep_checkpoints=FLAGS.keep_checkpoints,
        progress=FLAGS.progress,
        export=FLAGS.export,
        max_consecutive_nonfinite=FLAGS.max_consecutive_nonfinite,
        allow_flag_changes=FLAGS.allow_flag_changes,
        strategy=FLAGS.strategy,
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        refresh=FLAGS.refresh,
        kmeans=FLAGS.kmeans,
    )


def _settings_line(config) -> str:
    """One line: the loss settings the run uses (given flags, else the loss's defaults)."""
    from sst_tf import loss_registry

    s = loss_registry.settings(config.resolved())
    margin = "none" if s["margin"] is None else f"{s['margin']:g}"
    params = "".join(f", {k} {v:g}" for k, v in s["params"].items())
    if "sst" in s:
        params += f", scale {s['sst']['scale']:g}, imposters {s['sst']['imposters']}"
    return (f"--loss={s['loss']}: normalize {s['normalize']} ({s['geometry']} geometry), "
            f"sampler {s['sampler']}, margin {margin}, lr x {s['loss_lr_multiplier']:g}{params}")


def _fail(message: str, code: int = 2, prog: str = "sst_tf.train") -> None:
    sys.exit(cli.fail(prog, message, code))


def _legacy_run(folder: str) -> str | None:
    """Recognises training runs written before folders carried a marker."""
    names = set(os.listdir(folder))
    return "model_dir" if "config.json" in names or "checkpoints" in names else None


def check_model_dir(config) -> None:
    """Refuses a --model_dir (or its export/, projector/) holding files sst_tf did not write.

    A run of ours is resumed; its export and projector are rewritten at the end.

    Raises:
      cli.UsageError: naming the folder.
    """
    from sst_tf import export, projector

    model_dir = config.model_dir
    check_output_dir(model_dir, f"--model_dir={model_dir}", "model_dir", legacy=_legacy_run)
    if config.export:
        folder = RunFolder(model_dir)
        for path, kind, legacy in ((folder.export, "export", export.legacy_export),
                                   (folder.projector, "projector", projector.legacy_projector)):
            check_output_dir(path, f"{path} (written at the end of training)", kind,
                             legacy=legacy)


def single_image_classes(labels) -> int:
    """How many classes have exactly one image."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return int((counts == 1).sum())


def dry_run_summary(ds) -> str:
    """The lines --dry_run prints about a loaded data set."""
    lines = [f"{ds.name}: train {len(ds.train)} images / {ds.train.num_classes} classes, "
             f"test {len(ds.test)} images / {ds.test.num_classes} classes: data OK "
             "(--dry_run: not training)."]
    for split, what in ((ds.train, "train"), (ds.test, "test")):
        single = single_image_classes(split.labels)
        if single:
            role = ("its image has no same-class partner, so it is never an anchor with a "
                    "target neighbour (it still serves as an imposter)" if what == "train" else
                    "its image is a query that cannot find a same-class neighbour (left out "
                    "of MAP@R and R-Precision, a miss in Recall@K)")
            lines.append(f"warning: {what} split: {single} of {split.num_classes} classes have "
                         f"a single image: {role}.")
    return "\n".join(lines)


def main(argv):
    """Validates the flags, trains, evaluates and prints the before/after table."""
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags need a leading --).")
    try:
        config = config_from_flags()
        config.validate()
    except ValueError as e:
        _fail(str(e))
    cli.quiet_tensorflow()
    if FLAGS.dry_run:
        from sst_tf import data as data_lib

        try:
            ds = data_lib.load_dataset(config.dataset, config.data_dir, **config.reader_options())
        except (ValueError, NotImplementedError) as e:
            _fail(str(e))
        print(dry_run_summary(ds))
        print(_settings_line(config))
        return
    from sst_tf import distribute, outputs, pipeline, run_state
    from sst_tf import step as step_lib
    from sst_tf.trainer import CollapseError, ExportError, Trainer

    try:
        # The strategy first: multi-worker set-up must precede other TF work.
        strategy = distribute.make_strategy(config.strategy)
        if distribute.is_chief(strategy):  # the chief writes model_dir; workers do not
            check_model_dir(config)
        trainer = Trainer(config, strategy=strategy)
    except (ValueError, NotImplementedError, cli.UsageError) as e:
        _fail(str(e))
    if trainer.is_chief:
        os.makedirs(config.model_dir, exist_ok=True)
        write_marker(config.model_dir, "model_dir", "sst_tf.train")
    export_error = None
    try:
        metrics = trainer.fit()
    except ExportError as e:  # trained and evaluated: metrics.json is written
        metrics, export_error = e.metrics, e
    except run_state.Interrupted as e:
        _fail(str(e), e.exit_code)
    except step_lib.NonFiniteError as e:
        _fail(str(e), 3)
    except outputs.DiskFullError as e:
        _fail(str(e), 4)
    except pipeline.InputError as e:
        _fail(str(e), 5)
    except CollapseError as e:
        _fail(str(e), 1)
    if not trainer.is_chief:  # only the chief evaluates and writes files
        logging.info("Worker done (the chief writes metrics.json).")
        return
    path = RunFolder(config.model_dir).metrics
    lines = [f"{'metric':<12} {'before':>8} {'after':>8}"]
    for key, after in metrics["after"].items():
        if isinstance(after, float):
            lines.append(f"{key:<12} {metrics['before'].get(key, float('nan')):8.4f} {after:8.4f}")
    print(_settings_line(config))
    print("\n".join(lines))
    print(f"Wrote {path}")
    if export_error is not None:
        _fail(str(export_error), 1)
    logging.info("Done.")


if __name__ == "__main__":
    cli.run(main, "sst_tf.train")
