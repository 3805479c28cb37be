"""The optimisation rules the trainer and `model.fit` share.

* `loss_learning_rate`: `--lr` times the loss's learning-rate factor
  (`--loss_lr_multiplier`, default from `sst_tf.loss_registry`).
* `make_optimizer`: Adam with coupled L2 weight decay (`weight_decay x w`
  added to each gradient after the gradients of all replicas are summed, as
  PyTorch's `Adam(weight_decay=...)` of the original), or AdamW's decoupled
  decay. The trainer (`sst_tf.step`) and `sst_tf.fit.optimizer_for_loss` both
  build their optimizers here, so the two paths decay the weights alike.
"""

from __future__ import annotations

import keras

from sst_tf import loss_registry

__all__ = ["CoupledAdam", "loss_learning_rate", "make_optimizer", "optimizer_for_loss"]


def loss_learning_rate(lr: float, loss: str, loss_lr_multiplier: float | None = None) -> float:
    """The learning rate a loss trains with: `lr` times its factor.

    Args:
      lr: the base rate (`--lr`).
      loss: a `--loss` name.
      loss_lr_multiplier: the factor; None: the loss's default
        (`LossSpec.lr_multiplier`).
    """
    if loss_lr_multiplier is None:
        loss_lr_multiplier = loss_registry.spec(loss).lr_multiplier
    return float(lr) * float(loss_lr_multiplier)


class _CoupledL2:
    """Optimizer mixin: coupled L2 weight decay in the update of each variable.

    `update_step` runs once per variable after the replicas' gradients are
    summed (by Keras, or by the trainer before it), so the decay is the same
    on one device and under a strategy.
    """

    def __init__(self, *args, l2: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if l2 < 0:
            raise ValueError(f"weight_decay must be >= 0, got {l2}.")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):  # noqa: D102
        if self.l2:
            gradient = keras.ops.add(
                keras.ops.cast(gradient, variable.dtype),
                keras.ops.multiply(keras.ops.cast(self.l2, variable.dtype), variable))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:  # noqa: D102
        return {**super().get_config(), "l2": self.l2}


@keras.saving.register_keras_serializable(package="sst_tf")
class CoupledAdam(_CoupledL2, keras.optimizers.Adam):
    """Adam with coupled L2 weight decay (`l2 x w` added to the gradient)."""


class _SummedGradients:
    """Optimizer mixin: gradients arrive already summed over replicas.

    Keras optimizers all-reduce the gradients themselves; the trainer sums them
    once, before its finiteness check (`sst_tf.step`), so its optimizers must
    not sum again.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


class _SummedCoupledAdam(_SummedGradients, CoupledAdam):
    pass


class _SummedAdamW(_SummedGradients, keras.optimizers.AdamW):
    pass


def make_optimizer(lr: float, weight_decay: float = 0.0, decoupled: bool = False,
                   summed_gradients: bool = False) -> keras.optimizers.Optimizer:
    """The project's optimizer: Adam with coupled L2 decay, or AdamW.

    Args:
      lr: learning rate.
      weight_decay: the decay factor (0: none).
      decoupled: AdamW's decoupled decay instead of coupled L2.
      summed_gradients: the caller sums the replicas' gradients itself (the
        trainer); `model.fit` leaves it to Keras (False).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if decoupled:
        cls = _SummedAdamW if summed_gradients else keras.optimizers.AdamW
        return cls(learning_rate=lr, weight_decay=weight_decay, name="adamw")
    cls = _SummedCoupledAdam if summed_gradients else CoupledAdam
    return cls(learning_rate=lr, l2=weight_decay, name="adam")


def optimizer_for_loss(loss: str, lr: float, weight_decay: float = 0.0,
                       decoupled: bool = False,
                       loss_lr_multiplier: float | None = None) -> keras.optimizers.Optimizer:
    """The optimizer the trainer gives `--loss=loss`, for `model.compile`.

    Args:
      loss: a `--loss` name (its learning-rate factor, `loss_learning_rate`).
      lr: the base rate (`--lr`).
      weight_decay: coupled L2 weight decay (`--weight_decay`).
      decoupled: AdamW's decoupled decay (`--decoupled_weight_decay`).
      loss_lr_multiplier: the loss's factor; None: its default.
    """
    return make_optimizer(loss_learning_rate(lr, loss, loss_lr_multiplier), weight_decay,
                          decoupled)
