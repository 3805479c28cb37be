"""The per-replica training step: forward, loss, gradients, one decision, apply.

`TrainStep` owns what one step needs and nothing about epochs: the model and
the loss function it is given, the optimizers (backbone, head, and the loss's
own weights such as Proxy-Anchor's proxies, each with its learning rate), the
coupled L2 weight decay and, under float16, one dynamic loss scale.

Called in replica context (inside `strategy.run`, or directly on one device):

1. forward and backward of the replica's batch (`compute_gradients`; the loss
   is divided by the replicas in sync, and multiplied by the float16 loss
   scale; XLA-compiled with `jit_compile`, which never covers the apply);
2. the gradients are summed over all replicas once;
3. one finiteness decision: the loss of every replica and every summed
   gradient of every variable group finite, the same on all replicas;
4. every optimizer applies its gradients, or none does (under float16 the
   scale is halved on a skipped step and doubled after a run of good ones).

Learning-rate groups: one Adam optimizer for the backbone (lr) and one for the
head (lr * head_lr_multiplier). Two optimizers rather than gradient scaling,
because Adam is invariant to gradient scale (a 10x gradient would not give a
10x step). Weight decay is coupled L2 (wd * w added to the gradient), as
PyTorch's `Adam(weight_decay=...)` of the original did; `decoupled_weight_decay`
gives AdamW instead (both `sst_tf.optim`, shared with `sst_tf.fit`).

Build it inside `strategy.scope()`: the optimizers are built there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import keras
import tensorflow as tf

from sst_tf import optim
from sst_tf.config import PRECISIONS

__all__ = ["DynamicLossScale", "NonFiniteError", "TrainStep", "all_finite", "apply_if",
           "DtypePolicy", "precision_policy"]


def precision_policy(mixed_precision: str) -> str:
    """Keras dtype policy name of a --mixed_precision value (one of `PRECISIONS`)."""
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"--mixed_precision must be one of {'|'.join(PRECISIONS)}, "
                         f"got {mixed_precision!r}.")
    return "float32" if mixed_precision == "none" else f"mixed_{mixed_precision}"


class DtypePolicy:
    """Context manager: a global Keras dtype policy while layers are built."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.old = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.old)
        return False


