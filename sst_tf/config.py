"""Run configuration: the plain dataclass the entry point fills from flags.

Every field of `TrainConfig` declares its command-line flag (`flag_field`):
help text and, for a choice, the one tuple of allowed values. The entry point
defines its flags from these declarations (`sst_tf.config_flags`), so a new
field is a new flag. Imports no TensorFlow, so bad flags are reported in a
second.

The choice tuples live here unless the module implementing the choices can be
imported without TensorFlow: the losses come from `sst_tf.loss_registry`, the
data sources from `sst_tf.datasets`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from sst_tf import data as data_lib
from sst_tf import formats, loss_registry
from sst_tf.datasets import DATA_SOURCES
from sst_tf.loss_registry import LOSS_SPECS, LOSSES, TARGET_LOSSES, defaults_text

SST_IMPOSTERS = ("mean", "softmax")  # sst_tf.losses.sst_loss(imposters=...)
NPAIRS_PAIRS = ("all", "per_class")  # sst_tf.losses.batch_npairs_loss(pairs=...)
SAMPLERS = ("local", "random", "class_balanced")  # sst_tf.sampling.make_sampler
# Local sampler neighbourhoods (sst_tf.sampling.neighborhoods); "original" is the paper's rule.
NEIGHBORHOODS = ("classes", "mixed", "original", "balanced")
BACKBONES = ("inception_v3", "mobilenet_v2", "small_cnn")  # sst_tf.model.build_model
STRATEGIES = ("default", "mirrored", "multi_worker")  # sst_tf.distribute.make_strategy
PRECISIONS = ("none", "bfloat16", "float16")  # sst_tf.step.precision_policy
REFRESH_MODES = ("full", "memory")  # sst_tf.trainer's refresh of the embeddings
KMEANS_METHODS = ("sklearn", "tf")  # sst_tf.kmeans.kmeans(method=...)

__all__ = [
    "BACKBONES", "DATA_SOURCES", "KMEANS_METHODS", "LOSSES", "NEIGHBORHOODS",
    "NPAIRS_PAIRS", "PRECISIONS", "REFRESH_MODES", "SAMPLERS", "SST_IMPOSTERS", "STRATEGIES",
    "TARGET_LOSSES", "TrainConfig", "flag_field",
]


def flag_field(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: tuple[str, ...] = (),
    enum_flag: bool = False,
    flag_default: Any = dataclasses.MISSING,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> Any:
    """A `TrainConfig` field that declares its flag (read by `sst_tf.config_flags`).

    Args:
      default: the field's default; none: a required field (its flag
        defaults to None).
      help: the flag's help text.
      choices: the allowed values of a string field.
      enum_flag: with `choices`, let absl reject other values while parsing
        (``flag --x=y: value should be one of <...>``); otherwise the flag is a
        plain string and `TrainConfig.validate` rejects them (``--x must be
        one of ...``).
      flag_default: the flag's default when it differs from the field's (the
        entry point then derives the value, e.g. `resize_size`).
      low: a number field's lowest meaningful value (every number field has
        one: `TrainConfig.validate` refuses values below it, naming the flag).
      high: its highest meaningful value, if any.
      low_open: `low` itself is refused too (a value must be > low).
    """
    metadata = {"help": help, "choices": choices, "enum_flag": enum_flag}
    if low is not None:
        metadata["bounds"] = (low, high, low_open)
    if flag_default is not dataclasses.MISSING:
        metadata["flag_default"] = flag_default
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs (the flags of `sst_tf.train`)."""

    model_dir: str = flag_field(help="Output folder: checkpoints, events, metrics.json.")
    dataset: str = flag_field(
        "digits", help="Data set: digits (bundled), cub, cars196, sop, folder.")
    data_dir: str | None = flag_field(
        None, help="Folder holding the data set (not needed for digits).")
    data_source: str = flag_field(
        "files", choices=DATA_SOURCES, enum_flag=True,
        help="Where cub/sop come from: files (official layout in --data_dir) or tfds "
             "(TFDS builder; --data_dir is then TFDS's data dir, optional).")
    check_counts: bool = flag_field(
        True, help="Check the official image/class counts of cub, cars196, sop "
                   "(--nocheck_counts: a deliberate subset).")
    check_images: bool = flag_field(
        True, help="Decode every image once before training (cached) and skip, with a "
                   "warning and a count, those that fail.")
    strict_images: bool = flag_field(
        False, help="Stop with an error naming the file on the first undecodable image.")
    backbone: str = flag_field("inception_v3", choices=BACKBONES, help="Backbone network.")
    pretrained: bool = flag_field(
        True, help="Start from ImageNet weights (--nopretrained: random).")
    backbone_weights: str | None = flag_field(
        None, help="Start the backbone from this Keras weights file (.weights.h5, written by "
                   "study/pretrain.py for the same --backbone); replaces --pretrained's "
                   "ImageNet weights.")
    embedding_dim: int = flag_field(512, help="Embedding size d.", low=1, high=65536)
    normalize: bool | None = flag_field(
        None, help="L2-normalise the embeddings (training and evaluation on unit vectors); "
                   "unset: the loss's default (docs/baselines.md).")
    embedding_batchnorm: bool | None = flag_field(
        None, help="End the head with batch normalisation (before --normalize): it centres the "
                   "embeddings of a random backbone; unset: the loss's default (on for ArcFace, "
                   "CosFace and Sub-center ArcFace; docs/baselines.md).")
    image_size: int = flag_field(224, help="Side of the square model input (the crop).",
        low=1, high=4096)
    resize_size: int | None = flag_field(
        256, flag_default=None,
        help="Side images are resized to before cropping (default: image_size*256/224).",
        low=1, high=8192)
    random_flip: bool = flag_field(True, help="Random horizontal flips in training.")
    loss: str = flag_field(
        "sst", choices=LOSSES,
        help="Loss: the paper's first three, then tensorflow-addons' batch forms, then "
             "two modern baselines (docs/baselines.md).")
    margin: float | None = flag_field(
        None, help="Margin of the losses that have one (ArcFace's in degrees); unset: the "
                   f"loss's default ({defaults_text('margin')}).", low=0)
    # SST loss options (sst_tf.losses.sst_loss): scale s of the margin variable
    # and how the imposters of an (anchor, target) pair are combined.
    sst_scale: float | None = flag_field(
        None, help="SST: scale s of the margin variable, "
                   "softplus(s * (D_at - (D_ai + D_ti)/2)). Default: "
                   f"{LOSS_SPECS['sst'].params['scale']:g} on unit vectors, "
                   f"{LOSS_SPECS['sst'].raw_params['scale']:g} (the paper's) with --nonormalize.",
        low=0, low_open=True)
    sst_imposters: str | None = flag_field(
        None, choices=SST_IMPOSTERS, enum_flag=True,
        help="SST: mean over all triplets (the paper's), or per (anchor, target) pair "
             "log(1 + sum over imposters of exp(s z)) (hard imposters weigh more). Default: "
             f"{LOSS_SPECS['sst'].params['imposters']} on unit vectors, "
             f"{LOSS_SPECS['sst'].raw_params['imposters']} (the paper's) with --nonormalize.")
    npairs_scale: float | None = flag_field(
        None, help="N-pairs: factor of the logits (dot products), a temperature 1/s on unit "
                   f"vectors. Default: {LOSS_SPECS['npairs'].params['scale']:g} on unit "
                   f"vectors, {LOSS_SPECS['npairs'].raw_params['scale']:g} (Sohn's and "
                   "tensorflow-addons' form) with --nonormalize.", low=0, low_open=True)
    npairs_pairs: str | None = flag_field(
        None, choices=NPAIRS_PAIRS, enum_flag=True,
        help="N-pairs: all = every row an anchor, the other rows of its class its "
             "positives (tensorflow-addons' form over the batch); per_class = one anchor "
             "and one positive per class, the first two rows (Sohn's N pairs, "
             "pytorch-metric-learning's NPairsLoss: an N x N problem, N the classes, "
             f"against B x B). Default: {LOSS_SPECS['npairs'].params['pairs']}.")
    # Fixed parameters of the losses (loss_registry.PARAM_FLAGS).
    ms_alpha: float | None = flag_field(
        None, help="Multi-Similarity: scale alpha of the positive pairs; unset: "
                   f"{LOSS_SPECS['multi_similarity'].params['alpha']:g} (Wang et al.).",
        low=0, low_open=True)
    ms_beta: float | None = flag_field(
        None, help="Multi-Similarity: scale beta of the negative pairs; unset: "
                   f"{LOSS_SPECS['multi_similarity'].params['beta']:g} (Wang et al.).",
        low=0, low_open=True)
    ms_base: float | None = flag_field(
        None, help="Multi-Similarity: similarity threshold lambda (a cosine, in [-1, 1]); "
                   f"unset: {LOSS_SPECS['multi_similarity'].params['base']:g} (Wang et al.).",
        low=-1, high=1)
    proxy_alpha: float | None = flag_field(
        None, help="Proxy-Anchor: scale alpha; unset: "
                   f"{LOSS_SPECS['proxy_anchor'].params['alpha']:g} (Kim et al.).",
        low=0, low_open=True)
    proxy_delta: float | None = flag_field(
        None, help="Proxy-Anchor: margin delta (a cosine); unset: "
                   f"{LOSS_SPECS['proxy_anchor'].params['delta']:g} (Kim et al.).", low=0)
    circle_m: float | None = flag_field(
        None, help="Circle loss: relaxation margin m; unset: "
                   f"{LOSS_SPECS['circle'].params['m']:g} (Sun et al.).", low=0, high=1)
    circle_gamma: float | None = flag_field(
        None, help="Circle loss: scale gamma; unset: "
                   f"{LOSS_SPECS['circle'].params['gamma']:g} (Sun et al.).",
        low=0, low_open=True)
    temperature: float | None = flag_field(
        None, help="SupCon and NT-Xent: softmax temperature; unset: "
                   f"{LOSS_SPECS['supcon'].params['temperature']:g} for supcon (Khosla et "
                   f"al.), {LOSS_SPECS['ntxent'].params['temperature']:g} for ntxent.",
        low=0, low_open=True)
    margin_scale: float | None = flag_field(
        None, help="ArcFace, CosFace and Sub-center ArcFace: scale s of the cosine logits; "
                   "unset: " + ", ".join(f"{LOSS_SPECS[n].params['scale']:g} for {n}"
                                         for n in loss_registry.MARGIN_LOSSES)
                   + " (their papers: 64; docs/baselines.md).",
        low=0, low_open=True)
    sub_centers: int | None = flag_field(
        None, help="Sub-center ArcFace: weight rows (sub-centers) per class; unset: "
                   f"{LOSS_SPECS['subcenter_arcface'].params['sub_centers']:g} "
                   "(Deng et al.).", low=1, high=64)
    sampler: str | None = flag_field(
        None, choices=SAMPLERS,
        help="Batch sampler: neighbourhood batches (local, see --neighborhoods), random "
             "batches, or P classes x K images, each image at most once per epoch "
             "(class_balanced); unset: the loss's default (local for "
             "sst and triplet).")
    views: int = flag_field(
        1, help="Each sampled image this many times per batch, each copy augmented on its "
                "own (batch_size / views images per batch): 2 gives the two views of SimCLR "
                "and SupCon. Not for --loss=sst or triplet.", low=1, high=16)
    samples_per_class: int | None = flag_field(
        None, help="K images per class in class_balanced batches (batch_size = P * K); "
                   f"unset: the loss's default ({defaults_text('samples_per_class')}).", low=2)
    proxy_lr_multiplier: float = flag_field(
        loss_registry.PROXY_LR_MULTIPLIER,
        help="The learning rate of a loss's own weights (Proxy-Anchor's proxies; the class "
             "weights of ArcFace, CosFace and Sub-center ArcFace) is lr times this.",
        low=0, low_open=True)
    loss_lr_multiplier: float | None = flag_field(
        None, help="Every learning rate of the run is --lr times this; unset: the loss's "
                   f"default ({defaults_text('lr_multiplier')}).", low=0, low_open=True)
    batch_size: int = flag_field(200, help="Batch size B (>= 2).", low=2, high=2**20)
    num_targets: int = flag_field(5, help="Target neighbours k per anchor (>= 1).", low=1)
    refresh_every: int = flag_field(
        1, help="Re-embed the train split and re-cluster every N epochs.", low=1)
    neighborhoods: str = flag_field(
        "classes", choices=NEIGHBORHOODS, enum_flag=True,
        help="Local sampler batches: neighbouring classes with random members each "
             "(classes), one k-means cluster per batch, the paper's rule (original), "
             "k-means clusters split/packed into full batches using every image (balanced), "
             "or, experimental (below random batches on digits, docs/samplers.md), a k-means "
             "neighbourhood + random images with a class guarantee (mixed).")
    local_share: float = flag_field(
        0.5, help="Experimental, --neighborhoods=mixed only: share of each batch taken from "
                  "its neighbourhood.", low=0, high=1)
    min_classes: int = flag_field(
        4, help="Experimental, --neighborhoods=mixed only: classes with >= 2 members "
                "guaranteed per batch.", low=0)
    warmup_epochs: int = flag_field(
        0, help="Local sampler: random batches for this many epochs before the first "
                "neighbourhood batches.", low=0)
    members_per_class: int | None = flag_field(
        None, help="--neighborhoods=classes: images per class in a batch; unset: the "
                   f"loss's default ({defaults_text('members_per_class')}).", low=2)
    epochs: int = flag_field(150, help="Maximum number of epochs.", low=1)
    lr: float = flag_field(1e-4, help="Adam learning rate of the backbone.", low=0, low_open=True)
    head_lr_multiplier: float = flag_field(
        10.0, help="The head's learning rate is lr times this.", low=0, low_open=True)
    weight_decay: float = flag_field(
        1e-4, help="Weight decay (L2 added to the gradients, as Adam's).", low=0)
    decoupled_weight_decay: bool = flag_field(
        False, help="Use AdamW's decoupled weight decay instead.")
    lr_patience: int = flag_field(
        5, help="Multiply the learning rates by --lr_factor after N epochs w/o improvement.", low=1)
    lr_factor: float = flag_field(
        0.5, help="Factor of the learning rates after --lr_patience epochs w/o improvement "
                  "(0.5: halve them).", low=0, high=1, low_open=True)
    early_stop_patience: int = flag_field(15, help="Stop after N epochs without improvement.",
        low=1)
    eval_every: int = flag_field(
        0, help="Also evaluate every N epochs (0: before and after only).", low=0)
    eval_batch_size: int = flag_field(256, help="Batch size of embedding passes.", low=1,
                                      high=2**20)
    recall_ks: tuple[int, ...] = flag_field((1, 2, 4, 8), help="K values of Recall@K.")
    seed: int = flag_field(0, help="Seed of weights, sampling, augmentation and k-means.",
        low=0, high=2**31 - 1)
    deterministic: bool = flag_field(
        True, help="Enable TF op determinism (same seed -> same result).")
    keep_checkpoints: int = flag_field(3, help="Checkpoints kept in model_dir/checkpoints.", low=1)
    progress: bool = flag_field(True, help="Show a progress bar per epoch.")
    export: bool = flag_field(
        True, help="After training, write MODEL_DIR/export (SavedModel) and "
                   "MODEL_DIR/projector (TensorBoard projector of the test embeddings).")
    export_formats: str = flag_field(
        "", help="Also write these formats into MODEL_DIR/export, comma-separated: onnx "
                 "(pip install 'sst_tf[onnx]'), litert, litert_int8 (pip install "
                 "'sst_tf[litert]'); each file in two inputs (any-size images, or images "
                 "already resized and cropped) and checked in its runtime. Empty: the "
                 "SavedModel only.")
    calibrate: bool = flag_field(
        True, help="After training, pick same / different distance thresholds on the "
                   "validation images (--validation_share; else the training split) and "
                   "measure them on the test split: metrics.json, the export, "
                   "figures/thresholds.png.")
    validation_share: float = flag_field(
        0.1, help="Share of the training split held out of training, for the thresholds "
                  "of --calibrate: whole training classes when the test classes are new "
                  "classes, else that share of every class's images. 0: train on all of "
                  "it (the thresholds then come from images seen in training).",
        low=0, high=0.5)
    stop_on_collapse: bool = flag_field(
        False, help="Stop the run when the refreshed training embeddings collapse to nearly "
                    "one point (default: a warning with advice, and training goes on: such "
                    "runs can recover).")
    max_consecutive_nonfinite: int = flag_field(
        10, help="Stop after N steps in a row with a non-finite loss or gradient (each "
                 "such step is skipped); the last good checkpoint is kept.", low=1)
    allow_flag_changes: bool = flag_field(
        False, help="Resume a run although optimisation flags (lr, loss, batch size, seed, "
                    "...) differ from the ones it started with; model/data flags always "
                    "must match.")
    # Scale and speed (docs/scaling.md).
    strategy: str = flag_field(
        "default", choices=STRATEGIES, enum_flag=True,
        help="Distribution: one device, MirroredStrategy over the local GPUs, or "
             "MultiWorkerMirroredStrategy configured by TF_CONFIG.")
    mixed_precision: str = flag_field(
        "none", choices=PRECISIONS, enum_flag=True,
        help="Mixed precision of the backbone (head and loss stay float32; float16 "
             "uses loss scaling).")
    jit_compile: bool = flag_field(False, help="XLA-compile the forward + backward pass.")
    refresh: str = flag_field(
        "memory", choices=REFRESH_MODES, enum_flag=True,
        help="Refresh embeddings from the previous epochs' training forward passes (memory: "
             "no extra pass after the first; chosen on the suite's validation splits, "
             "study/docs/sst_study.md) or by an inference pass over the training split (full: "
             "the paper's, configs/cub.cfg).")
    kmeans: str = flag_field(
        "sklearn", choices=KMEANS_METHODS, enum_flag=True,
        help="k-means of the refresh: scikit-learn (CPU) or TensorFlow (GPU when present).")
    # Negatives beyond the replica's batch (docs/scaling.md#negatives-beyond-one-batch).
    global_negatives: bool = flag_field(
        False, help="Under a strategy with several replicas: every replica's loss sees the "
                    "global batch of all replicas (exactly one device's loss on the "
                    "concatenated batches); no effect on one replica.")
    memory_size: int = flag_field(
        0, help="Cross-batch memory: a queue of the last N embeddings and labels, used as "
                "extra positives and negatives by the loss (0: none).", low=0, high=2**24)
    memory_warmup_steps: int = flag_field(
        0, help="Cross-batch memory: steps before the first batch enters the queue.", low=0)
    memory_weight: float = flag_field(
        1.0, help="Cross-batch memory: factor of the memory's loss term.", low=0, low_open=True)

    def reader_options(self) -> dict:
        """The data-set options of this config that the chosen reader accepts."""
        info = data_lib.DATASETS.get(self.dataset)
        accepted = info.options if info is not None else ()
        values = {"data_source": self.data_source, "check_counts": self.check_counts,
                  "check_images": self.check_images, "strict_images": self.strict_images}
        return {k: v for k, v in values.items() if k in accepted}

    def model_options(self, pretrained: bool | None = None) -> dict:
        """Keyword arguments of `sst_tf.model.build_model` for this run's model.

        Args:
          pretrained: load ImageNet weights; None: the run's start, as `pretrained`
            and `backbone_weights` say (an export restores a checkpoint instead and
            passes False: neither is loaded).
        """
        start = pretrained is None  # the run's starting point, not a restore
        pretrained = self.pretrained if pretrained is None else pretrained
        weights_file = self.backbone_weights if start else None
        return {"backbone": self.backbone,
                "weights": "imagenet" if pretrained and not weights_file else None,
                "backbone_weights": weights_file,
                "embedding_dim": self.embedding_dim, "normalize": self.normalize,
                "embedding_batchnorm": bool(self.embedding_batchnorm),
                "image_size": self.image_size}

    def resolved(self) -> TrainConfig:
        """This config with unset loss-dependent flags taken from the loss's defaults.

        `normalize`, `sampler`, `margin` and `loss_lr_multiplier` left as None
        take the values of
        `loss_registry.LOSS_SPECS[loss]`; given values are kept.
        """
        return loss_registry.resolve(self)

    def _choice_check(self, name: str) -> tuple[bool, str, object]:
        """(ok, message, value) of choice field `name`: one of its choices (None if unset)."""
        field = CONFIG_FIELDS[name]
        choices, value = field.metadata["choices"], getattr(self, name)
        ok = value in choices or (value is None and field.default is None)
        return ok, f"--{name} must be one of {'|'.join(choices)}", value

    def _bounds_check(self) -> None:
        """Every number field within its declared bounds (`flag_field`'s `low`, `high`)."""
        for name, field in CONFIG_FIELDS.items():
            bounds, value = field.metadata.get("bounds"), getattr(self, name)
            if bounds is None or value is None:
                continue
            low, high, low_open = bounds
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{name} must be a finite number, got {value!r}.")
            too_low = value <= low if low_open else value < low
            if too_low:
                raise ValueError(f"--{name} must be {'>' if low_open else '>='} {low:g}, "
                                 f"got {value!r}.")
            if high is not None and value > high:
                raise ValueError(f"--{name} must be <= {high:g}, got {value!r}.")

    def validate(self) -> None:
        """Checks values (unset loss defaults resolved); raises ValueError naming the flag.

        Every number within its field's bounds first (finite, `low`, `high`),
        then the choices and the relations between flags.
        """
        ok, message, value = self._choice_check("loss")
        if not ok:
            raise ValueError(f"{message}, got {value!r}.")
        self._bounds_check()
        c = self.resolved()  # check the values the run will use
        c._bounds_check()  # the loss's defaults too
        data_lib.check_dataset_args(self.dataset, self.data_dir, self.data_source)
        checks = [
            (c.batch_size % c.views == 0 and c.batch_size // c.views >= 2,
             f"--batch_size={c.batch_size} must be a multiple (>= 2x) of --views={c.views} "
             "(each batch holds batch_size / views images)", c.batch_size),
            (c.views == 1 or c.loss not in TARGET_LOSSES,
             f"--views={c.views} does not apply to --loss={c.loss}: its target neighbours are "
             "rows of the batch, and a repeated image would be its own target", c.views),
            (c.sampler != "class_balanced" or (
                (c.batch_size // c.views) % max(c.samples_per_class, 1) == 0
                and (c.batch_size // c.views) // max(c.samples_per_class, 1) >= 2),
             f"--batch_size{' / --views' if c.views > 1 else ''} must be a multiple (>= 2x) "
             "of --samples_per_class for --sampler=class_balanced", c.batch_size),
            c._choice_check("neighborhoods"),
            (c.num_targets < c.batch_size,
             f"--num_targets={c.num_targets} must be below --batch_size={c.batch_size} (a "
             "row's target neighbours are other rows of its batch)", c.num_targets),
            (c.resize_size is None or c.resize_size >= c.image_size,
             "--resize_size must be >= --image_size", c.resize_size),
            (c.margin is None or loss_registry.spec(c.loss).margin is not None,
             f"--margin does not apply to --loss={c.loss} (it has no margin)", c.margin),
            c._choice_check("sst_imposters"),
            c._choice_check("npairs_pairs"),
            *((getattr(c, flag) is None or c.loss in flag_losses,
               f"--{flag} does not apply to --loss={c.loss} (only to "
               f"{' and '.join(f'--loss={x}' for x in flag_losses)})",
               getattr(c, flag)) for flag, (flag_losses, _) in loss_registry.PARAM_FLAGS.items()),
            # On raw embeddings a scale s only rescales the embeddings (s z(x) =
            # z(sqrt(s) x)), and the softmax form was not measured there.
            (c.loss != "sst" or c.normalize or (
                c.sst_scale in (None, 1.0) and c.sst_imposters in (None, "mean")),
             "--sst_scale other than 1 and --sst_imposters=softmax need --normalize (on raw "
             "embeddings a scale only rescales them, and the softmax form was not measured "
             "there; study/docs/sst_study.md)",
             (c.sst_scale, c.sst_imposters)),
            c._choice_check("sampler"),
            c._choice_check("backbone"),
            (not c.backbone_weights or os.path.isfile(c.backbone_weights),
             "--backbone_weights is not a file", c.backbone_weights),
            (len(c.recall_ks) > 0 and min(c.recall_ks) >= 1,
             "--recall_ks must be positive integers", c.recall_ks),
            (bool(c.model_dir), "--model_dir is required", c.model_dir),
            c._choice_check("strategy"),
            c._choice_check("mixed_precision"),
            c._choice_check("refresh"),
            (not (c.jit_compile and c.deterministic),
             "--jit_compile needs --nodeterministic (XLA has no deterministic kernels for "
             "some gradients, e.g. MaxPool)", c.jit_compile),
            c._choice_check("kmeans"),
            (not (c.global_negatives and c.jit_compile),
             "--global_negatives cannot be combined with --jit_compile (the all-gather of "
             "the replicas' embeddings is a synchronisation point, which the XLA-compiled "
             "forward and backward cannot hold)", c.jit_compile),
            (c.memory_size == 0 or c.loss in loss_registry.REFERENCE_LOSSES,
             f"--memory_size works with the losses that have a reference-set form "
             f"({'|'.join(loss_registry.REFERENCE_LOSSES)}), not with --loss", c.loss),
            (not (c.memory_size and c.npairs_pairs == "per_class"),
             "--memory_size needs --npairs_pairs=all (one pair per class has no "
             "reference-set form)", c.npairs_pairs),
        ]
        for ok, message, value in checks:
            if not ok:
                raise ValueError(f"{message}, got {value!r}.")
        try:  # before training: a missing converter must not wait for the end of the run
            requested = formats.parse_formats(c.export_formats)
            formats.check_available(requested, "--export_formats")
        except ValueError as e:
            raise ValueError(f"--export_formats: {e}" if "--export_formats" not in str(e)
                             else str(e)) from e
        if requested and not c.export:
            raise ValueError(f"--export_formats={c.export_formats} needs --export.")


# TrainConfig's fields by name (with their flag declarations in `metadata`).
CONFIG_FIELDS = {field.name: field for field in dataclasses.fields(TrainConfig)}
