"""Reliability: atomic files, disk-full errors, signals, resume checks, non-finite steps.

The pieces a training run needs so that nothing is lost when it is killed, a
disk fills up, the loss blows up or the flags of a resumed run differ:

* `write_json_atomic` / `disk_full_guard`: a file is written under a temporary
  name in its folder, flushed, fsynced and renamed into place, so a reader (or
  a resumed run) sees the old or the new file, never half of one. A full disk
  (`ENOSPC`, or TensorFlow's "No space left on device") becomes a
  `DiskFullError` naming the path. TensorFlow's `CheckpointManager` is atomic
  in the same sense: the data shards are written to a temporary folder and
  renamed, the `.index` file is written last, and the `checkpoint` state
  file that names the latest checkpoint is replaced atomically only after
  that, so `latest_checkpoint` always names a complete checkpoint.
* `GracefulSignals`: SIGTERM / SIGINT set a flag that the training loop checks
  after every step (it then writes a checkpoint and raises `Interrupted`); a
  second SIGINT interrupts at once.
* `check_resume_config`: compares the flags a run was started with (saved in
  `model_dir/config.json`) with the flags of the resuming command.
* `all_finite` / `apply_if`: the in-graph skip of a step whose loss or
  gradients are not finite, with the same decision on every replica.
* `check_splits`: data-set shapes that make training or evaluation meaningless.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import threading
from collections.abc import Callable, Iterable

import numpy as np
from absl import logging

# -- files ---------------------------------------------------------------------


class DiskFullError(OSError):
    """No space left on the device while writing a file (names the path)."""


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(getattr(error, "message", "") or error)
    return "No space left on device" in text or "ENOSPC" in text


@contextlib.contextmanager
def disk_full_guard(path: str):
    """Turns a disk-full error raised inside the block into `DiskFullError(path)`.

    Catches `OSError(ENOSPC)` and TensorFlow errors whose message says
    "No space left on device" (checkpoint and summary writes).
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a full disk
        if not _is_disk_full(e):
            raise
        raise DiskFullError(
            errno.ENOSPC,
            f"No space left on the device while writing {path}; free space (or point "
            "--model_dir elsewhere) and rerun the same command: it resumes from the last "
            "complete checkpoint",
            path,
        ) from e


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same folder and a rename.

    Raises:
      DiskFullError: the disk is full (the old file, if any, is left intact).
    """
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    with disk_full_guard(path):
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


def write_json_atomic(path: str, obj) -> None:
    """Writes `obj` as indented, key-sorted JSON to `path` atomically (see above)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# -- signals -------------------------------------------------------------------


class Interrupted(Exception):
    """Training stopped on SIGTERM / SIGINT after writing a checkpoint."""

    def __init__(self, signum: int, checkpoint: str | None):
        self.signum = signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "no new checkpoint"
        super().__init__(
            f"stopped by {name} ({where}); rerun the same command to resume."
        )

    @property
    def exit_code(self) -> int:
        """The shell convention 128 + signal number (130 SIGINT, 143 SIGTERM)."""
        return 128 + int(self.signum)


