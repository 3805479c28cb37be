"""Run configuration: the plain dataclass the entry point fills from flags.

Imports no TensorFlow, so bad flags are reported in a second.
"""

from __future__ import annotations

import dataclasses

from sst_tf import data as data_lib
from sst_tf import loss_registry

LOSSES = (
    "sst", "triplet", "contrastive",
    # tensorflow-addons' losses (batch forms) and modern baselines.
    "triplet_semihard", "triplet_hard", "triplet_hard_soft", "lifted_struct", "npairs",
    "pairwise_contrastive", "multi_similarity", "proxy_anchor",
)
TARGET_LOSSES = ("sst", "triplet")  # losses over triplets: need target tables
SST_IMPOSTERS = ("mean", "softmax")  # sst_tf.losses.SST_IMPOSTERS
# --sst_scale / --sst_imposters when unset: the paper's loss (1, "mean") on raw
# embeddings; on L2-normalised ones (squared distances <= 4) scale 1 leaves
# softplus nearly linear with vanishing gradients and training collapsed on
# digits, and a softmax over the imposters did best on the glyph benchmark's
# validation split (docs/sst_study.md).
NORMALIZED_SST_SCALE = 16.0
NORMALIZED_SST_IMPOSTERS = "softmax"
SAMPLERS = ("local", "random", "class_balanced")
# Local sampler neighbourhoods; "original" is the paper's rule.
NEIGHBORHOODS = ("classes", "mixed", "original", "balanced")
BACKBONES = ("inception_v3", "mobilenet_v2", "small_cnn")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("none", "bfloat16", "float16")
REFRESH_MODES = ("full", "memory")
KMEANS_METHODS = ("sklearn", "tf")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs (the flags of `sst_tf.train`)."""

    model_dir: str
    dataset: str = "digits"
    data_dir: str | None = None
    data_source: str = "files"
    check_counts: bool = True
    check_images: bool = True
    strict_images: bool = False
    backbone: str = "inception_v3"
    pretrained: bool = True
    embedding_dim: int = 512
    normalize: bool | None = None  # None: the loss's default (loss_registry)
    image_size: int = 224
    resize_size: int | None = 256
    random_flip: bool = True
    loss: str = "sst"
    margin: float | None = None  # None: the loss's default (loss_registry)
    # SST loss options (sst_tf.losses.sst_loss): scale s of the margin variable
    # and how the imposters of an (anchor, target) pair are combined.
    sst_scale: float | None = None  # None: 1, or NORMALIZED_SST_SCALE with normalize
    sst_imposters: str | None = None  # None: "mean", or NORMALIZED_SST_IMPOSTERS
    sampler: str | None = None  # None: the loss's default (loss_registry)
    samples_per_class: int = 4
    proxy_lr_multiplier: float = 100.0
    loss_lr_multiplier: float | None = None  # None: the loss's default (loss_registry)
    batch_size: int = 200
    num_targets: int = 5
    refresh_every: int = 1
    neighborhoods: str = "classes"
    local_share: float = 0.5
    min_classes: int = 4
    warmup_epochs: int = 0
    members_per_class: int | None = None  # None: the loss's default (loss_registry)
    epochs: int = 150
    lr: float = 1e-4
    head_lr_multiplier: float = 10.0
    weight_decay: float = 1e-4
    decoupled_weight_decay: bool = False
    lr_patience: int = 5
    lr_factor: float = 0.5
    early_stop_patience: int = 15
    eval_every: int = 0
    eval_batch_size: int = 256
    recall_ks: tuple[int, ...] = (1, 2, 4, 8)
    seed: int = 0
    deterministic: bool = True
    keep_checkpoints: int = 3
    progress: bool = True
    export: bool = True
    max_consecutive_nonfinite: int = 10
    allow_flag_changes: bool = False
    # Scale and speed (docs/scaling.md).
    strategy: str = "default"
    mixed_precision: str = "none"
    jit_compile: bool = False
    refresh: str = "full"
    kmeans: str = "sklearn"

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
          pretrained: load ImageNet weights; None: as `pretrained` says (an
            export restores a checkpoint instead and passes False).
        """
        pretrained = self.pretrained if pretrained is None else pretrained
        return {"backbone": self.backbone, "weights": "imagenet" if pretrained else None,
                "embedding_dim": self.embedding_dim, "normalize": self.normalize,
                "image_size": self.image_size}

    def sst_options(self) -> dict:
        """Keyword arguments of `sst_tf.losses.sst_loss` for this run (after `resolved`)."""
        scale, imposters = self.sst_scale, self.sst_imposters
        if scale is None:
            scale = NORMALIZED_SST_SCALE if self.normalize else 1.0
        if imposters is None:
            imposters = NORMALIZED_SST_IMPOSTERS if self.normalize else "mean"
        return {"scale": float(scale), "imposters": imposters}

    def resolved(self) -> TrainConfig:
        """This config with unset loss-dependent flags taken from the loss's defaults.

        `normalize`, `sampler`, `margin` and `loss_lr_multiplier` left as None
        take the values of
        `loss_registry.LOSS_SPECS[loss]`; given values are kept.
        """
        return loss_registry.resolve(self)

    def validate(self) -> None:
        """Checks values (unset loss defaults resolved); raises ValueError naming the flag."""
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be one of {'|'.join(LOSSES)}, got {self.loss!r}.")
        c = self.resolved()  # check the values the run will use
        data_lib.check_dataset_args(self.dataset, self.data_dir, self.data_source)
        checks = [
            (c.batch_size >= 2, "--batch_size must be >= 2", c.batch_size),
            (c.num_targets >= 1, "--num_targets must be >= 1", c.num_targets),
            (c.samples_per_class >= 2, "--samples_per_class must be >= 2",
             c.samples_per_class),
            (c.sampler != "class_balanced" or (
                c.batch_size % max(c.samples_per_class, 1) == 0
                and c.batch_size // max(c.samples_per_class, 1) >= 2),
             "--batch_size must be a multiple (>= 2x) of --samples_per_class for "
             "--sampler=class_balanced", c.batch_size),
            (c.loss_lr_multiplier > 0, "--loss_lr_multiplier must be > 0",
             c.loss_lr_multiplier),
            (c.proxy_lr_multiplier > 0, "--proxy_lr_multiplier must be > 0",
             c.proxy_lr_multiplier),
            (c.embedding_dim >= 1, "--embedding_dim must be >= 1", c.embedding_dim),
            (c.epochs >= 0, "--epochs must be >= 0", c.epochs),
            (c.neighborhoods in NEIGHBORHOODS,
             f"--neighborhoods must be one of {'|'.join(NEIGHBORHOODS)}", c.neighborhoods),
            (0.0 <= c.local_share <= 1.0, "--local_share must be in [0, 1]",
             c.local_share),
            (c.min_classes >= 0, "--min_classes must be >= 0", c.min_classes),
            (c.members_per_class >= 2, "--members_per_class must be >= 2",
             c.members_per_class),
            (c.warmup_epochs >= 0, "--warmup_epochs must be >= 0", c.warmup_epochs),
            (c.refresh_every >= 1, "--refresh_every must be >= 1", c.refresh_every),
            (c.eval_every >= 0, "--eval_every must be >= 0", c.eval_every),
            (c.lr > 0, "--lr must be > 0", c.lr),
            (c.head_lr_multiplier > 0, "--head_lr_multiplier must be > 0",
             c.head_lr_multiplier),
            (c.weight_decay >= 0, "--weight_decay must be >= 0", c.weight_decay),
            (c.image_size >= 1, "--image_size must be >= 1", c.image_size),
            (c.resize_size is None or c.resize_size >= c.image_size,
             "--resize_size must be >= --image_size", c.resize_size),
            (c.margin is None or loss_registry.spec(c.loss).margin is not None,
             f"--margin does not apply to --loss={c.loss} (it has no margin)", c.margin),
            (c.sst_scale is None or c.sst_scale > 0, "--sst_scale must be > 0", c.sst_scale),
            (c.sst_imposters is None or c.sst_imposters in SST_IMPOSTERS,
             f"--sst_imposters must be one of {'|'.join(SST_IMPOSTERS)}", c.sst_imposters),
            # On raw embeddings a scale s only rescales the embeddings (s z(x) =
            # z(sqrt(s) x)), and the softmax form was not measured there.
            (c.loss != "sst" or c.normalize or (
                c.sst_scale in (None, 1.0) and c.sst_imposters in (None, "mean")),
             "--sst_scale other than 1 and --sst_imposters=softmax need --normalize (on raw "
             "embeddings a scale only rescales them, and the softmax form was not measured "
             "there; docs/sst_study.md)",
             (c.sst_scale, c.sst_imposters)),
            (c.sampler in SAMPLERS,
             f"--sampler must be one of {'|'.join(SAMPLERS)}", c.sampler),
            (c.backbone in BACKBONES,
             f"--backbone must be one of {'|'.join(BACKBONES)}", c.backbone),
            (len(c.recall_ks) > 0 and min(c.recall_ks) >= 1,
             "--recall_ks must be positive integers", c.recall_ks),
            (bool(c.model_dir), "--model_dir is required", c.model_dir),
            (c.max_consecutive_nonfinite >= 1, "--max_consecutive_nonfinite must be >= 1",
             c.max_consecutive_nonfinite),
            (c.strategy in STRATEGIES,
             f"--strategy must be one of {'|'.join(STRATEGIES)}", c.strategy),
            (c.mixed_precision in PRECISIONS,
             f"--mixed_precision must be one of {'|'.join(PRECISIONS)}", c.mixed_precision),
            (c.refresh in REFRESH_MODES,
             f"--refresh must be one of {'|'.join(REFRESH_MODES)}", c.refresh),
            (not (c.jit_compile and c.deterministic),
             "--jit_compile needs --nodeterministic (XLA has no deterministic kernels for "
             "some gradients, e.g. MaxPool)", c.jit_compile),
            (c.kmeans in KMEANS_METHODS,
             f"--kmeans must be one of {'|'.join(KMEANS_METHODS)}", c.kmeans),
        ]
        for ok, message, value in checks:
            if not ok:
                raise ValueError(f"{message}, got {value!r}.")
