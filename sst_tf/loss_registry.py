"""Each loss's documented defaults: geometry, margin / scale parameters, sampler.

One `LossSpec` per `--loss` value. A flag the user gives (command line or flag
file) always wins; a flag left unset (`None` in `TrainConfig`) takes the
loss's value from here (`resolve`). Every value names where it comes from
(`LossSpec.sources`); docs/baselines.md shows the same table.

Imports nothing from sst_tf, so `sst_tf.config` can use it without a cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

# Short names of the sources quoted in `LossSpec.sources`.
SST_PAPER = "SST paper (Nguyen & De Baets 2020)"
TFA = "tensorflow-addons 0.23"
FACENET = "FaceNet (Schroff et al. 2015)"
HERMANS = "In Defense of the Triplet Loss (Hermans et al. 2017)"
LIFTED = "Lifted Structured embedding (Oh Song et al. 2016)"
NPAIRS = "N-pair loss (Sohn 2016)"
HADSELL = "Dimensionality reduction by learning an invariant mapping (Hadsell et al. 2006)"
MS = "Multi-Similarity loss (Wang et al. 2019)"
PROXY = "Proxy-Anchor loss (Kim et al. 2020)"
SST_STUDY = "this project's SST study (study/docs/sst_study.md)"
MUSGRAVE = "A Metric Learning Reality Check (Musgrave et al. 2020)"


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A loss's documented defaults.

    Attributes:
      normalize: L2-normalise the model's embeddings (training and evaluation
        then use unit vectors: Euclidean ranking = cosine ranking).
      sampler: default `--sampler`.
      margin: default `--margin`; None when the loss has no `--margin`.
      lr_multiplier: default `--loss_lr_multiplier`: every learning rate of
        the run is `--lr` times this (1 for most losses).
      members_per_class: default `--members_per_class` (images per class in a
        batch of the local sampler's class neighbourhoods).
      samples_per_class: default `--samples_per_class` (K images per class in
        a class-balanced batch).
      params: fixed keyword arguments of the loss function (scales, mining
        margins), passed by the trainer.
      sources: where each value comes from, keyed by field name (and by
        parameter name for `params`).
    """

    normalize: bool
    sampler: str
    margin: float | None = None
    lr_multiplier: float = 1.0
    members_per_class: int = 10
    samples_per_class: int = 4
    params: Mapping[str, float] = dataclasses.field(default_factory=dict)
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))


_TFA_TRIPLET_NORM = f"{TFA} docstring: embeddings should be L2-normalised"
_PK = "P classes x K images per batch"
# Batch-hard mining from a random init collapsed every embedding onto one point
# at the rate the other losses train with (digits, docs/baselines.md).
_BATCH_HARD_LR = ("this project (measured on digits): at the full rate batch-hard mining "
                  "collapsed the embedding (with margin 1, 0.2 and the soft margin)")