class TrainStep:
    """One replica's training step (see module docstring)."""

    def __init__(
        self,
        model: keras.Model,
        loss_fn: Callable,
        backbone_vars: list,
        head_vars: list,
        *,
        lr: float,
        head_lr_multiplier: float = 1.0,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        num_replicas: int = 1,
        mixed_precision: str = "none",
        jit_compile: bool = False,
        loss_vars: list | None = None,
        loss_lr_multiplier: float = 1.0,
        memory=None,
    ):
        """Builds the optimizers (call inside `strategy.scope()`).

        Args:
          model: the embedding model, images -> [B, d].
          loss_fn: fn(embeddings, labels, targets, mask) -> scalar loss.
          backbone_vars: the backbone's trainable variables.
          head_vars: the head's trainable variables.
          lr: the backbone's learning rate.
          head_lr_multiplier: the head's learning rate is `lr` times this.
          weight_decay: L2 weight decay of backbone and head.
          decoupled_weight_decay: AdamW's decoupled decay instead of coupled L2
            added to the summed gradients.
          num_replicas: replicas in sync (each replica's loss is divided by it).
          mixed_precision: "none", "bfloat16" or "float16" (dynamic loss scale).
          jit_compile: XLA-compile forward + backward.
          loss_vars: the loss's own trainable variables (Proxy-Anchor), trained
            by their own optimizer without weight decay.
          loss_lr_multiplier: their learning rate is `lr` times this.
          memory: a `sst_tf.negatives.CrossBatchMemory` that `loss_fn` reads;
            the step enqueues its batch after the update.
        """
        self.model = model
        self.loss_fn = loss_fn
        self.backbone_vars = list(backbone_vars)
        self.head_vars = list(head_vars)
        self.loss_vars = list(loss_vars or [])
        self.num_replicas = int(num_replicas)
        self.weight_decay = float(weight_decay)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        # float16: one dynamic loss scale for every variable group and replica.
        self.loss_scale = DynamicLossScale() if mixed_precision == "float16" else None
        self.backbone_optimizer = self.make_optimizer(lr)
        self.head_optimizer = self.make_optimizer(lr * head_lr_multiplier)
        self.backbone_optimizer.build(self.backbone_vars)
        self.head_optimizer.build(self.head_vars)
        self.memory = memory
        self.loss_optimizer = None
        if self.loss_vars:  # the loss's own weights: no weight decay
            self.loss_optimizer = optim.make_optimizer(lr * loss_lr_multiplier,
                                                       summed_gradients=True)
            self.loss_optimizer.build(self.loss_vars)
        # The forward + backward that __call__ runs: XLA for it only (never
        # apply_gradients; Keras 3 turns XLA off under tf.distribute otherwise).
        # Same signature and results as `compute_gradients`.
        self.grad_fn = (tf.function(self.compute_gradients, jit_compile=True)
                        if jit_compile else self.compute_gradients)

    def make_optimizer(self, lr: float) -> keras.optimizers.Optimizer:
        """Adam with coupled L2 (or AdamW) that takes gradients already summed over replicas."""
        return optim.make_optimizer(lr, self.weight_decay, self.decoupled_weight_decay,
                                    summed_gradients=True)

    @property
    def optimizers(self) -> list[keras.optimizers.Optimizer]:
        """Every optimizer of the step (backbone, head[, loss])."""
        return [self.backbone_optimizer, self.head_optimizer,
                *([self.loss_optimizer] if self.loss_optimizer is not None else [])]

    def checkpoint_items(self) -> dict:
        """The step's state for a `tf.train.Checkpoint` (optimizers, loss scale)."""
        items = {"backbone_optimizer": self.backbone_optimizer,
                 "head_optimizer": self.head_optimizer}
        if self.loss_optimizer is not None:
            items["loss_optimizer"] = self.loss_optimizer
        if self.loss_scale is not None:
            items["loss_scale"] = self.loss_scale
        if self.memory is not None:
            items["cross_batch_memory"] = self.memory
        return items

    def compute_gradients(self, images, labels, targets, mask):
        """Forward + backward of one replica's batch (XLA-compiled with jit_compile).

        Returns:
          (loss, gradients of loss / num_replicas [times the float16 loss
          scale] w.r.t. backbone + head [+ loss] variables, embeddings).
        """
        variables = self.backbone_vars + self.head_vars + self.loss_vars
        with tf.GradientTape() as tape:
            embeddings = self.model(images, training=True)
            loss = self.loss_fn(embeddings, labels, targets, mask)
            scaled = loss / self.num_replicas
            if self.loss_scale is not None:
                scaled = scaled * tf.cast(self.loss_scale.scale, scaled.dtype)
        return loss, tape.gradient(scaled, variables), embeddings

    def __call__(self, images, labels, targets, mask):
        """Runs the step on this replica's batch.

        The gradients are summed over the replicas first; the step is applied
        only if the loss of every replica and every summed gradient (backbone,
        head and the loss's own weights) are finite, and then to every
        optimizer, else to none: one decision per step, the same on all
        replicas. Under float16 the gradients are unscaled after the sum and
        the loss scale is updated from that same decision (halved on a skipped
        step, see `DynamicLossScale`).

        Returns:
          (the loss, or NaN when the step was skipped; this replica's
          embeddings [B, d]).
        """
        loss, grads, embeddings = self.grad_fn(images, labels, targets, mask)
        grads = _sum_over_replicas(grads)
        finite = all_finite(loss, grads)
        if self.loss_scale is not None:
            scale = tf.identity(self.loss_scale.scale)  # the scale of this step's gradients
            grads = [None if g is None else g / scale for g in grads]
            self.loss_scale.update(finite)
        apply_if(finite, self.apply_gradients, grads)
        if self.memory is not None:
            self.memory.update(embeddings, labels, mask, finite)
        return tf.where(finite, loss, tf.constant(math.nan, loss.dtype)), embeddings

    def apply_gradients(self, grads) -> None:
        """Every optimizer (each applies the run's weight decay, `sst_tf.optim`).

        Args:
          grads: gradients of backbone + head [+ loss] variables, already
            summed over replicas and unscaled (the optimizers do not sum again).
        """
        nl = len(self.loss_vars)
        if nl:  # the loss's own weights (Proxy-Anchor): own optimizer, no weight decay
            self.loss_optimizer.apply_gradients(zip(grads[-nl:], self.loss_vars, strict=True))
            grads = grads[:-nl]
        nb = len(self.backbone_vars)
        if nb:
            self.backbone_optimizer.apply_gradients(
                zip(grads[:nb], self.backbone_vars, strict=True))
        self.head_optimizer.apply_gradients(zip(grads[nb:], self.head_vars, strict=True))

    @property
    def learning_rates(self) -> tuple[float, float]:
        """Current (backbone, head) learning rates."""
        return (
            float(keras.ops.convert_to_numpy(self.backbone_optimizer.learning_rate)),
            float(keras.ops.convert_to_numpy(self.head_optimizer.learning_rate)),
        )

    def scale_learning_rates(self, factor: float) -> None:
        """Multiplies every optimizer's learning rate by `factor`."""
        for opt in self.optimizers:
            opt.learning_rate = float(keras.ops.convert_to_numpy(opt.learning_rate)) * factor


