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
CIRCLE = "Circle loss (Sun et al. 2020)"
SUPCON = "Supervised Contrastive Learning (Khosla et al. 2020)"
SIMCLR = "A Simple Framework for Contrastive Learning (Chen et al. 2020)"
ARCFACE = "ArcFace (Deng et al. 2019)"
COSFACE = "CosFace (Wang et al. 2018)"
SUBCENTER = "Sub-center ArcFace (Deng et al. 2020)"
PML = "pytorch-metric-learning 2.9 default"
LOSS_STUDY = "this project's loss study (docs/results.md)"
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
        margins) on the loss's default geometry (`normalize`).
      raw_params: the parameters that differ on raw embeddings
        (`--nonormalize`), replacing those of `params`.
      sources: where each value comes from, keyed by field name (and by
        parameter name for `params`).
      function: the loss's pure function in `sst_tf.losses` (called with the
        margin, if the loss has one, and `params` as keyword arguments).
      embedding_batchnorm: end the model's head with batch normalisation
        (before the L2 normalisation): it centres the embeddings, whose
        untrained values from a random backbone share one direction.
      weights: the trainable weights the loss owns ("proxies": one per class,
        "class_weights": a classifier's rows, per class or sub-center), or
        None. They are trained with their own learning rate
        (`--proxy_lr_multiplier`), kept in checkpoints, left out of the
        embedding export.
    """

    normalize: bool
    sampler: str
    margin: float | None = None
    lr_multiplier: float = 1.0
    members_per_class: int = 10
    samples_per_class: int = 4
    embedding_batchnorm: bool = False
    params: Mapping[str, float | str] = dataclasses.field(default_factory=dict)
    raw_params: Mapping[str, float | str] = dataclasses.field(default_factory=dict)
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    weights: str | None = None
    function: str = ""

    def __post_init__(self):
        for name in ("params", "raw_params", "sources"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


_TFA_TRIPLET_NORM = f"{TFA} docstring: embeddings should be L2-normalised"
_PK = "P classes x K images per batch"
_VALIDATION = f"{LOSS_STUDY}: chosen on the benchmark suite's validation splits"
_MARGIN_BN = (f"{ARCFACE}: the embedding head ends in batch normalisation; {LOSS_STUDY}: "
              "without it these losses end below the untrained small CNN on digits")
_BATCH_HARD_LR = (f"{LOSS_STUDY}: at the full rate batch-hard mining collapsed the "
                  "embedding from a random init")

LOSS_SPECS: Mapping[str, LossSpec] = MappingProxyType({
    # SST: the paper's loss on L2-normalised embeddings with a scale and a
    # softmax over each pair's imposters, local class neighbourhoods. The
    # paper's exact recipe (raw embeddings, scale 1, mean over imposters, the
    # paper's neighbourhood rule) is configs/cub.cfg.
    "sst": LossSpec(
        function="sst_loss",
        normalize=True, sampler="local", members_per_class=8,
        params={"scale": 32.0, "imposters": "softmax"},
        raw_params={"scale": 1.0, "imposters": "mean"},
        sources={"normalize": f"{_VALIDATION}; the authors' job script left normalisation "
                              "off (configs/cub.cfg)",
                 "scale": f"{LOSS_STUDY}: on unit vectors (squared distances <= 4) scale 1 "
                          "leaves softplus nearly linear and training collapsed; 32 against "
                          "16 trained to the validation plateau: +0.021 (t 3.4, 4 of 4 "
                          f"pairs); {SST_PAPER} on raw embeddings: 1",
                 "imposters": f"{_VALIDATION}; {SST_PAPER} on raw embeddings: the mean",
                 "sampler": f"{SST_PAPER}: local sampling",
                 "members_per_class": _VALIDATION}),
    # The SST paper's triplet baseline is raw with margin 0.2 (--nonormalize
    # --margin=0.2).
    "triplet": LossSpec(
        function="triplet_loss",
        normalize=True, sampler="local", margin=0.1,
        sources={"normalize": f"{MUSGRAVE}: L2-normalised embeddings; {_VALIDATION}",
                 "sampler": f"{SST_PAPER}: baselines with the same sampler as SST",
                 "margin": f"{MUSGRAVE}: triplet margin about 0.1 (the SST paper: 0.2)"}),
    # The SST paper's contrastive baseline draws local batches (--sampler=local).
    "contrastive": LossSpec(
        function="contrastive_loss",
        normalize=False, sampler="class_balanced", margin=0.5,
        sources={"normalize": f"{SST_PAPER}: baselines in the same geometry as SST; "
                              f"{_VALIDATION}",
                 "sampler": _VALIDATION,
                 "margin": f"{SST_PAPER}: contrastive baseline"}),
    "triplet_semihard": LossSpec(
        function="triplet_semihard_loss",
        normalize=True, sampler="class_balanced", margin=1.0,
        sources={"normalize": _TFA_TRIPLET_NORM,
                 "sampler": f"{FACENET}: many images of each identity per batch",
                 "margin": f"{TFA} default"}),
    "triplet_hard": LossSpec(
        function="triplet_hard_loss",
        normalize=True, sampler="class_balanced", margin=1.0, lr_multiplier=0.1,
        sources={"normalize": _TFA_TRIPLET_NORM, "sampler": f"{HERMANS}: {_PK}",
                 "margin": f"{TFA} default",
                 "lr_multiplier": f"{_BATCH_HARD_LR}; {_VALIDATION}"}),
    "triplet_hard_soft": LossSpec(
        function="triplet_hard_loss",
        normalize=True, sampler="class_balanced", margin=1.0,
        lr_multiplier=0.25, params={"soft": True},
        sources={"normalize": _TFA_TRIPLET_NORM, "sampler": f"{HERMANS}: {_PK}",
                 "margin": f"{TFA} default (unused by the soft form)",
                 "soft": f"{TFA}: soft=True, the soft margin of {HERMANS}",
                 "lr_multiplier": _BATCH_HARD_LR}),
    "lifted_struct": LossSpec(
        function="lifted_struct_loss",
        normalize=False, sampler="class_balanced", margin=1.0,
        sources={"normalize": f"{TFA} docstring: embeddings should NOT be L2-normalised",
                 "sampler": f"{LIFTED}: batches built from positive pairs",
                 "margin": f"{TFA} default"}),
    "npairs": LossSpec(
        function="batch_npairs_loss",
        normalize=True, sampler="class_balanced",
        params={"scale": 16.0, "l2_penalty": 0.002, "pairs": "all"}, raw_params={"scale": 1.0},
        sources={"l2_penalty": f"{NPAIRS}; 0.002 as in TensorFlow's original npairs_loss "
                               "(constant, so without effect, on unit vectors)",
                 "pairs": f"{TFA}'s form over the batch (every row an anchor); per_class is "
                          f"{NPAIRS} as pytorch-metric-learning's NPairsLoss",
                 "scale": f"{_VALIDATION} (on unit vectors scale 1 leaves the softmax "
                          f"over cosines near uniform); {NPAIRS} on raw embeddings: 1",
                 "normalize": f"{LOSS_STUDY}: raw embeddings, as in {NPAIRS}, diverged even "
                              "with the penalty; unit vectors did not",
                 "sampler": f"{NPAIRS}: pairs from N different classes per batch"}),
    "pairwise_contrastive": LossSpec(
        function="batch_pairwise_contrastive_loss",
        normalize=False, sampler="class_balanced", margin=1.0, samples_per_class=5,
        sources={"normalize": f"{HADSELL}: unnormalised embeddings",
                 "sampler": "class-balanced batches so that every batch holds positive pairs",
                 "margin": f"{TFA} default",
                 "samples_per_class": _VALIDATION}),
    "multi_similarity": LossSpec(
        function="multi_similarity_loss",
        normalize=True, sampler="class_balanced",
        params={"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1},
        sources={"normalize": f"{MS}: cosine similarity of L2-normalised embeddings",
                 "sampler": f"{MS}: {_PK}",
                 "alpha": MS, "beta": MS, "base": f"{MS} (lambda)",
                 "epsilon": MS}),
    "proxy_anchor": LossSpec(
        function="proxy_anchor_loss",
        normalize=True, sampler="random", lr_multiplier=1.0, weights="proxies",
        params={"alpha": 32.0, "delta": 0.1},
        sources={"normalize": f"{PROXY}: cosine similarity to proxies, L2-normalised "
                              "embeddings",
                 "sampler": f"{PROXY}: random batches; {_VALIDATION}",
                 "alpha": PROXY, "delta": f"{PROXY} (margin)",
                 "proxy_lr_multiplier": f"{PROXY}: proxies learn 100x faster",
                 "lr_multiplier": f"{LOSS_STUDY}: the full rate against a quarter, trained "
                                  "to the validation plateau: +0.008 (t 2.4, 4 of 4 pairs; "
                                  "a quarter wins after 30 seconds)"}),
    "circle": LossSpec(
        function="circle_loss",
        normalize=True, sampler="class_balanced", params={"m": 0.4, "gamma": 80.0},
        sources={"normalize": f"{CIRCLE}: cosine similarities",
                 "sampler": f"{CIRCLE}: pairs within the batch; {_PK}",
                 "m": f"{CIRCLE}, fine-grained retrieval; {PML}",
                 "gamma": f"{CIRCLE}, fine-grained retrieval; {PML}"}),
    "supcon": LossSpec(
        function="supcon_loss",
        normalize=True, sampler="class_balanced", params={"temperature": 0.1},
        sources={"normalize": f"{SUPCON}: unit-sphere embeddings",
                 "sampler": f"{SUPCON}: several images of each class per batch; {_PK}",
                 "temperature": f"{SUPCON}; {PML}"}),
    "ntxent": LossSpec(
        function="ntxent_loss",
        normalize=True, sampler="class_balanced", params={"temperature": 0.07},
        sources={"normalize": f"{SIMCLR}: cosine similarities",
                 "sampler": f"positive pairs from the labels; {_PK}",
                 "temperature": PML}),
    # Classification-margin losses: a weight row per class (K per class with
    # sub-centers); the margin in degrees (ArcFace) or as a cosine (CosFace).
    "arcface": LossSpec(
        function="arcface_loss",
        normalize=True, sampler="random", margin=28.6, params={"scale": 30.0},
        weights="class_weights", embedding_batchnorm=True,
        sources={"normalize": f"{ARCFACE}: cosines to normalised class weights",
                 "sampler": f"{ARCFACE}: a classifier's random batches",
                 "margin": f"{ARCFACE}: 0.5 rad; {PML}",
                 "scale": f"{_VALIDATION}: 30 against the 64 of {ARCFACE} and {PML}, "
                          "+0.398 (t 4.6, 8 of 8 pairs)",
                 "embedding_batchnorm": _MARGIN_BN,
                 "proxy_lr_multiplier": f"as Proxy-Anchor's proxies ({PROXY})"}),
    "cosface": LossSpec(
        function="cosface_loss",
        normalize=True, sampler="random", margin=0.35, params={"scale": 30.0},
        weights="class_weights", embedding_batchnorm=True,
        sources={"normalize": f"{COSFACE}: cosines to normalised class weights",
                 "sampler": f"{COSFACE}: a classifier's random batches",
                 "margin": f"{COSFACE}; {PML}",
                 "scale": f"{_VALIDATION}: 30 against the 64 of {COSFACE} and {PML}, "
                          "+0.069 (t 3.9, 8 of 8 pairs)",
                 "embedding_batchnorm": _MARGIN_BN,
                 "proxy_lr_multiplier": f"as Proxy-Anchor's proxies ({PROXY})"}),
    "subcenter_arcface": LossSpec(
        function="subcenter_arcface_loss",
        normalize=True, sampler="random", margin=28.6, lr_multiplier=0.25,
        params={"scale": 64.0, "sub_centers": 3.0}, weights="class_weights",
        embedding_batchnorm=True,
        sources={"normalize": f"{SUBCENTER}: cosines to normalised sub-centers",
                 "sampler": f"{SUBCENTER}: a classifier's random batches",
                 "margin": f"{ARCFACE}: 0.5 rad; {PML}", "scale": f"{ARCFACE}; {PML}",
                 "sub_centers": f"{SUBCENTER}: K = 3; {PML}",
                 "embedding_batchnorm": _MARGIN_BN,
                 "lr_multiplier": f"{_VALIDATION}: a quarter of the rate, +0.502 (t 8.4, 8 of "
                                  "8 pairs; at the full rate every validation run ended below "
                                  "the untrained model)",
                 "proxy_lr_multiplier": f"as Proxy-Anchor's proxies ({PROXY})"}),
})

# Proxy-Anchor's proxies learn this many times faster than the model (Kim et al.).
PROXY_LR_MULTIPLIER = 100.0

# The --loss choices, in the order above (the paper's three, tensorflow-addons'
# batch forms, modern baselines, softmax-contrastive and classification-margin
# losses).
LOSSES = tuple(LOSS_SPECS)
# Losses that own trainable weights (`LossSpec.weights`): a layer holds them.
WEIGHTED_LOSSES = tuple(name for name, s in LOSS_SPECS.items() if s.weights)
# The classification-margin losses (`sst_tf.losses.MarginSoftmax`).
MARGIN_LOSSES = tuple(name for name, s in LOSS_SPECS.items() if s.weights == "class_weights")
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
# flag -> (the losses it applies to, parameter).
PARAM_FLAGS: Mapping[str, tuple[tuple[str, ...], str]] = MappingProxyType({
    "sst_scale": (("sst",), "scale"),
    "sst_imposters": (("sst",), "imposters"),
    "npairs_scale": (("npairs",), "scale"),
    "npairs_pairs": (("npairs",), "pairs"),
    "ms_alpha": (("multi_similarity",), "alpha"),
    "ms_beta": (("multi_similarity",), "beta"),
    "ms_base": (("multi_similarity",), "base"),
    "proxy_alpha": (("proxy_anchor",), "alpha"),
    "proxy_delta": (("proxy_anchor",), "delta"),
    "circle_m": (("circle",), "m"),
    "circle_gamma": (("circle",), "gamma"),
    "temperature": (("supcon", "ntxent"), "temperature"),
    "margin_scale": (MARGIN_LOSSES, "scale"),
    "sub_centers": (("subcenter_arcface",), "sub_centers"),
})

# Fields of a run's configuration that a loss can default -> LossSpec fields.
DEFAULTED_FIELDS = {"normalize": "normalize", "sampler": "sampler", "margin": "margin",
                    "loss_lr_multiplier": "lr_multiplier",
                    "members_per_class": "members_per_class",
                    "samples_per_class": "samples_per_class",
                    "embedding_batchnorm": "embedding_batchnorm"}


def spec(loss: str) -> LossSpec:
    """The `LossSpec` of a loss name.

    Raises:
      ValueError: unknown loss name.
    """
    if loss not in LOSS_SPECS:
        raise ValueError(f"--loss must be one of {'|'.join(LOSS_SPECS)}, got {loss!r}.")
    return LOSS_SPECS[loss]


def defaults_text(field: str, param: str | None = None) -> str:
    """A `LossSpec` field's (or parameter's) default per loss, for flag help texts.

    Args:
      field: a `LossSpec` field (`margin`, `lr_multiplier`, ...).
      param: with field "params": the parameter.

    Returns:
      e.g. "0.1 for triplet, 0.5 for contrastive, 1 otherwise": the most
      common value last as "otherwise" (losses without the value left out).
    """
    values = {}
    for name, s in LOSS_SPECS.items():
        value = s.params.get(param) if field == "params" else getattr(s, field)
        if value is not None:
            values.setdefault(value, []).append(name)
    if not values:
        return "none"
    common = max(values, key=lambda v: len(values[v]))
    parts = [f"{v:g} for {' and '.join(names)}" if isinstance(v, float) else
             f"{v} for {' and '.join(names)}" for v, names in values.items() if v != common]
    tail = f"{common:g}" if isinstance(common, float) else f"{common}"
    return ", ".join([*parts, f"{tail} otherwise"]) if parts else tail


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


def loss_params(loss: str, normalize: bool | None = None,
                params: Mapping[str, float | str] | None = None) -> dict:
    """The fixed parameters a loss computes with: every door (trainer, Keras loss, fit).

    Args:
      loss: a `--loss` name.
      normalize: whether the embeddings are L2-normalised; None: the loss's
        default geometry (`LossSpec.normalize`). On raw embeddings
        `LossSpec.raw_params` replace some of `LossSpec.params`.
      params: values replacing some of them (e.g. `{"scale": 32.0}`).

    Returns:
      {parameter: value} for every parameter of the loss.

    Raises:
      ValueError: unknown loss, or a key of `params` the loss does not have.
    """
    s = spec(loss)
    unknown = sorted(set(params or {}) - set(s.params))
    if unknown:
        raise ValueError(f"--loss={loss} has no parameter {', '.join(unknown)}; its "
                         f"parameters: {', '.join(s.params) or 'none'}.")
    normalize = s.normalize if normalize is None else bool(normalize)
    return {**s.params, **({} if normalize else s.raw_params), **(params or {})}


def params(config) -> dict:
    """The fixed parameters a config's loss trains with.

    Args:
      config: a `TrainConfig` (any object with `loss`, `normalize` and the
        `PARAM_FLAGS` attributes; a missing attribute counts as unset).

    Returns:
      `loss_params` of the config's loss and geometry, each replaced by its
      `PARAM_FLAGS` flag where that flag is set for this loss.
    """
    given = {}
    for flag, (flag_losses, name) in PARAM_FLAGS.items():
        value = getattr(config, flag, None)
        if value is not None and config.loss in flag_losses:
            given[name] = value if isinstance(value, str) else float(value)
    return loss_params(config.loss, getattr(config, "normalize", None), given)


def settings(config) -> dict:
    """The loss settings a resolved config trains with, for metrics.json and reports.

    Returns:
      {"loss", "normalize", "geometry" ("cosine" on unit vectors, or
      "euclidean" on raw embeddings), "sampler", "margin",
      "loss_lr_multiplier", "members_per_class", "samples_per_class", "params"
      (`params`)}.
    """
    spec(config.loss)  # an unknown loss: ValueError naming every loss
    return {"loss": config.loss, "normalize": bool(config.normalize),
            "geometry": "cosine" if config.normalize else "euclidean",
            "sampler": config.sampler, "margin": config.margin,
            "loss_lr_multiplier": config.loss_lr_multiplier,
            "members_per_class": config.members_per_class,
            "samples_per_class": config.samples_per_class, "params": params(config)}
