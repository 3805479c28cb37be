"""Every loss of the project: pure functions of tensors, Keras forms, losses by name.

`from sst_tf import losses`; every loss is `losses.NAME`. In the vocabulary
of pytorch-metric-learning, one module per job:

  * `distances`: squared Euclidean, Euclidean, cosine distance matrices.
  * `reductions`: masked means, log-sum-exps, maxima and minima.
  * `reference`: the reference set a loss takes its candidates from (the
    batch, or a cross-batch memory).
  * `common`: input checks, the compute dtype, per-replica scaling.
  * `paper`: the paper's losses: SST, triplet, contrastive.
  * `pairs`: pair and triplet losses: tensorflow-addons' losses (semi-hard
    and batch-hard triplets, lifted structure, N-pairs, pairwise
    contrastive) with their Keras `Tfa*` classes, and Multi-Similarity.
  * `proxies`: proxy and classification-margin losses: Proxy-Anchor,
    ArcFace, CosFace, Sub-center ArcFace, and the layers that own their
    weights (`ProxyAnchor`, `MarginSoftmax`).
  * `softmax_contrastive`: SupCon, NT-Xent / InfoNCE, Circle loss.
  * here: `make_loss` / `make_reference_loss`: a loss by its `--loss` name.
    The registry (`sst_tf.loss_registry`) names each loss's function
    (`LossSpec.function`) and holds its defaults.

Every loss function takes `(embeddings, labels, ..., sample_mask=None)` (the
raw tensorflow-addons forms `npairs_loss` and `pairwise_contrastive_loss`
take a similarity matrix or pair distances, and no mask); only the Keras
`Loss` classes follow Keras' `(y_true, y_pred)`. A padding row (`sample_mask`
False) takes no part; a batch without anything to compare gives 0.0 with
zero gradients; half-precision inputs are computed in float32.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from sst_tf import loss_registry
from sst_tf.config import SST_IMPOSTERS  # noqa: F401 - re-exported
from sst_tf.losses import distances, reductions, reference  # noqa: F401 - submodules
from sst_tf.losses.common import class_rows, per_replica  # noqa: F401 - re-exported
from sst_tf.losses.pairs import (  # noqa: F401 - re-exported: sst_tf.losses.X
    TfaContrastiveLoss,
    TfaLiftedStructLoss,
    TfaNpairsLoss,
    TfaTripletHardLoss,
    TfaTripletSemiHardLoss,
    batch_npairs_loss,
    batch_pairwise_contrastive_loss,
    lifted_struct_loss,
    multi_similarity_loss,
    multi_similarity_parts,
    npairs_loss,
    pairwise_contrastive_loss,
    triplet_hard_loss,
    triplet_semihard_loss,
)
from sst_tf.losses.paper import (  # noqa: F401 - re-exported
    contrastive_loss,
    contrastive_parts,
    sst_loss,
    triplet_loss,
)
from sst_tf.losses.proxies import (  # noqa: F401 - re-exported
    MarginSoftmax,
    ProxyAnchor,
    arcface_loss,
    cosface_loss,
    cosine_logits,
    proxy_anchor_loss,
    subcenter_arcface_loss,
)
from sst_tf.losses.softmax_contrastive import (  # noqa: F401 - re-exported
    circle_loss,
    ntxent_loss,
    supcon_loss,
)


def pure_function(name: str) -> Callable:
    """The pure function of a `--loss` name (`LossSpec.function`), e.g. `sst_loss`."""
    return globals()[loss_registry.spec(name).function]


def _fixed_arguments(name: str, margin: float | None,
                     params: Mapping[str, float | str] | None, normalize: bool | None) -> dict:
    """The keyword arguments a loss's function is called with: its margin and parameters."""
    spec = loss_registry.spec(name)  # an unknown name: ValueError naming every loss
    fixed = dict(loss_registry.loss_params(name, normalize, params))
    if spec.margin is not None:
        fixed["margin"] = spec.margin if margin is None else margin
    return fixed


