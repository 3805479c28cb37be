"""A run's state: its folder layout, resuming with other flags, and signals.

* `RunFolder`: the layout of a training run's folder (`--model_dir`), in one
  place. Everything a run writes lives under it; the trainer, the
  checkpoints, the export, the report and the figures find the pieces there:

    config.json     the run's flags and split sizes (resume checks read it)
    metrics.json    "before" / "after" / per-epoch metrics and the run's settings
    checkpoints/    tf.train checkpoints (interrupted/: the one a signal wrote)
    train/, eval/   TensorBoard events
    export/         the SavedModel written at the end of training
    projector/      the TensorBoard projector files (a folder of their own)
    figures/        thresholds.png (end of training); retrieval grid and t-SNE plot
                    (`sst_tf.visualize`)

* `GracefulSignals`: SIGTERM / SIGINT set a flag that the training loop checks
  after every step (it then writes a checkpoint and raises `Interrupted`); a
  second SIGINT interrupts at once.
* `run_record`: what `config.json` holds (the flags and the sizes of the data
  splits); `check_resume_config` compares the record a run was started with to
  the one of the resuming command.

No TensorFlow here (`sst_tf.train` imports this module before TensorFlow
loads): the checkpoints themselves, and finding and writing them, are
`sst_tf.checkpoints`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import threading

import numpy as np
from absl import logging


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder."""

    root: str

    def _join(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def config(self) -> str:
        """config.json."""
        return self._join("config.json")

    @property
    def metrics(self) -> str:
        """metrics.json."""
        return self._join("metrics.json")

    @property
    def checkpoints(self) -> str:
        """checkpoints/."""
        return self._join("checkpoints")

    @property
    def train_events(self) -> str:
        """train/: TensorBoard events of training."""
        return self._join("train")

    @property
    def eval_events(self) -> str:
        """eval/: TensorBoard events of evaluation."""
        return self._join("eval")

    @property
    def export(self) -> str:
        """export/: the SavedModel."""
        return self._join("export")

    @property
    def projector(self) -> str:
        """projector/: the projector files."""
        return self._join("projector")

    @property
    def figures(self) -> str:
        """figures/: the figures of `sst_tf.visualize`."""
        return self._join("figures")


def interrupted_dir(checkpoint_dir: str) -> str:
    """Where a checkpoint written on a signal goes, inside a checkpoint folder."""
    return os.path.join(checkpoint_dir, "interrupted")


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
               "embedding_batchnorm", "image_size", "mixed_precision", "memory_size")
# Model flags added by a later version, with the value a run saved before them had.
ADDED_MODEL_FLAGS = {"embedding_batchnorm": False}
# Loadable, but the resumed run would no longer replay the original one (loss,
# batches, optimiser, augmentation): refused unless --allow_flag_changes.
RUN_FLAGS = ("loss", "margin", "sampler", "batch_size", "num_targets", "seed", "lr",
             "head_lr_multiplier", "weight_decay", "decoupled_weight_decay", "resize_size",
             "random_flip", "pretrained", "backbone_weights", "lr_factor", "neighborhoods",
             "kmeans",
             "members_per_class", "samples_per_class", "local_share", "min_classes",
             "warmup_epochs",
             "loss_lr_multiplier", "sst_scale", "sst_imposters", "npairs_scale",
             "proxy_lr_multiplier", "ms_alpha", "ms_beta", "ms_base", "proxy_alpha",
             "proxy_delta",
             "global_negatives",
             "memory_warmup_steps", "memory_weight", "circle_m", "circle_gamma", "temperature",
             "margin_scale", "sub_centers", "views")
# Everything else (epochs, eval_every, patience, progress, ...) may change: logged.
IGNORED_KEYS = ("model_dir", "allow_flag_changes")
DATA_KEYS = ("num_train_images", "num_test_images", "data_fingerprint")


class IncompatibleRunError(ValueError):
    """Resuming a run with flags that do not fit its checkpoints."""


def run_record(config, dataset) -> dict:
    """What config.json holds: the flags plus the sizes of the data splits.

    Args:
      config: the run's resolved `TrainConfig`.
      dataset: its `Dataset` (train and test splits).
    """
    record = dataclasses.asdict(config)
    record["num_train_images"] = len(dataset.train)
    record["num_test_images"] = len(dataset.test)
    record["data_fingerprint"] = data_fingerprint(dataset)
    return record


def data_fingerprint(dataset) -> str:
    """A short hash of what the splits hold: class names, labels, file names.

    File names without their folders, so a data set moved to another
    `--data_dir` keeps its fingerprint; other classes or images change it.
    """
    digest = hashlib.sha256()
    for split in (dataset.train, dataset.test):
        digest.update("\0".join(split.class_names).encode())
        digest.update(np.asarray(split.labels, np.int64).tobytes())
        if split.paths is not None:
            digest.update("\0".join(os.path.basename(p) for p in split.paths).encode())
    return digest.hexdigest()[:16]


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def config_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every key whose value differs."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key in IGNORED_KEYS:
            continue
        old, new = _norm(saved.get(key, ADDED_MODEL_FLAGS.get(key))), _norm(current.get(key))
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
    refused = [d for d in diffs if (d[0] in saved or d[0] in ADDED_MODEL_FLAGS) and (
        d[0] in MODEL_FLAGS + DATA_KEYS or (d[0] in RUN_FLAGS and not allow_changes))]
    if refused:
        lines = "; ".join(f"--{k}: {o!r} in the saved run, {n!r} now" for k, o, n in refused)
        if any(k == "data_fingerprint" for k, _, _ in refused):
            lines += (" (the data set holds other classes or images than the saved run's: "
                      "--data_dir points at other data)")
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
