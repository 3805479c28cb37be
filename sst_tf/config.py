"""Run configuration: the plain dataclass the entry point fills from flags.

Imports no TensorFlow, so bad flags are reported in a second.
"""

from __future__ import annotations

import dataclasses

from sst_tf import data as data_lib

LOSSES = (
    "sst", "triplet", "contrastive",
    # tensorflow-addons' losses (batch forms) and modern baselines (issue 7).
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
    normalize: bool = False
    image_size: int = 224
    resize_size: int | None = 256
    random_flip: bool = True
    loss: str = "sst"
    margin: float | None = None
    # SST loss options (sst_tf.losses.sst_loss): scale s of the margin variable
    # and how the imposters of an (anchor, target) pair are combined.
    sst_scale: float | None = None  # None: 1, or NORMALIZED_SST_SCALE with normalize
    sst_imposters: str | None = None  # None: "mean", or NORMALIZED_SST_IMPOSTERS
    sampler: str = "local"
    samples_per_class: int = 4
    proxy_lr_multiplier: float = 100.0
    batch_size: int = 200
    num_targets: int = 5
    refresh_every: int = 1
    neighborhoods: str = "classes"
    local_share: float = 0.5
    min_classes: int = 4
    warmup_epochs: int = 0
    members_per_class: int = 10
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
    # Scale and speed (README "Scaling, precision and sampler options").
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

    def sst_options(self) -> dict:
        """Keyword arguments of `sst_tf.losses.sst_loss` for this run."""
        scale, imposters = self.sst_scale, self.sst_imposters
        if scale is None:
            scale = NORMALIZED_SST_SCALE if self.normalize else 1.0
        if imposters is None:
            imposters = NORMALIZED_SST_IMPOSTERS if self.normalize else "mean"
        return {"scale": float(scale), "imposters": imposters}

    def validate(self) -> None:
        """Checks values; raises ValueError naming the offending flag."""
        data_lib.check_dataset_args(self.dataset, self.data_dir, self.data_source)
        checks = [
            (self.batch_size >= 2, "--batch_size must be >= 2", self.batch_size),
            (self.num_targets >= 1, "--num_targets must be >= 1", self.num_targets),
            (self.samples_per_class >= 2, "--samples_per_class must be >= 2",
             self.samples_per_class),
            (self.sampler != "class_balanced" or (
                self.batch_size % max(self.samples_per_class, 1) == 0
                and self.batch_size // max(self.samples_per_class, 1) >= 2),
             "--batch_size must be a multiple (>= 2x) of --samples_per_class for "
             "--sampler=class_balanced", self.batch_size),
            (self.proxy_lr_multiplier > 0, "--proxy_lr_multiplier must be > 0",
             self.proxy_lr_multiplier),
            (self.embedding_dim >= 1, "--embedding_dim must be >= 1", self.embedding_dim),
            (self.epochs >= 0, "--epochs must be >= 0", self.epochs),
            (self.neighborhoods in NEIGHBORHOODS,
             f"--neighborhoods must be one of {'|'.join(NEIGHBORHOODS)}", self.neighborhoods),
            (0.0 <= self.local_share <= 1.0, "--local_share must be in [0, 1]",
             self.local_share),
            (self.min_classes >= 0, "--min_classes must be >= 0", self.min_classes),
            (self.members_per_class >= 2, "--members_per_class must be >= 2",
             self.members_per_class),
            (self.warmup_epochs >= 0, "--warmup_epochs must be >= 0", self.warmup_epochs),
            (self.refresh_every >= 1, "--refresh_every must be >= 1", self.refresh_every),
            (self.eval_every >= 0, "--eval_every must be >= 0", self.eval_every),
            (self.lr > 0, "--lr must be > 0", self.lr),
            (self.head_lr_multiplier > 0, "--head_lr_multiplier must be > 0",
             self.head_lr_multiplier),
            (self.weight_decay >= 0, "--weight_decay must be >= 0", self.weight_decay),
            (self.image_size >= 1, "--image_size must be >= 1", self.image_size),
            (self.resize_size is None or self.resize_size >= self.image_size,
             "--resize_size must be >= --image_size", self.resize_size),
            (self.loss in LOSSES, f"--loss must be one of {'|'.join(LOSSES)}", self.loss),
            (self.sst_scale is None or self.sst_scale > 0, "--sst_scale must be > 0",
             self.sst_scale),
            (self.sst_imposters is None or self.sst_imposters in SST_IMPOSTERS,
             f"--sst_imposters must be one of {'|'.join(SST_IMPOSTERS)}", self.sst_imposters),
            # On raw embeddings a scale s only rescales the embeddings (s z(x) =
            # z(sqrt(s) x)), and the softmax form was not measured there.
            (self.loss != "sst" or self.normalize is not False or (
                self.sst_scale in (None, 1.0) and self.sst_imposters in (None, "mean")),
             "--sst_scale other than 1 and --sst_imposters=softmax need --normalize (on raw "
             "embeddings a scale only rescales them, and the softmax form was not measured "
             "there; docs/sst_study.md)",
             (self.sst_scale, self.sst_imposters)),
            (self.sampler in SAMPLERS,
             f"--sampler must be one of {'|'.join(SAMPLERS)}", self.sampler),
            (self.backbone in BACKBONES,
             f"--backbone must be one of {'|'.join(BACKBONES)}", self.backbone),
            (len(self.recall_ks) > 0 and min(self.recall_ks) >= 1,
             "--recall_ks must be positive integers", self.recall_ks),
            (bool(self.model_dir), "--model_dir is required", self.model_dir),
            (self.max_consecutive_nonfinite >= 1, "--max_consecutive_nonfinite must be >= 1",
             self.max_consecutive_nonfinite),
            (self.strategy in STRATEGIES,
             f"--strategy must be one of {'|'.join(STRATEGIES)}", self.strategy),
            (self.mixed_precision in PRECISIONS,
             f"--mixed_precision must be one of {'|'.join(PRECISIONS)}", self.mixed_precision),
            (self.refresh in REFRESH_MODES,
             f"--refresh must be one of {'|'.join(REFRESH_MODES)}", self.refresh),
            (not (self.jit_compile and self.deterministic),
             "--jit_compile needs --nodeterministic (XLA has no deterministic kernels for "
             "some gradients, e.g. MaxPool)", self.jit_compile),
            (self.kmeans in KMEANS_METHODS,
             f"--kmeans must be one of {'|'.join(KMEANS_METHODS)}", self.kmeans),
        ]
        for ok, message, value in checks:
            if not ok:
                raise ValueError(f"{message}, got {value!r}.")