def make_loss(name: str, margin: float | None = None, loss_layer=None,
              params: Mapping[str, float | str] | None = None,
              normalize: bool | None = None, *, proxy_anchor=None) -> Callable:
    """Returns fn(embeddings, labels, targets, mask) -> scalar for a `--loss` name.

    The registry names the loss's function and holds every default: the
    margin (`LossSpec.margin`) and the fixed parameters of the loss's
    geometry (`loss_registry.loss_params`); `params` replaces some of them
    (e.g. SST's `{"scale": 32.0}` or Multi-Similarity's `{"alpha": 1.0}`; an
    unknown key is a ValueError).

    Args:
      name: the loss, as the trainer's `--loss`.
      margin: the margin; None: the loss's default.
      loss_layer: the layer that owns the weights of a loss that has some
        (`loss_registry.WEIGHTED_LOSSES`): `ProxyAnchor` for proxy_anchor,
        `MarginSoftmax` for arcface, cosface and subcenter_arcface, made with
        the training split's class ids (the layer holds its own margin and
        parameters).
      params: fixed parameters replacing the registry's.
      normalize: whether the embeddings are L2-normalised; None: the loss's
        default geometry (the parameters of raw embeddings differ for SST
        and N-pairs, `LossSpec.raw_params`).
      proxy_anchor: the former name of `loss_layer`.
    """
    spec = loss_registry.spec(name)
    fixed = _fixed_arguments(name, margin, params, normalize)
    layer = loss_layer if loss_layer is not None else proxy_anchor
    if spec.weights:
        kind = ProxyAnchor if name == "proxy_anchor" else MarginSoftmax
        if not isinstance(layer, kind) or getattr(layer, "loss", name) != name:
            raise ValueError(f"--loss={name} needs its {kind.__name__} layer (loss_layer=), "
                             f"which owns its {spec.weights.replace('_', ' ')}; got {layer!r}.")
        if name == "proxy_anchor":
            return lambda e, y, t, k: layer(e, layer.class_index(y), k)
        return lambda e, y, t, k: layer(e, y, k)
    fn = pure_function(name)
    if name in loss_registry.TARGET_LOSSES:
        return lambda e, y, t, k: fn(e, y, t, sample_mask=k, **fixed)
    return lambda e, y, t, k: fn(e, y, sample_mask=k, **fixed)


def make_reference_loss(name: str, margin: float | None = None,
                        params: Mapping[str, float | str] | None = None,
                        normalize: bool | None = None) -> Callable:
    """The reference-set form of a `--loss` name (see `loss_registry.REFERENCE_LOSSES`).

    Returns fn(embeddings, labels, targets, mask, ref_embeddings, ref_labels,
    ref_mask, ref_offset) -> scalar: the batch's rows are the anchors, the
    reference set's rows their candidates (positives and negatives; for SST
    and triplet the imposters, the targets staying in the batch). Used by the
    cross-batch memory (`sst_tf.negatives.with_memory`). A loss's terms on
    the embeddings alone (N-pairs' L2 penalty) are left to the batch loss.
    Arguments as `make_loss`.

    Raises:
      ValueError: the loss has no reference form (lifted_struct,
        proxy_anchor, triplet_semihard, ...), naming those that have one.
    """
    loss_registry.spec(name)
    if name not in loss_registry.REFERENCE_LOSSES:
        raise ValueError(
            f"--loss={name} has no form with a reference set (a cross-batch memory); the "
            f"losses that have one: {', '.join(loss_registry.REFERENCE_LOSSES)}.")
    fixed = _fixed_arguments(name, margin, params, normalize)
    fn = pure_function(name)
    fixed = {k: v for k, v in fixed.items() if k in inspect.signature(fn).parameters}
    targets = name in loss_registry.TARGET_LOSSES

    def loss(e, y, t, m, re, ry, rm, offset):
        ref = reference.reference_arguments(fn, re, ry, rm, offset)
        if targets:
            return fn(e, y, t, sample_mask=m, **fixed, **ref)
        return fn(e, y, sample_mask=m, **fixed, **ref)

    return loss


# Names of an earlier release -> the tensorflow-addons-compatible classes.
_RENAMED = {"TripletSemiHardLoss": "TfaTripletSemiHardLoss",
            "TripletHardLoss": "TfaTripletHardLoss", "LiftedStructLoss": "TfaLiftedStructLoss",
            "NpairsLoss": "TfaNpairsLoss", "PairwiseContrastiveLoss": "TfaContrastiveLoss",
            "ContrastiveLoss": "TfaContrastiveLoss"}


def __getattr__(name: str):
    """Old class names fail with the new one (they were tensorflow-addons' classes)."""
    if name in _RENAMED:
        raise AttributeError(
            f"sst_tf.losses.{name} is now sst_tf.losses.{_RENAMED[name]} (tensorflow-addons' "
            "class with its defaults); the project's losses by name: "
            "sst_tf.fit.MetricLoss(NAME) or sst_tf.losses.make_loss(NAME).")
    raise AttributeError(f"module 'sst_tf.losses' has no attribute {name!r}")