class GracefulSignals:
    """Context manager: SIGTERM / SIGINT set `received` instead of killing.

    The loop polls `received` between steps. A second SIGINT restores the old
    handler's behaviour (KeyboardInterrupt) so a user can still force quit.
    Outside the main thread (where handlers cannot be set) it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        logging.warning("Received %s: finishing the current step, then writing a "
                        "checkpoint.", signal.Signals(signum).name)

    def __enter__(self) -> GracefulSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# -- resuming with other flags ---------------------------------------------------

# A checkpoint cannot be used (other variables or shapes) or would train another
# model: always refused.
MODEL_FLAGS = ("dataset", "data_source", "backbone", "embedding_dim", "normalize",
               "image_size", "mixed_precision")
# Loadable, but the resumed run would no longer replay the original one (loss,
# batches, optimiser, augmentation): refused unless --allow_flag_changes.
RUN_FLAGS = ("loss", "margin", "sampler", "batch_size", "num_targets", "seed", "lr",
             "head_lr_multiplier", "weight_decay", "decoupled_weight_decay", "resize_size",
             "random_flip", "pretrained", "lr_factor", "neighborhoods", "kmeans",
             "members_per_class", "local_share", "min_classes", "warmup_epochs",
             "sst_scale", "sst_imposters")
# Everything else (epochs, eval_every, patience, progress, ...) may change: logged.
IGNORED_KEYS = ("model_dir", "allow_flag_changes")
DATA_KEYS = ("num_train_images", "num_test_images")


class IncompatibleRunError(ValueError):
    """Resuming a run with flags that do not fit its checkpoints."""


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def config_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every key whose value differs."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key in IGNORED_KEYS:
            continue
        old, new = _norm(saved.get(key)), _norm(current.get(key))
        if old != new:
            diffs.append((key, old, new))
    return diffs


def check_resume_config(saved: dict, current: dict, allow_changes: bool = False) -> list[str]:
    """Decides whether a run saved with `saved` flags may resume with `current` ones.

    Args:
      saved: the contents of `model_dir/config.json` (flags + data sizes).
      current: the same for the resuming command.
      allow_changes: accept changes of `RUN_FLAGS` (with a warning).

    Returns:
      The changed keys that were accepted (logged).

    Raises:
      IncompatibleRunError: listing every refused difference.
    """
    diffs = config_differences(saved, current)
    # A key the saved run does not have (a flag added by a later version) is
    # logged, never refused.
    refused = [d for d in diffs if d[0] in saved and (
        d[0] in MODEL_FLAGS + DATA_KEYS or (d[0] in RUN_FLAGS and not allow_changes))]
    if refused:
        lines = "; ".join(f"--{k}: {o!r} in the saved run, {n!r} now" for k, o, n in refused)
        hint = ("use another --model_dir for a new run"
                if any(k in MODEL_FLAGS + DATA_KEYS for k, _, _ in refused)
                else "use another --model_dir, or pass --allow_flag_changes to continue "
                     "this run with the new values")
        raise IncompatibleRunError(
            f"cannot resume the run in {current.get('model_dir')}: its flags differ: "
            f"{lines}. {hint.capitalize()}."
        )
    for key, old, new in diffs:
        level = logging.warning if key in RUN_FLAGS else logging.info
        level("Resuming with --%s=%r (the run started with %r).", key, new, old)
    return [k for k, _, _ in diffs]


# -- input errors ----------------------------------------------------------------


class InputError(RuntimeError):
    """Reading or decoding an image failed while the run was going (names the file)."""


def read_batches(dataset, what: str):
    """Iterates `dataset`, turning a tf.data read/decode error into `InputError`.

    Only errors raised while producing a batch (file gone, unreadable or
    corrupt since the up-front image check) are converted; errors of the
    computation on a batch are not affected.
    """
    import tensorflow as tf

    iterator = iter(dataset)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except tf.errors.OpError as e:
            message = (e.message or str(e)).strip().splitlines()[0]
            raise InputError(f"{what}: reading an image failed: {message}") from e
        yield batch


# -- non-finite steps ------------------------------------------------------------


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def all_finite(loss, grads: Iterable | None = None):
    """Scalar bool tensor: the loss and every gradient are finite.

    With Keras' `LossScaleOptimizer` (float16) pass `grads=None`: it skips
    overflowing steps itself and must see them to lower its loss scale.

    Under a distribution strategy (in replica context) the flag is reduced over
    all replicas (a sum of non-finite flags), so every replica takes the same decision.
    """
    import tensorflow as tf

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
    Keras' LossScaleOptimizer does, the condition is taken in cross-replica
    context and the updates run per replica inside it. `finite` must already be
    identical on all replicas (see `all_finite`).
    """
    import tensorflow as tf

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


# -- data sets -----------------------------------------------------------------


def check_splits(train_labels: np.ndarray, test_labels: np.ndarray, name: str = "") -> None:
    """Refuses splits that cannot train or evaluate; logs classes of one image.

    * a train split with fewer than 2 classes: no triplet / imposter exists;
    * a test split with fewer than 2 classes: every neighbour is a hit, so
      Recall@K, MAP@R and NMI say nothing;
    * classes with a single image: allowed and counted (in train such an image
      has no target neighbour but is an imposter for others; in test it is a
      query that cannot hit and is left out of MAP@R / R-Precision).

    Raises:
      ValueError: naming the split.
    """
    prefix = f"{name} " if name else ""
    for split, labels in (("train", train_labels), ("test", test_labels)):
        classes, counts = np.unique(np.asarray(labels), return_counts=True)
        if len(classes) < 2:
            need = ("training needs at least 2 classes (triplets need an imposter)"
                    if split == "train" else
                    "retrieval metrics need at least 2 classes (with one class every "
                    "neighbour is a hit)")
            raise ValueError(
                f"{prefix}{split} split has {len(labels)} image(s) in {len(classes)} "
                f"class(es): {need}."
            )
        single = int((counts == 1).sum())
        if single:
            logging.warning("%s%s split: %d class(es) with a single image (no same-class "
                            "partner; kept).", prefix, split, single)