class DynamicLossScale(tf.Module):
    """The dynamic loss scale of float16 training, shared by every optimizer.

    The rule of Keras' `LossScaleOptimizer`: the loss is multiplied by `scale`
    before the backward pass; a step with a non-finite gradient halves it, and
    `growth_steps` finite steps in a row double it. The trainer takes the
    finiteness decision once per step, from the gradients summed over all
    replicas, for all variable groups together. Checkpointed with the run.
    """

    def __init__(self, initial_scale: float = 2.0**15, growth_steps: int = 2000):
        super().__init__(name="loss_scale")
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # every replica holds the same value
        self.scale = tf.Variable(initial_scale, dtype=tf.float32, trainable=False,
                                 aggregation=first, name="scale")
        self.finite_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                                        name="finite_steps")
        self.growth_steps = growth_steps

    def update(self, finite) -> None:
        """Halves the scale after a skipped step; doubles it after `growth_steps` good ones."""
        grow = tf.logical_and(finite, self.finite_steps >= self.growth_steps - 1)
        scale = tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale), self.scale * 0.5)
        steps = tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                         self.finite_steps + 1, tf.zeros_like(self.finite_steps))
        self.scale.assign(scale)
        self.finite_steps.assign(steps)


def _sum_over_replicas(grads: list) -> list:
    """Sums per-replica gradients over all replicas (identity on one replica)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return list(grads)
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    out = list(grads)
    for i, g in zip(present, summed, strict=True):
        out[i] = g
    return out


# -- non-finite steps ------------------------------------------------------------


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def all_finite(loss, grads: Iterable | None = None):
    """Scalar bool tensor: the loss and every gradient are finite.

    Under a distribution strategy (in replica context) the flag is reduced over
    all replicas (a sum of non-finite flags), so every replica takes the same decision.
    """
    checks = [tf.reduce_all(tf.math.is_finite(loss))]
    for g in grads or ():
        if g is not None:
            checks.append(tf.reduce_all(tf.math.is_finite(g)))
    finite = tf.reduce_all(tf.stack(checks))
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        bad = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.int32))
        finite = tf.equal(bad, 0)
    return finite


def apply_if(finite, apply_fn: Callable, *args) -> None:
    """Runs `apply_fn(*args)` (e.g. optimizer updates) only when `finite` is true.

    Called in replica context. Optimizers synchronise through `merge_call`,
    which a strategy does not allow inside a replica-context `tf.cond`; as
    Keras' loss-scale optimizer does, the condition is taken in cross-replica
    context and the updates run per replica inside it. `finite` must already be
    identical on all replicas (see `all_finite`).
    """
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: _call(apply_fn, args), lambda: None)
        return

    def cross_replica(distribution, finite, *args):
        flag = distribution.experimental_local_results(finite)[0]
        tf.cond(
            flag,
            lambda: _call(distribution.extended.call_for_each_replica, (apply_fn, args)),
            lambda: None,
        )

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, *args))


def _call(fn, args) -> None:
    fn(*args)
