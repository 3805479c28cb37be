"""The reference set of a loss: the rows an anchor's positives and negatives come from.

By default a batch is its own reference set. The cross-batch memory
(`sst_tf.negatives.with_memory`) gives the losses that have a reference form
(`sst_tf.loss_registry.REFERENCE_LOSSES`) other rows: `ref_embeddings`,
`ref_labels`, `ref_mask` and, where the batch's own rows sit among them,
`ref_offset`. `reference_arguments` selects those a loss function takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import tensorflow as tf

from sst_tf.losses.common import _check_inputs

REFERENCE_ARGUMENTS = ("ref_embeddings", "ref_labels", "ref_mask", "ref_offset")


def reference_set(x, labels, mask, ref_embeddings, ref_labels, ref_mask):
    """The reference set (candidates) of a loss: (r or None, labels, mask).

    Without `ref_embeddings` the batch is its own reference set (r None, so the
    callers keep their batch-only computation bit for bit).
    """
    if ref_embeddings is None:
        if ref_labels is not None or ref_mask is not None:
            raise ValueError("ref_labels / ref_mask need ref_embeddings")
        return None, labels, mask
    if ref_labels is None:
        raise ValueError("ref_embeddings needs ref_labels")
    r, ref_labels, ref_mask, _ = _check_inputs(ref_embeddings, ref_labels, ref_mask,
                                               embeddings_name="ref_embeddings")
    if r.shape[1] is not None and x.shape[1] is not None and r.shape[1] != x.shape[1]:
        raise ValueError(
            f"ref_embeddings have dimension {r.shape[1]} but embeddings have {x.shape[1]}")
    return r, tf.cast(ref_labels, labels.dtype), ref_mask


def reference_arguments(fn: Callable, ref_embeddings, ref_labels, ref_mask,
                        ref_offset=None) -> dict:
    """The reference-set keyword arguments `fn` takes (a loss without `ref_offset` skips it).

    Raises:
      ValueError: `fn` takes no reference set.
    """
    accepted = inspect.signature(fn).parameters
    if "ref_embeddings" not in accepted:
        raise ValueError(f"{fn.__name__} has no reference-set form")
    given = dict(zip(REFERENCE_ARGUMENTS, (ref_embeddings, ref_labels, ref_mask, ref_offset),
                     strict=True))
    return {k: v for k, v in given.items() if k in accepted}