LOSS_SPECS: Mapping[str, LossSpec] = MappingProxyType({
    # SST: L2-normalised (which brings --sst_scale 16 and the softmax over
    # imposters, sst_tf.config), local class neighbourhoods of 8 images per class.
    # The paper's exact recipe (raw embeddings, the paper's neighbourhood rule)
    # is configs/cub.cfg; the form was chosen on the glyph benchmark, the batch
    # shape on the validation splits of the benchmark suite (study/docs/sst_study.md
    # sections 8 and 15).
    "sst": LossSpec(
        normalize=True, sampler="local", members_per_class=8,
        sources={"normalize": f"{SST_STUDY}: the paper's raw form trails every other "
                              "loss on unseen classes (MAP@R 0.076 against 0.29); the "
                              "authors' job script left normalisation off (configs/cub.cfg)",
                 "sampler": f"{SST_PAPER}: local sampling",
                 "members_per_class": f"{SST_STUDY} section 15: 8 images of 12 neighbouring "
                                      "classes per batch had the best mean MAP@R over the "
                                      "suite's four validation splits (0.527 against 0.488 "
                                      "for 4 of 25; a class of 5 images stays whole)"}),
    # The SST paper's triplet baseline is raw with margin 0.2 (--nonormalize
    # --margin=0.2); Musgrave et al.'s values won every validation split of the
    # benchmark suite (study/docs/sst_study.md section 13).
    "triplet": LossSpec(
        normalize=True, sampler="local", margin=0.1,
        sources={"normalize": f"{MUSGRAVE}: L2-normalised embeddings; on the suite's "
                              "validation splits raw embeddings (the SST paper's baseline) "
                              "lost on all four and collapsed on many classes",
                 "sampler": f"{SST_PAPER}: baselines with the same sampler as SST",
                 "margin": f"{MUSGRAVE}: triplet margin about 0.1 (the SST paper: 0.2)"}),
    # The SST paper's contrastive baseline draws local batches (--sampler=local);
    # class-balanced batches won every validation split of the benchmark suite
    # (study/docs/sst_study.md section 15).
    "contrastive": LossSpec(
        normalize=False, sampler="class_balanced", margin=0.5,
        sources={"normalize": f"{SST_PAPER}: baselines in the same geometry as SST; on the "
                              "suite's validation splits unit vectors lost on all four",
                 "sampler": f"{SST_STUDY} section 15: P classes x K images beat the SST "
                            "paper's local sampler on all four validation splits of the "
                            "benchmark suite",
                 "margin": f"{SST_PAPER}: contrastive baseline"}),
    "triplet_semihard": LossSpec(
        normalize=True, sampler="class_balanced", margin=1.0,
        sources={"normalize": _TFA_TRIPLET_NORM,
                 "sampler": f"{FACENET}: many images of each identity per batch",
                 "margin": f"{TFA} default"}),
    "triplet_hard": LossSpec(
        normalize=True, sampler="class_balanced", margin=1.0, lr_multiplier=0.1,
        sources={"normalize": _TFA_TRIPLET_NORM, "sampler": f"{HERMANS}: {_PK}",
                 "margin": f"{TFA} default",
                 "lr_multiplier": f"{_BATCH_HARD_LR}; a tenth beat a quarter on 6 of 8 runs "
                                  f"of the suite's validation splits ({SST_STUDY} section 17)"}),
    "triplet_hard_soft": LossSpec(
        normalize=True, sampler="class_balanced", margin=1.0, lr_multiplier=0.25,
        sources={"normalize": _TFA_TRIPLET_NORM, "sampler": f"{HERMANS}: {_PK}",
                 "margin": f"{TFA} default (unused by the soft form)",
                 "lr_multiplier": _BATCH_HARD_LR}),
    "lifted_struct": LossSpec(
        normalize=False, sampler="class_balanced", margin=1.0,
        sources={"normalize": f"{TFA} docstring: embeddings should NOT be L2-normalised",
                 "sampler": f"{LIFTED}: batches built from positive pairs",
                 "margin": f"{TFA} default"}),
    "npairs": LossSpec(
        normalize=True, sampler="class_balanced", params={"l2_penalty": 0.002},
        sources={"l2_penalty": f"{NPAIRS}; 0.002 as in TensorFlow's original npairs_loss "
                               "(constant, so without effect, on unit vectors)",
                 # The paper keeps raw embeddings small by the penalty; on digits
                 # they diverged anyway (docs/baselines.md).
                 "normalize": "this project (measured on digits): raw embeddings, as in "
                              f"{NPAIRS}, ended below the untrained model even with the "
                              "penalty; unit vectors did not",
                 "sampler": f"{NPAIRS}: pairs from N different classes per batch"}),
    "pairwise_contrastive": LossSpec(
        normalize=False, sampler="class_balanced", margin=1.0, samples_per_class=5,
        sources={"normalize": f"{HADSELL}: unnormalised embeddings",
                 "sampler": "this project: class-balanced batches so that every batch "
                            "holds positive pairs",
                 "margin": f"{TFA} default",
                 "samples_per_class": f"{SST_STUDY} section 16: 20 classes x 5 images beat "
                                      "25 x 4 on 7 of 8 runs of the suite's validation "
                                      "splits (mean MAP@R 0.426 against 0.401)"}),
    "multi_similarity": LossSpec(
        normalize=True, sampler="class_balanced",
        params={"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1},
        sources={"normalize": f"{MS}: cosine similarity of L2-normalised embeddings",
                 "sampler": f"{MS}: {_PK}",
                 "alpha": MS, "beta": MS, "base": f"{MS} (lambda)",
                 "epsilon": MS}),
    "proxy_anchor": LossSpec(
        normalize=True, sampler="random", lr_multiplier=0.25,
        params={"alpha": 32.0, "delta": 0.1},
        sources={"normalize": f"{PROXY}: cosine similarity to proxies, L2-normalised "
                              "embeddings",
                 # On digits (10 classes) random batches ended below the untrained
                 # model and class-balanced ones did not (docs/baselines.md); on the
                 # suite's validation splits it is the other way round.
                 "sampler": f"{PROXY}: random batches; on the suite's validation splits "
                            "class-balanced batches (25 classes x 4) ended below the "
                            "untrained model, random ones did not "
                            f"({SST_STUDY} section 16)",
                 "alpha": PROXY, "delta": f"{PROXY} (margin)",
                 "proxy_lr_multiplier": f"{PROXY}: proxies learn 100x faster",
                 "lr_multiplier": f"{SST_STUDY} sections 16-17: a quarter of the rate beat "
                                  "the full rate on 8 of 8 runs of the suite's validation "
                                  "splits, with class-balanced and with random batches"}),
})

# The --loss choices, in the order above (the paper's three, tensorflow-addons'
# batch forms, modern baselines).
LOSSES = tuple(LOSS_SPECS)
# Losses over (anchor, target, imposter) triplets: their plans need target tables.
TARGET_LOSSES = ("sst", "triplet")
# Losses with a reference-set form (anchors = the batch, candidates = other rows,
# e.g. a cross-batch memory): `sst_tf.losses.make_reference_loss`. Lifted
# structure pairs the negatives of both rows of a pair, Proxy-Anchor pairs
# proxies with the batch, and semi-hard mining over a reference set of M rows
# needs a [B, M, M] tensor: none of the three has one.
REFERENCE_LOSSES = ("sst", "triplet", "contrastive", "triplet_hard", "triplet_hard_soft",
                    "npairs", "pairwise_contrastive", "multi_similarity")

# Flags that replace one of a loss's fixed parameters (`LossSpec.params`):
# flag -> (loss, parameter).
PARAM_FLAGS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "ms_alpha": ("multi_similarity", "alpha"),
    "ms_beta": ("multi_similarity", "beta"),
    "ms_base": ("multi_similarity", "base"),
    "proxy_alpha": ("proxy_anchor", "alpha"),
    "proxy_delta": ("proxy_anchor", "delta"),
})

# Fields of a run's configuration that a loss can default -> LossSpec fields.
DEFAULTED_FIELDS = {"normalize": "normalize", "sampler": "sampler", "margin": "margin",
                    "loss_lr_multiplier": "lr_multiplier",
                    "members_per_class": "members_per_class",
                    "samples_per_class": "samples_per_class"}


def spec(loss: str) -> LossSpec:
    """The `LossSpec` of a loss name.

    Raises:
      ValueError: unknown loss name.
    """
    if loss not in LOSS_SPECS:
        raise ValueError(f"--loss must be one of {'|'.join(LOSS_SPECS)}, got {loss!r}.")
    return LOSS_SPECS[loss]


def resolve(config):
    """Fills the unset (None) loss-dependent fields of a config from its loss's spec.

    Args:
      config: a `TrainConfig` (any dataclass with `loss` and the
        `DEFAULTED_FIELDS`).

    Returns:
      A copy with the `DEFAULTED_FIELDS` (`normalize`, `sampler`, `margin`,
      `loss_lr_multiplier`, `members_per_class`, `samples_per_class`) set:
      the given value where there is one, else the loss's default. An unknown loss is
      returned unchanged (validation reports it).
    """
    if config.loss not in LOSS_SPECS:
        return config
    s = LOSS_SPECS[config.loss]
    values = {field: getattr(s, attr) for field, attr in DEFAULTED_FIELDS.items()
              if getattr(config, field) is None}
    return dataclasses.replace(config, **values) if values else config


def params(config) -> dict:
    """The fixed parameters a config's loss trains with.

    Args:
      config: a `TrainConfig` (any object with `loss` and the `PARAM_FLAGS`
        attributes; a missing attribute counts as unset).

    Returns:
      The loss's `LossSpec.params`, each replaced by its `PARAM_FLAGS` flag
      where that flag is set for this loss.
    """
    out = dict(spec(config.loss).params)
    for flag, (loss, name) in PARAM_FLAGS.items():
        value = getattr(config, flag, None)
        if value is not None and loss == config.loss:
            out[name] = float(value)
    return out


def settings(config) -> dict:
    """The loss settings a resolved config trains with, for metrics.json and reports.

    Returns:
      {"loss", "normalize", "geometry" ("cosine" on unit vectors, or
      "euclidean" on raw embeddings), "sampler", "margin",
      "loss_lr_multiplier", "members_per_class", "samples_per_class", "params"
      (`params`)}, and "sst" (its
      options) for SST, "npairs_scale" for N-pairs.
    """
    spec(config.loss)  # an unknown loss: ValueError naming every loss
    return {"loss": config.loss, "normalize": bool(config.normalize),
            "geometry": "cosine" if config.normalize else "euclidean",
            "sampler": config.sampler, "margin": config.margin,
            "loss_lr_multiplier": config.loss_lr_multiplier,
            "members_per_class": config.members_per_class,
            "samples_per_class": config.samples_per_class, "params": params(config),
            **({"sst": config.sst_options()} if config.loss == "sst" else {}),
            **({"npairs_scale": config.npairs_logit_scale()} if config.loss == "npairs" else {})}
